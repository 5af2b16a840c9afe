"""What a stage may ask of the run: report progress and warnings, honour cancel.

Stages take a ``RunContext``; the CLI gives them one that emits protocol events, tests
use ``RunContext()`` itself, which only records. Library code below the engine (``recon``,
``weights``) never sees this: it takes plain callbacks.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import protocol
from .errors import Cancelled

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Progress, warnings and cancel for one run.

    emit: receives every protocol event (the CLI prints them); None records only.
    models_dir: where the user keeps FLAME and weights (None: the default search path).
    device: torch device name chosen by the engine ("cpu", "cuda").
    models: loaded models kept for the next run of the same process (``batch`` shares one
        dict between its runs' contexts); key → model, see ``cached``.
    """

    emit: Callable[[protocol.Event], None] | None = None
    models_dir: Path | None = None
    device: str = "cpu"
    cancel_event: threading.Event = field(default_factory=threading.Event)
    warnings: list[dict] = field(default_factory=list)
    stage_name: str = ""
    models: dict = field(default_factory=dict)

    def cached(self, key: tuple, load: Callable[[], object]):
        """``models[key]``, loading it with ``load()`` the first time (batch loads each model once)."""
        if key not in self.models:
            self.models[key] = load()
        return self.models[key]

    def _send(self, event: protocol.Event) -> None:
        if self.emit is not None:
            self.emit(event)

    def warn(self, code: str, message: str) -> None:
        """Record a warning for result.json and tell the client; the run goes on."""
        self.warnings.append({"code": code, "message": message, "stage": self.stage_name})
        log.info("warning %s: %s", code, message)  # the event is the user-facing channel
        self._send(protocol.Warning(code=code, message=message))

    def progress(self, step: int, total: int, message: str = "") -> None:
        """Report progress in the current stage and stop here if the user cancelled."""
        self._send(protocol.Progress(stage=self.stage_name, step=step, total=total, message=message))
        self.check_cancelled()

    def preview(self, path: Path) -> None:
        self._send(protocol.Preview(stage=self.stage_name, path=str(path)))

    def cancel(self) -> None:
        """Ask the run to stop at the next step boundary (thread- and signal-safe)."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """A step boundary: raise ``Cancelled`` if cancel was asked for."""
        if self.cancel_event.is_set():
            raise Cancelled()
