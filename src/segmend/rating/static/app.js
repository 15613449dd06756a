// segmend rating page: weak scores of the MAD loop's candidates, one key press at a time.
// Talks only to the server that served it (see segmend/rating/app.py for the API).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STORAGE_KEY = "segmend-rater";
  const state = {
    round: null, // GET /api/round
    pattern: null, // rater names
    rater: null,
    scores: {}, // id -> 1..5 | "ood"
    index: 0,
    history: [], // [{id, before}] of this visit, for undo
    queue: Promise.resolve(), // actions run one after the other, in key-press order
  };

  const encodeId = (id) => id.split("/").map(encodeURIComponent).join("/");
  const scorePath = (id) => `/api/raters/${encodeURIComponent(state.rater)}/scores/${encodeId(id)}`;
  const ids = () => state.round.images;
  const describe = (score) =>
    score === undefined ? "not scored" : score === "ood" ? "out of domain" : `scored ${score}`;

  async function api(method, path, body) {
    const options = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
      throw new Error(detail || `${response.status} ${response.statusText}`);
    }
    return data;
  }

  function say(text, isError = false) {
    const message = $("message");
    message.textContent = text;
    message.classList.toggle("error", isError);
  }

  function enqueue(action) {
    state.queue = state.queue.then(action).catch((error) => say(error.message, true));
    return state.queue;
  }

  function rememberRater(name) {
    try {
      localStorage.setItem(STORAGE_KEY, name);
    } catch (error) {
      // private mode: the name is simply asked again
    }
  }

  function lastRater() {
    try {
      return localStorage.getItem(STORAGE_KEY) || "";
    } catch (error) {
      return "";
    }
  }

  // The next image without a score after `from` (wrapping around), or -1 when every image is scored.
  function nextUnscored(from) {
    const all = ids();
    for (let step = 1; step <= all.length; step += 1) {
      const k = (from + step) % all.length;
      if (state.scores[all[k]] === undefined) return k;
    }
    return -1;
  }

  async function login(name) {
    const error = $("login-error");
    if (!state.pattern.test(name)) {
      error.textContent =
        "Use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.";
      return;
    }
    let progress;
    try {
      progress = await api("GET", `/api/raters/${encodeURIComponent(name)}`);
    } catch (failure) {
      error.textContent = failure.message;
      return;
    }
    error.textContent = "";
    state.rater = name;
    state.scores = progress.scores;
    state.history = [];
    rememberRater(name);
    $("login").hidden = true;
    $("rating").hidden = false;
    $("rater-label").hidden = false;
    $("switch-rater").hidden = false;
    $("rater-label").textContent = `rater: ${name}`;
    const first = state.scores[ids()[0]] === undefined ? 0 : nextUnscored(0);
    state.index = first >= 0 ? first : 0;
    if (progress.done === 0) {
      say(`Welcome, ${name}. Your scores are saved in scores/${name}.json.`);
    } else {
      say(`Welcome back, ${name}: ${progress.done} images already scored; continuing with the first one not scored.`);
    }
    render();
  }

  function logout() {
    state.rater = null;
    $("rating").hidden = true;
    $("rater-label").hidden = true;
    $("switch-rater").hidden = true;
    $("login").hidden = false;
    $("rater-name").focus();
  }

  function renderLegend(id) {
    api("GET", `/api/legends/${encodeId(id)}`)
      .then((data) => {
        if (ids()[state.index] !== id) return; // the rater moved on
        const list = $("legend");
        list.replaceChildren();
        for (const entry of data.classes) {
          const item = document.createElement("li");
          const swatch = document.createElement("span");
          swatch.className = "swatch";
          swatch.style.backgroundColor = entry.color;
          item.append(swatch, document.createTextNode(entry.name));
          list.append(item);
        }
      })
      .catch((error) => say(error.message, true));
  }

  function render() {
    const all = ids();
    const id = all[state.index];
    const score = state.scores[id];
    const done = Object.keys(state.scores).length;
    const remaining = all.length - done;
    $("position-text").textContent = `Image ${state.index + 1} of ${all.length}:`;
    $("image-id").textContent = id;
    const badge = $("current-score");
    badge.textContent = describe(score);
    badge.classList.toggle("scored", score !== undefined);
    const image = $("image");
    const overlay = $("overlay");
    const imageSrc = `/api/images/${encodeId(id)}`;
    if (image.getAttribute("src") !== imageSrc) {
      image.classList.remove("missing");
      image.src = imageSrc;
      overlay.src = `/api/overlays/${encodeId(id)}`;
      renderLegend(id);
    }
    for (const button of document.querySelectorAll("#controls [data-score]")) {
      button.classList.toggle("chosen", String(score) === button.dataset.score);
    }
    $("prev").disabled = state.index === 0;
    $("next").disabled = state.index === all.length - 1;
    $("progress-text").textContent = `${done} of ${all.length} scored · ${remaining} remain`;
    $("bar-fill").style.width = `${all.length ? (100 * done) / all.length : 0}%`;
    document.body.classList.toggle("all-done", remaining === 0);
    if (remaining === 0) {
      say(`All ${all.length} images are scored. Thank you! Scores can still be changed with the arrows.`);
    }
    const following = all[state.index + 1];
    if (following !== undefined) {
      new Image().src = `/api/images/${encodeId(following)}`;
      new Image().src = `/api/overlays/${encodeId(following)}`;
    }
  }

  async function giveScore(value) {
    const id = ids()[state.index];
    const before = state.scores[id];
    const progress = await api("PUT", scorePath(id), { score: value });
    state.scores = progress.scores;
    state.history.push({ id, before });
    const next = nextUnscored(state.index);
    state.index = next >= 0 ? next : Math.min(state.index + 1, ids().length - 1);
    say(`Saved: ${id} ${describe(value)}.`);
    render();
  }

  async function undo() {
    const last = state.history.pop();
    if (last === undefined) {
      say("Nothing to undo.");
      return;
    }
    try {
      const progress =
        last.before === undefined
          ? await api("DELETE", scorePath(last.id))
          : await api("PUT", scorePath(last.id), { score: last.before });
      state.scores = progress.scores;
    } catch (error) {
      state.history.push(last);
      throw error;
    }
    state.index = ids().indexOf(last.id);
    say(`Undone: ${last.id} is ${describe(last.before)} again.`);
    render();
  }

  function move(delta) {
    const target = state.index + delta;
    if (target < 0 || target >= ids().length) return;
    state.index = target;
    render();
  }

  function onKey(event) {
    if (state.rater === null || event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = event.target && event.target.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA") return;
    const key = event.key;
    let action = null;
    if (key.length === 1 && "12345".includes(key)) {
      action = () => giveScore(Number(key));
    } else if (key === "x" || key === "X") {
      action = () => giveScore(state.round.scores.out_of_domain);
    } else if (key === "u" || key === "U") {
      action = undo;
    } else if (key === "ArrowLeft") {
      action = () => move(-1);
    } else if (key === "ArrowRight") {
      action = () => move(1);
    }
    if (action === null) return;
    event.preventDefault();
    if (event.repeat && !key.startsWith("Arrow")) return; // a held key scores one image, not a run of them
    enqueue(action);
  }

  async function init() {
    try {
      state.round = await api("GET", "/api/round");
    } catch (error) {
      $("login-error").textContent = `The rating server did not answer: ${error.message}`;
      return;
    }
    state.pattern = new RegExp(`^(?:${state.round.rater_pattern})$`);
    $("round-label").textContent = `round ${state.round.round} · ${state.round.total} images`;
    $("rater-name").value = lastRater();
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      login($("rater-name").value.trim());
    });
    $("switch-rater").addEventListener("click", logout);
    for (const button of document.querySelectorAll("#controls [data-score]")) {
      const value = button.dataset.score === "ood" ? state.round.scores.out_of_domain : Number(button.dataset.score);
      button.addEventListener("click", () => {
        button.blur();
        enqueue(() => giveScore(value));
      });
    }
    $("prev").addEventListener("click", () => enqueue(() => move(-1)));
    $("next").addEventListener("click", () => enqueue(() => move(1)));
    $("undo").addEventListener("click", () => enqueue(undo));
    $("image").addEventListener("error", () => $("image").classList.add("missing"));
    document.addEventListener("keydown", onKey);
    document.body.dataset.ready = "true";
  }

  init();
})();
