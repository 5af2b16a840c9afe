"""Run the real engine CLI in a subprocess, as the add-on and users do."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict]:
        """stdout parsed strictly: every line must be a JSON event (the protocol's promise)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def run_cli(*args, timeout: float = 600, **kwargs) -> Completed:
    out = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
    return Completed(out.returncode, out.stdout, out.stderr)


def assert_one_line_error(result: Completed, *needles: str, code: int = 2) -> None:
    """Exit ``code``, no traceback, a one-line message on stderr naming every needle."""
    assert result.code == code, (result.code, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith(("error:", "gen3dface:"))]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
