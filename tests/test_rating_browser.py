"""The rating page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via selenium.

A rater enters their name, scores with the keyboard (3, 5, 1, then X for out of domain), undoes,
moves with the arrows, a second rater works at the same time, and the first one comes back later
and resumes where they stopped. The score files must hold exactly what was typed. With the
environment variable ``SEGMEND_SCREENSHOTS`` set to a folder, screenshots of the page go there
(``docs/images/rating_*.png`` were made so).

``make test`` installs Chromium and its driver when ``chromedriver`` is missing; without them this
test fails (it never skips), saying what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from segmend.mad.layout import MADLayout
from segmend.mad.oracle import FileOracle
from segmend.rating import create_app
from tests.fixtures.rating import HEIGHT, SIDEWAYS, WIDTH, RatingRun, make_rating_run

INSTALL_HINT = (
    "The rating page's browser test needs Debian's Chromium and its driver: run `make test` (it installs them "
    "when chromedriver is missing), or `apt-get update && apt-get install -y chromium chromium-driver`."
)
WAIT = 30  # seconds: the machine is shared with benchmarks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(run: Path) -> Iterator[str]:
    """The rating app of ``run`` under uvicorn in a thread; its base URL."""
    port = free_port()
    app = create_app(run, allowed_hosts=["127.0.0.1", "localhost"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver_path = shutil.which("chromedriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if driver_path is None or chromium is None:
        pytest.fail(f"chromedriver or chromium not found on PATH. {INSTALL_HINT}")
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,960", "--force-device-scale-factor=1", "--lang=en-US"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except Exception as error:  # noqa: BLE001 - any failure to start the browser is this test's failure
        pytest.fail(f"Chromium did not start through {driver_path}: {error}. {INSTALL_HINT}")
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: webdriver.Chrome, condition: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT).until(lambda d: condition(d), message=f"waited {WAIT} s for {what}")


def text(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def press(driver: webdriver.Chrome, *keys: str) -> None:
    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def at(driver: webdriver.Chrome, image_id: str, progress: str) -> None:
    """Wait until the page shows ``image_id`` with its picture and overlay loaded, and the progress text."""

    def shown(d: webdriver.Chrome) -> bool:
        return text(d, "image-id") == image_id and text(d, "progress-text") == progress and bool(loaded(d))

    wait_until(driver, shown, f"{image_id!r} and progress {progress!r} (shown: {text(driver, 'image-id')!r}, "
                              f"{text(driver, 'progress-text')!r})")  # fmt: skip


def loaded(driver: webdriver.Chrome) -> list[list[int]] | None:
    """Natural (width, height) of the image and the overlay once both are loaded, and the legend filled."""
    return driver.execute_script(
        "const sizes = ['image', 'overlay'].map((id) => document.getElementById(id))"
        "  .map((img) => img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null);"
        "const legend = document.querySelectorAll('#legend li').length;"
        "return sizes.every((s) => s !== null) && legend > 0 ? sizes : null;"
    )


def login(driver: webdriver.Chrome, name: str) -> None:
    wait_until(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", "the page")
    field = driver.find_element(By.ID, "rater-name")
    field.clear()
    field.send_keys(name, Keys.ENTER)
    wait_until(driver, lambda d: d.find_element(By.ID, "rating").is_displayed(), "the rating view")


def scores_of(rating: RatingRun, rater: str) -> dict[str, Any]:
    path = MADLayout(rating.run).scores_file(0, rater)
    return json.loads(path.read_text())["scores"] if path.is_file() else {}


def wait_for_file(driver: webdriver.Chrome, rating: RatingRun, rater: str, expected: dict[str, Any]) -> None:
    wait_until(driver, lambda d: scores_of(rating, rater) == expected, f"{rater}'s file to hold {expected}")


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    folder = os.environ.get("SEGMEND_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_raters_score_with_the_keyboard_undo_and_resume(browser: webdriver.Chrome, tmp_path: Path) -> None:
    rating = make_rating_run(tmp_path)
    ids = rating.ids
    with serve(rating.run) as base:
        browser.get(base + "/")
        browser.find_element(By.ID, "rater-name").send_keys("alice")
        screenshot(browser, "rating_login.png")
        login(browser, "alice")
        at(browser, ids[0], "0 of 6 scored · 6 remain")
        assert not scores_of(rating, "alice")

        press(browser, "3")
        at(browser, ids[1], "1 of 6 scored · 5 remain")
        assert loaded(browser) == [[WIDTH, HEIGHT], [WIDTH, HEIGHT]]  # the sideways phone photo shown upright
        assert SIDEWAYS == ids[1]
        press(browser, "5")
        at(browser, ids[2], "2 of 6 scored · 4 remain")  # an id with a space, '#' and '%' in its URL
        press(browser, "1")
        at(browser, ids[3], "3 of 6 scored · 3 remain")
        screenshot(browser, "rating_page.png")
        press(browser, "x")
        at(browser, ids[4], "4 of 6 scored · 2 remain")
        typed = {ids[0]: 3, ids[1]: 5, ids[2]: 1, ids[3]: "ood"}
        wait_for_file(browser, rating, "alice", typed)

        # U undoes the last score (the X) and goes back to that image; X again restores it
        press(browser, "u")
        at(browser, ids[3], "3 of 6 scored · 3 remain")
        assert text(browser, "current-score") == "not scored"
        wait_for_file(browser, rating, "alice", {ids[0]: 3, ids[1]: 5, ids[2]: 1})
        press(browser, "x")
        at(browser, ids[4], "4 of 6 scored · 2 remain")
        wait_for_file(browser, rating, "alice", typed)

        # arrows move between images; undoing a changed score restores the one before
        press(browser, Keys.ARROW_LEFT, Keys.ARROW_LEFT, Keys.ARROW_LEFT)
        at(browser, ids[1], "4 of 6 scored · 2 remain")
        assert text(browser, "current-score") == "scored 5"
        press(browser, "2")
        at(browser, ids[4], "4 of 6 scored · 2 remain")  # on to the next image without a score
        wait_for_file(browser, rating, "alice", {**typed, ids[1]: 2})
        press(browser, "u")
        at(browser, ids[1], "4 of 6 scored · 2 remain")
        wait_for_file(browser, rating, "alice", typed)
        press(browser, Keys.ARROW_RIGHT)
        at(browser, ids[2], "4 of 6 scored · 2 remain")
        assert text(browser, "current-score") == "scored 1"

        # a second rater at the same time, in another window: a file of their own
        alice_window = browser.current_window_handle
        browser.switch_to.new_window("window")
        browser.get(base + "/")
        login(browser, "bob")
        at(browser, ids[0], "0 of 6 scored · 6 remain")
        press(browser, "4", "x")
        at(browser, ids[2], "2 of 6 scored · 4 remain")
        wait_for_file(browser, rating, "bob", {ids[0]: 4, ids[1]: "ood"})
        assert scores_of(rating, "alice") == typed
        browser.close()
        browser.switch_to.window(alice_window)
        assert_only_local_requests(browser, base)

    # alice comes back later (the server was stopped and started again): she resumes where she stopped
    with serve(rating.run) as base:
        browser.get(base + "/")
        login(browser, "alice")
        at(browser, ids[4], "4 of 6 scored · 2 remain")
        assert "Welcome back, alice: 4 images already scored" in text(browser, "message")
        press(browser, "4", "2")
        at(browser, ids[5], "6 of 6 scored · 0 remain")
        assert "All 6 images are scored" in text(browser, "message")
        screenshot(browser, "rating_done.png")
        wait_for_file(browser, rating, "alice", {**typed, ids[4]: 4, ids[5]: 2})
        assert_only_local_requests(browser, base)
    # the loop takes alice's complete file; bob, still at work, is left out
    scores = FileOracle(rating.run).request_scores(0, rating.predictions)
    assert scores is not None and scores[ids[3]] == {"alice": float("inf")} and scores[ids[0]] == {"alice": 3}


def assert_only_local_requests(driver: webdriver.Chrome, base: str) -> None:
    """Every resource the page loaded came from the rating server, and the console holds no error."""
    resources = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert resources and all(url.startswith(base + "/") for url in resources), resources
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
