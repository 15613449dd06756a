"""``segmend rate RUN_DIR``: clear errors for a folder without a round to rate; the real server in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from segmend.cli import main as cli_main
from segmend.commands.rate import main
from segmend.mad import Selection
from segmend.mad.layout import MADLayout
from segmend.mad.state import MADState
from tests.fixtures.cli import REPO
from tests.fixtures.rating import make_rating_run


def test_a_folder_without_a_mad_state_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "mad" / "state.json") in error and "not the run folder of a MAD loop" in error
    with pytest.raises(SystemExit) as stop:  # through the console script's entry, as `segmend rate` runs
        cli_main(["rate", str(tmp_path / "missing")])
    assert stop.value.code == 2


def test_a_broken_state_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state_file = MADLayout(tmp_path).state_file
    state_file.parent.mkdir(parents=True)
    state_file.write_text("{not json")
    assert main([str(tmp_path)]) == 2
    assert str(state_file) in capsys.readouterr().err


def test_rounds_not_waiting_for_scores_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = MADState(tmp_path, ("background", "thing"))
    state.advance(0, "mined")
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "current round 0" in error and "phase 'mined'" in error and "phase 'candidates'" in error
    assert str(MADLayout(tmp_path).state_file) in error

    state.save_candidates(0, Selection(["a.jpg"], []))
    state.save_scores(0, {"a.jpg": {"alice": 3}})
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "already recorded (phase 'scored')" in error and f"`segmend status {tmp_path}` says what" in error
    assert "--round" not in error  # only the current round can wait for scores: no other round to name
    assert main([str(tmp_path), "--round", "4"]) == 2
    assert "records no round 4" in capsys.readouterr().err


def test_a_port_in_use_is_an_error_before_the_address_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rating = make_rating_run(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main([str(rating.run), "--port", str(port)]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""  # no "Open http://..." of a page another program serves
    assert f"cannot listen on 127.0.0.1:{port}" in printed.err and f"--port {port + 1}" in printed.err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_command_serves_the_round_on_loopback(tmp_path: Path) -> None:
    rating = make_rating_run(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "segmend.cli", "rate", str(rating.run), "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, info = request(f"{base}/api/round")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"segmend rate did not serve: {process.communicate(timeout=10)[0]}") from None
                time.sleep(0.2)
        assert status == 200 and info["images"] == list(rating.ids)
        assert request(f"{base}/api/raters/erin/scores/{rating.ids[0]}", "PUT", {"score": 5})[0] == 200
        assert request(f"{base}/api/raters/erin/scores/{rating.ids[0]}", "PUT", {"score": 9})[0] == 422
        assert json.loads(MADLayout(rating.run).scores_file(0, "erin").read_text())["scores"] == {rating.ids[0]: 5}
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl+C
        output = process.communicate(timeout=30)[0]
    assert f"Open http://127.0.0.1:{port}/ in a browser" in output and "6 images to score" in output
    assert process.returncode == 0, output
