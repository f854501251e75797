from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loadtests.locust.runner import duration_seconds, locust_command, parse_args, scenario_mix


@pytest.mark.parametrize(
    ("text", "seconds"), [("20s", 20), ("2m", 120), ("1h30m", 5400), ("1m5s", 65), ("90", 90)]
)
def test_durations_in_locust_syntax(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration_seconds(text)


def test_locust_command_writes_every_report_into_the_results_folder(tmp_path: Path) -> None:
    args = parse_args(["--host", "http://h:1", "--users", "4", "--duration", "10s"])
    cmd = locust_command(args, tmp_path)
    assert cmd[cmd.index("--users") + 1] == "4"
    assert cmd[cmd.index("--spawn-rate") + 1] == "4"  # all users at once unless told otherwise
    assert cmd[cmd.index("--run-time") + 1] == "10s"
    for flag, value in (("--json-file", "stats"), ("--csv", "stats"), ("--html", "report.html")):
        assert cmd[cmd.index(flag) + 1] == str(tmp_path / value)
    assert "--headless" in cmd


def test_faces_scenario_follows_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACELLM_LOAD_MIX", raising=False)
    base = ["--host", "http://127.0.0.1:9", "--mix", "chat:1,faces:2"]
    assert scenario_mix(parse_args([*base, "--faces", "on"])) == "chat:1,faces:2"
    assert scenario_mix(parse_args([*base, "--faces", "off"])) == "chat:1,faces:0"
    # auto: nothing listens on port 9, so the endpoint is not there
    assert scenario_mix(parse_args([*base, "--faces", "auto"])) == "chat:1,faces:0"
