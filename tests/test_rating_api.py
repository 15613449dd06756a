"""The rating page's API (FastAPI TestClient): scores validated and stored per rater, nothing outside the run read."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from segmend.datamodules.voc_format import voc_palette
from segmend.mad import OUT_OF_DOMAIN
from segmend.mad.human_files import read_rater_scores, write_rater_scores
from segmend.mad.layout import MADLayout
from segmend.mad.oracle import FileOracle
from segmend.mad.state import MADState
from segmend.rating import create_app
from segmend.rating.app import host_name
from segmend.viz import blend, colorize
from tests.fixtures.rating import HEIGHT, SIDEWAYS, WIDTH, RatingRun, make_rating_run

ID_ROUTES = ("/api/images/{}", "/api/overlays/{}", "/api/legends/{}", "/api/raters/alice/scores/{}")
TRAVERSALS = (
    "%2e%2e/state.json",  # '..' encoded: the server decodes it, check_id refuses it
    "%2E%2E/%2E%2E/mad/state.json",
    "street/%2e%2e/%2e%2e/state.json",
    "/etc/passwd",  # absolute (the route's path then starts with '//')
    "%2Fetc%2Fpasswd",
    "..%5Cstate.json",  # backslashes
    "street%5C..%5C..%5Cstate.json",
    "street/%2E/0001.jpg",  # a "." part
    "street//0001.jpg",
    "street/0001.jpg%00",
    "",
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> RatingRun:
    return make_rating_run(tmp_path_factory.mktemp("rating"))


@pytest.fixture
def rating(template: RatingRun, tmp_path: Path) -> RatingRun:
    """A fresh copy of the module's run folder and pool (tests write scores and delete files)."""
    shutil.copytree(template.run, tmp_path / "run")
    shutil.copytree(template.pool, tmp_path / "pool")
    return dataclasses.replace(template, run=tmp_path / "run", pool=tmp_path / "pool")


@pytest.fixture
def client(rating: RatingRun) -> TestClient:
    return TestClient(create_app(rating.run))


def url_id(image_id: str) -> str:
    """An id in a URL, as the page encodes it: each part percent-encoded, the slashes kept."""
    return "/".join(quote(part, safe="") for part in image_id.split("/"))


def put(client: TestClient, rater: str, image_id: str, score: object):
    return client.put(f"/api/raters/{rater}/scores/{url_id(image_id)}", json={"score": score})


def file_scores(rating: RatingRun, rater: str) -> dict:
    path = MADLayout(rating.run).scores_file(0, rater)
    return json.loads(path.read_text())["scores"] if path.is_file() else {}


def test_the_page_and_its_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assets = {name: client.get(f"/static/{name}") for name in ("app.js", "style.css")}
    assert all(response.status_code == 200 for response in assets.values())
    for text in (page.text, *(response.text for response in assets.values())):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text  # nothing fetched elsewhere
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load Swagger UI from a CDN
    assert client.get("/static/../../session.py").status_code == 404


def test_the_round_lists_the_candidates_in_order(client: TestClient, rating: RatingRun) -> None:
    info = client.get("/api/round").json()
    assert info["round"] == 0 and info["images"] == list(rating.ids) and info["total"] == len(rating.ids)
    assert info["classes"][:3] == ["background", "disc", "square"]
    assert info["scores"] == {"min": 1, "max": 5, "out_of_domain": "ood"}


def test_scores_go_to_the_raters_own_file_as_given(client: TestClient, rating: RatingRun) -> None:
    first, second, third = rating.ids[:3]
    assert client.get("/api/raters/alice").json() == {
        "rater": "alice", "round": 0, "scores": {}, "done": 0, "total": 6, "remaining": 6,
    }  # fmt: skip
    assert put(client, "alice", first, 3).json()["done"] == 1
    assert url_id(third) == "park/odd%20name%20%233%20100%25.png"
    assert put(client, "alice", third, "ood").status_code == 200
    progress = put(client, "alice", first, 4).json()  # a new score replaces the old one
    assert progress["scores"] == {first: 4, third: "ood"} and progress["remaining"] == 4
    path = MADLayout(rating.run).scores_file(0, "alice")
    assert read_rater_scores(path, 0, rating.ids).scores == {first: 4, third: OUT_OF_DOMAIN}  # the loop's reader
    assert client.delete(f"/api/raters/alice/scores/{first}").json()["scores"] == {third: "ood"}
    assert client.delete(f"/api/raters/alice/scores/{second}").status_code == 200  # nothing to remove: no error
    assert file_scores(rating, "alice") == {third: "ood"}
    assert FileOracle(rating.run).rater_progress(0, rating.ids) == {"alice": {third: OUT_OF_DOMAIN}}
    assert not list(path.parent.glob(".*"))  # no temporary file left


@pytest.mark.parametrize("score", [0, 6, -1, 2.5, 3.0, "abc", "3", "OOD", True, False, None, [3], {"v": 3}])
def test_invalid_scores_are_refused(client: TestClient, rating: RatingRun, score: object) -> None:
    response = put(client, "alice", rating.ids[0], score)
    assert response.status_code == 422
    assert "expected an integer from 1 to 5, or 'ood'" in response.json()["detail"]
    assert not MADLayout(rating.run).scores_file(0, "alice").exists()


def test_malformed_requests_get_clear_errors(client: TestClient, rating: RatingRun) -> None:
    url = f"/api/raters/alice/scores/{rating.ids[0]}"
    form = client.put(url, content=b"score=3", headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    broken = client.put(url, content=b'{"score": 3', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not JSON" in broken.json()["detail"]
    assert client.put(url, json={"value": 3}).status_code == 422
    assert client.put(url, json=[3]).status_code == 422
    assert client.post(url, json={"score": 3}).status_code == 405
    assert not MADLayout(rating.run).scores_file(0, "alice").exists()


@pytest.mark.parametrize("route", ID_ROUTES)
def test_unknown_ids_are_refused(client: TestClient, route: str) -> None:
    for image_id in ("nope.jpg", "street/0001.JPG", "street/0001.jpg/x", "street"):
        response = client.request("PUT" if "raters" in route else "GET", route.format(image_id), json={"score": 3})
        assert response.status_code == 404, image_id
        assert "not a candidate image of round 0" in response.json()["detail"]


@pytest.mark.parametrize("route", ID_ROUTES)
@pytest.mark.parametrize("image_id", TRAVERSALS)
def test_path_traversal_is_refused_on_every_id_route(client: TestClient, rating: RatingRun, route: str,
                                                     image_id: str) -> None:  # fmt: skip
    methods = ("PUT", "DELETE") if "raters" in route else ("GET",)
    for method in methods:
        response = client.request(method, route.format(image_id), json={"score": 3})
        assert 400 <= response.status_code < 500, (method, image_id, response.status_code)
        assert response.headers["content-type"] == "application/json" and "detail" in response.json()
        assert "segmend-mad-state" not in response.text and "root:" not in response.text
    assert not MADLayout(rating.run).scores_dir(0).exists()


def test_dot_segments_never_reach_a_file(client: TestClient) -> None:
    # the client resolves plain '..' before sending (as browsers do): the request lands on no route
    for url in ("/api/images/../state.json", "/api/images/../../mad/state.json", "/static/../app.py"):
        response = client.get(url)
        assert response.status_code == 404 and "segmend-mad-state" not in response.text


RATERS = ("..", "%2e%2e", ".hidden", "-dash", "a%5Cb", "a%20b", "al%00ice", "%C3%A9lise", "x" * 65, "a%2Fb", "a*")


@pytest.mark.parametrize("rater", RATERS)
def test_invalid_rater_names_are_refused_on_every_rater_route(client: TestClient, rating: RatingRun,
                                                              rater: str) -> None:  # fmt: skip
    image_id = rating.ids[0]
    for method, url in (("GET", f"/api/raters/{rater}"), ("PUT", f"/api/raters/{rater}/scores/{image_id}"),
                        ("DELETE", f"/api/raters/{rater}/scores/{image_id}")):  # fmt: skip
        response = client.request(method, url, json={"score": 3})
        assert 400 <= response.status_code < 500, (method, rater, response.status_code)
        assert "detail" in response.json() and "segmend-mad-state" not in response.text
    assert not MADLayout(rating.run).scores_dir(0).exists()
    if rater not in ("..",):  # '..' is resolved by the client; the others reach the name check
        response = client.get(f"/api/raters/{rater}")
        assert response.status_code in (400, 404)
        if response.status_code == 400:
            assert "Rater name" in response.json()["detail"]


def test_two_raters_at_once_keep_their_own_files_and_lose_nothing(rating: RatingRun) -> None:
    app = create_app(rating.run)
    plan = {  # two raters, each from 3 threads (tabs) at the same time, every image scored several times
        "alice": [(image, 1 + (k + j) % 5) for j in range(3) for k, image in enumerate(rating.ids)],
        "bob": [(image, "ood" if k == 2 else 5 - k % 5) for j in range(3) for k, image in enumerate(rating.ids)],
    }
    errors: list[str] = []
    start = threading.Barrier(6)

    def work(rater: str, part: int) -> None:
        client = TestClient(app)
        start.wait()
        for image, score in plan[rater][part::3]:
            response = put(client, rater, image, score)
            if response.status_code != 200:
                errors.append(f"{rater} {image}: {response.status_code} {response.text}")

    threads = [threading.Thread(target=work, args=(rater, part)) for rater in plan for part in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    alice, bob = file_scores(rating, "alice"), file_scores(rating, "bob")
    assert set(alice) == set(bob) == set(rating.ids)  # no update lost to a concurrent write
    for rater, got in (("alice", alice), ("bob", bob)):
        assert all(got[image] in {score for i, score in plan[rater] if i == image} for image in rating.ids)
    assert bob[rating.ids[2]] == "ood" and all(isinstance(alice[i], int) for i in rating.ids)
    assert FileOracle(rating.run, min_raters=2).request_scores(0, rating.predictions) is not None


def test_concurrent_scores_of_one_rater_on_different_images_are_all_kept(rating: RatingRun) -> None:
    app = create_app(rating.run)
    start = threading.Barrier(len(rating.ids))

    def work(image: str) -> None:
        client = TestClient(app)
        start.wait()
        assert put(client, "carol", image, 2).status_code == 200

    threads = [threading.Thread(target=work, args=(image,)) for image in rating.ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert file_scores(rating, "carol") == dict.fromkeys(rating.ids, 2)


def test_the_image_is_served_upright_from_the_run_folder(client: TestClient, rating: RatingRun) -> None:
    response = client.get(f"/api/images/{SIDEWAYS}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (WIDTH, HEIGHT) and not image.getexif().get(0x0112)  # upright; nothing rotates it again
    assert Image.open(rating.pool / SIDEWAYS).size == (HEIGHT, WIDTH)  # the pool file is stored sideways
    pixels = np.asarray(image.convert("RGB")).astype(int)
    drawn = rating.images[SIDEWAYS].astype(int)
    error = np.abs(pixels - drawn).mean()  # the scene as drawn, up to two JPEG encodings
    assert error < 8 and error < np.abs(pixels - drawn[::-1, ::-1]).mean() / 3  # and not upside down
    # the page reads only the run folder: without the pool, everything is still served
    for path in sorted(rating.pool.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    for route in ID_ROUTES[:3]:
        assert all(client.get(route.format(url_id(image_id))).status_code == 200 for image_id in rating.ids)


def test_the_overlay_blends_the_prediction_in_the_voc_palette(client: TestClient, rating: RatingRun) -> None:
    image_id = SIDEWAYS
    response = client.get(f"/api/overlays/{image_id}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
    shown = np.asarray(Image.open(MADLayout(rating.run).image_file(0, image_id)).convert("RGB"))
    expected = blend(shown, colorize(rating.predictions[image_id], voc_palette()), 0.5).astype(int)
    assert overlay.shape == (HEIGHT, WIDTH, 3) and np.abs(overlay - expected).max() <= 1
    classes = client.get(f"/api/legends/{image_id}").json()["classes"]
    present = sorted(set(np.unique(rating.predictions[image_id]).tolist()))
    names = ["background", "disc", "square", "triangle", "ring", "cross"]
    palette = voc_palette()
    assert classes == [{"name": names[k], "color": "#{:02x}{:02x}{:02x}".format(*palette[k])} for k in present]


def test_a_missing_image_shows_the_prediction_alone_and_a_missing_prediction_is_a_404(
    client: TestClient, rating: RatingRun
) -> None:
    layout = MADLayout(rating.run)
    layout.image_file(0, rating.ids[0]).unlink()
    assert client.get(f"/api/images/{rating.ids[0]}").status_code == 404
    overlay = Image.open(io.BytesIO(client.get(f"/api/overlays/{rating.ids[0]}").content))
    assert overlay.size == (WIDTH, HEIGHT)
    layout.prediction_file(0, rating.ids[3]).unlink()
    missing = client.get(f"/api/overlays/{rating.ids[3]}")
    assert missing.status_code == 404 and "prediction" in missing.json()["detail"]


def test_scores_are_refused_once_the_loop_took_them(client: TestClient, rating: RatingRun) -> None:
    assert put(client, "alice", rating.ids[0], 3).status_code == 200
    MADState(rating.run).save_scores(0, {image: {"bob": 4} for image in rating.ids})  # the loop moves on
    response = put(client, "alice", rating.ids[1], 3)
    assert response.status_code == 409 and "phase 'scored'" in response.json()["detail"]
    assert client.delete(f"/api/raters/alice/scores/{rating.ids[0]}").status_code == 409
    assert file_scores(rating, "alice") == {rating.ids[0]: 3}


def test_a_broken_score_file_is_named_not_overwritten(client: TestClient, rating: RatingRun) -> None:
    path = MADLayout(rating.run).scores_file(0, "dave")
    write_rater_scores(path, 0, "dave", {rating.ids[0]: 2})
    path.write_text(path.read_text().replace('"round": 0', '"round": 3'))
    for response in (client.get("/api/raters/dave"), put(client, "dave", rating.ids[1], 3)):
        assert response.status_code == 409 and str(path) in response.json()["detail"]
    assert '"round": 3' in path.read_text()


def test_hosts_other_than_loopback_are_refused_when_asked(rating: RatingRun) -> None:
    app = create_app(rating.run, allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1:8765").get("/api/round").status_code == 200
    assert TestClient(app, base_url="http://localhost:8765").get("/api/round").status_code == 200
    assert TestClient(app).get("/api/round", headers={"host": "[::1]:8765"}).status_code == 400
    refused = TestClient(app, base_url="http://rebound.example:8765").get("/api/round")
    assert refused.status_code == 400 and "'rebound.example'" in refused.json()["detail"]
    ipv6 = create_app(rating.run, allowed_hosts=["::1"])
    assert TestClient(ipv6).get("/api/round", headers={"host": "[::1]:8765"}).status_code == 200


@pytest.mark.parametrize(
    ("header", "host"),
    [("127.0.0.1:8765", "127.0.0.1"), ("LocalHost", "localhost"), ("[::1]:8765", "::1"), ("[::1]", "::1"), ("", "")],
)
def test_host_names_are_read_without_the_port(header: str, host: str) -> None:
    assert host_name(header) == host
