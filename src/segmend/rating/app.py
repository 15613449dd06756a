"""The rating page's web app (FastAPI): the static page and a small JSON API over one round of a run folder.

Routes (every ``{image_id}`` is a candidate id of the round, URL-encoded part by part; every
``{rater}`` a rater name; anything else is answered with a 4xx JSON ``{"detail": "..."}``)::

    GET    /                                     the page (static/index.html; app.js and style.css under /static)
    GET    /api/round                            the round: its number, the ids to rate in order, the classes
    GET    /api/raters/{rater}                   a rater's scores so far and their progress
    PUT    /api/raters/{rater}/scores/{image_id} body {"score": 1..5 | "ood"}: give a score; the new progress
    DELETE /api/raters/{rater}/scores/{image_id} remove a score (undo); the new progress
    GET    /api/images/{image_id}                the candidate's image upright (round_<r>/images/<id>.jpg)
    GET    /api/overlays/{image_id}              the target's prediction blended over it (PNG)
    GET    /api/legends/{image_id}               the classes of the prediction with their colours

Every asset is served from the package; the page loads nothing from elsewhere (its Content-Security-Policy
allows only this server), and the interactive API docs FastAPI would fetch from a CDN are off.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from segmend.mad.human_files import OOD_MARK
from segmend.mad.layout import RATER_PATTERN
from segmend.mad.scores import MAX_SCORE, MIN_SCORE
from segmend.rating.overlay import legend, overlay_png, read_prediction
from segmend.rating.session import RatingError, RatingRound
from segmend.rating.store import ScoreStore

STATIC = Path(__file__).resolve().parent / "static"
"""The page's HTML, JavaScript and CSS (package data)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Sent with every response: nothing but this server is loaded, and no other site frames the page."""

OVERLAY_CACHE = 64
"""Overlays kept in memory (a rater going back and forth does not blend them again)."""


def create_app(
    run_dir: str | Path, round_index: int | None = None, allowed_hosts: Sequence[str] | None = None
) -> FastAPI:
    """The rating page of one round of a run folder.

    Args:
        run_dir: The run folder of a MAD loop (holding ``mad/state.json``).
        round_index: The round to rate; ``None`` takes the current round. It must wait for weak
            scores (phase ``candidates``).
        allowed_hosts: Host names the requests may carry (``Host`` header, port left out); ``None``
            accepts any. ``segmend rate`` passes the loopback names when it binds to a loopback
            address, so a web page elsewhere cannot reach the server through DNS rebinding.

    Returns:
        The FastAPI app (serve it with uvicorn).

    Raises:
        RoundNotReady: If the run folder has no MAD state or no round waiting for weak scores.

    """
    rating = RatingRound(run_dir, round_index)
    store = ScoreStore(rating)
    app = FastAPI(title="segmend rating page", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.rating = rating
    hosts = None if allowed_hosts is None else {host.lower() for host in allowed_hosts}

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = host_name(request.headers.get("host", ""))
        if hosts is not None and host not in hosts:
            response: Response = JSONResponse(
                {"detail": f"This server answers requests for {sorted(hosts)} only; the request names {host!r}."},
                status_code=400,
            )
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(RatingError)
    async def refused(request: Request, error: RatingError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/round")
    def round_info() -> dict[str, Any]:
        return {
            "round": rating.index,
            "run_dir": str(rating.layout.run_dir),
            "images": rating.ids,
            "total": len(rating.ids),
            "classes": list(rating.classes or ()),
            "scores": {"min": MIN_SCORE, "max": MAX_SCORE, "out_of_domain": OOD_MARK},
            "rater_pattern": RATER_PATTERN.pattern,
        }

    @app.get("/api/raters/{rater}")
    def rater_progress(rater: str) -> dict[str, Any]:
        return store.progress(rating.rater(rater))

    @app.put("/api/raters/{rater}/scores/{image_id:path}")
    async def give_score(rater: str, image_id: str, request: Request) -> dict[str, Any]:
        name, image = rating.rater(rater), rating.image_id(image_id)
        value = await score_in(request)
        return await run_in_threadpool(store.set, name, image, value)

    @app.delete("/api/raters/{rater}/scores/{image_id:path}")
    def remove_score(rater: str, image_id: str) -> dict[str, Any]:
        return store.clear(rating.rater(rater), rating.image_id(image_id))

    @app.get("/api/images/{image_id:path}")
    def image(image_id: str) -> FileResponse:
        path = rating.image_file(rating.image_id(image_id))
        if not path.is_file():
            raise RatingError(404, f"The image of {image_id!r} is not in the run folder ({path}).")
        return FileResponse(path, media_type="image/jpeg")

    @functools.lru_cache(maxsize=OVERLAY_CACHE)
    def overlay_of(image_id: str) -> bytes:
        path = rating.image_file(image_id)
        return overlay_png(path if path.is_file() else None, prediction_of(image_id))

    def prediction_of(image_id: str) -> Any:
        path = rating.prediction_file(image_id)
        if not path.is_file():
            raise RatingError(
                404, f"The target's prediction of {image_id!r} is not in the run folder ({path}); the loop writes "
                "it when it asks for weak scores.",
            )  # fmt: skip
        try:
            return read_prediction(path, rating.num_classes)
        except ValueError as error:
            raise RatingError(409, str(error)) from error

    @app.get("/api/overlays/{image_id:path}")
    def overlay(image_id: str) -> Response:
        return Response(overlay_of(rating.image_id(image_id)), media_type="image/png")

    @app.get("/api/legends/{image_id:path}")
    def classes_shown(image_id: str) -> dict[str, Any]:
        return {"classes": legend(prediction_of(rating.image_id(image_id)), rating.classes)}

    return app


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without its port: ``127.0.0.1:8765`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def score_in(request: Request) -> Any:
    """The ``score`` of a JSON request body ``{"score": ...}`` (checked later by the store).

    Raises:
        RatingError: 415 for a body that is not declared JSON (a cross-site form cannot post scores),
            400 for one that is not a JSON object, 422 for one without ``score``.

    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise RatingError(415, f"Send the score as JSON (Content-Type: application/json); found {kind or 'none'!r}.")
    try:
        body = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RatingError(400, f'The request body is not JSON ({error}); send {{"score": 3}}.') from error
    if not isinstance(body, dict) or "score" not in body:
        raise RatingError(422, f'Send {{"score": <1..5 or "ood">}}; found {body!r:.80}.')
    return body["score"]
