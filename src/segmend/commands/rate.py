"""``segmend rate RUN_DIR``: serve the rating page of the round waiting for weak scores.

People open the printed address in a browser, enter their name and score each candidate with the
keyboard; their scores land in ``RUN_DIR/mad/round_<r>/scores/<name>.json`` at every key press.
When enough raters are done, re-run the loop's command (``segmend fit ...``): it goes on.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from pathlib import Path

from segmend.text import counted

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Addresses only this machine reaches."""

DEFAULT_PORT = 8765


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    result = argparse.ArgumentParser(
        prog="segmend rate",
        description="A local web page where people give weak scores (1-5, or out of domain) to the candidates of "
        "the MAD round waiting for them. Scores go to RUN_DIR/mad/round_<r>/scores/<rater>.json.",
    )
    result.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run folder of the MAD loop")
    result.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    result.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    result.add_argument(
        "--round", type=int, default=None, dest="round_index", metavar="R",
        help="the round to rate (default: the current round; it must wait for weak scores)",
    )  # fmt: skip
    return result


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)`` as uvicorn binds one (``SO_REUSEADDR``), for the server to listen on.

    Binding before anything is printed lets a taken port be reported as an error instead of after
    the address to open (where another server may answer).

    Raises:
        OSError: If the address cannot be bound (``errno.EADDRINUSE``: another program listens there).

    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError:
        listener.close()
        raise
    return listener


def main(argv: list[str]) -> int:
    """Serve the rating page until interrupted.

    Args:
        argv: The arguments after ``rate``.

    Returns:
        0 after the server stopped; 2 when the run folder has no MAD state or no round waiting for
        weak scores (the message names the path and what was expected), or when the address cannot
        be listened on (a port in use: the message says so).

    """
    args = parser().parse_args(argv)
    from segmend.rating import RoundNotReady, create_app

    loopback = args.host in LOOPBACK_HOSTS
    try:
        app = create_app(args.run_dir, args.round_index, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
    except RoundNotReady as error:
        print(f"segmend rate: error: {error}", file=sys.stderr)
        return 2
    import uvicorn

    rating = app.state.rating
    shown = f"[{args.host}]" if ":" in args.host else args.host
    try:
        listener = listening_socket(args.host, args.port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            hint = f"another program (another segmend rate?) uses it; give a free port, e.g. --port {args.port + 1}"
        else:
            hint = "give an address of this machine with --host (default 127.0.0.1) and a free port with --port"
        print(f"segmend rate: error: cannot listen on {shown}:{args.port} ({error.strerror or error}): {hint}.",
              file=sys.stderr)  # fmt: skip
        return 2
    print(
        f"segmend rate: round {rating.index} of {rating.layout.run_dir}: "
        f"{counted(len(rating.ids), 'image')} to score.\n"
        f"Open http://{shown}:{args.port}/ in a browser (Ctrl+C stops the server; scores are saved at once).",
        flush=True,
    )
    if not loopback:
        print(
            f"segmend rate: listening on {args.host}: anyone who reaches this address can score (there is no login).",
            flush=True,
        )
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # some uvicorn versions (0.30) re-raise the Ctrl+C they stopped on
        pass
    finally:
        listener.close()
    print("segmend rate: stopped; every score given is in the score files.", flush=True)
    return 0
