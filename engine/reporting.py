"""Where events go: JSON lines on stdout (``--json``) or a progress bar on stderr."""
from __future__ import annotations

import sys
import threading
from typing import TextIO

from . import protocol


class JsonLines:
    """Writes each event as one JSON line on stdout and flushes (the add-on reads it live)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def __call__(self, event: protocol.Event) -> None:
        with self.lock:
            self.stream.write(event.to_json() + "\n")
            self.stream.flush()


class ProgressBar:
    """A human progress display on stderr: one bar redrawn in place on a terminal, plain lines otherwise."""

    WIDTH = 28

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.stage = ""
        self.last_percent = -1

    def _line(self, text: str, final: bool = True) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.Stage):
            self.stage, self.last_percent = event.name, -1
            self._line(f"[{event.index + 1}/{event.total}] {event.name}")
        elif isinstance(event, protocol.Progress) and event.total > 0:
            percent = int(100 * event.step / event.total)
            if self.tty and percent != self.last_percent:
                filled = self.WIDTH * event.step // event.total
                bar = "#" * filled + "-" * (self.WIDTH - filled)
                self._line(f"  {self.stage} [{bar}] {percent:3d}% {event.message}", final=event.step >= event.total)
                self.last_percent = percent
        elif isinstance(event, protocol.Warning):
            self._line(f"warning: {event.message}")
        elif isinstance(event, protocol.Result):
            self._line(f"done: {event.output_dir}")
        elif isinstance(event, protocol.Error):
            self._line(f"error: {event.message}")
