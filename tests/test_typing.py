"""``Task[P, T]`` lets mypy check every send against the task's signature."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

SAMPLE = Path(__file__).parent / "typing" / "sends.py"


def _expected_error_lines() -> set[int]:
    lines = SAMPLE.read_text().splitlines()
    return {number for number, line in enumerate(lines, 1) if "  # E: " in line}


def test_mypy_accepts_good_sends_and_rejects_bad_ones() -> None:
    stdout, stderr, _status = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--config-file",
            "/dev/null",
            "--follow-imports",
            "silent",
            str(SAMPLE),
        ]
    )

    reported = {
        int(match.group(1))
        for match in re.finditer(rf"{re.escape(SAMPLE.name)}:(\d+): error", stdout)
    }
    assert reported == _expected_error_lines(), stdout + stderr
