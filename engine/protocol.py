"""The JSON-lines protocol between the add-on and the engine (docs/architecture.md, "Protocol").

Standard library only: the Blender add-on imports this module in Blender's Python, which
has no torch. The engine writes one event per line on stdout; logs go to stderr. Every
event carries ``"type"`` and ``"v": 1``. Large data (images, meshes) travels as file paths.

The add-on may write a ``{"type": "cancel", "v": 1}`` line on the engine's stdin; SIGTERM
has the same effect.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, Iterable, Iterator

VERSION = 1


@dataclass(frozen=True)
class Event:
    """Base of all events; subclasses set ``type``."""

    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "v": VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        """One line of JSON, no trailing newline."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        """Build the event named by ``data["type"]``; unknown keys are ignored (newer engines)."""
        if data.get("v") != VERSION:
            raise ValueError(f"unsupported protocol version {data.get('v')!r}")
        kind = EVENT_TYPES.get(data.get("type", ""))
        if kind is None:
            raise ValueError(f"unknown event type {data.get('type')!r}")
        names = {f.name for f in dataclasses.fields(kind)}
        return kind(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Start(Event):
    """The run began. ``output_dir`` is where the finished run will be."""

    type: ClassVar[str] = "start"
    command: str
    output_dir: str = ""
    engine_version: str = ""
    pid: int = 0


@dataclass(frozen=True)
class Stage(Event):
    """A stage began: ``index`` counts from 0 of ``total`` stages."""

    type: ClassVar[str] = "stage"
    name: str
    index: int = 0
    total: int = 0


@dataclass(frozen=True)
class Progress(Event):
    """Progress inside ``stage``: ``step`` of ``total`` (both ≥ 0; total 0 = unknown)."""

    type: ClassVar[str] = "progress"
    stage: str
    step: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class Preview(Event):
    """An intermediate image or mesh the UI may show, as a file path."""

    type: ClassVar[str] = "preview"
    stage: str
    path: str


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the protocol's name
    """Something the user should know; the run goes on."""

    type: ClassVar[str] = "warning"
    code: str
    message: str


@dataclass(frozen=True)
class Result(Event):
    """The run finished: ``manifest`` is the path of result.json, ``outputs`` name → path."""

    type: ClassVar[str] = "result"
    output_dir: str
    manifest: str
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Error(Event):
    """The run failed; ``exit_code`` follows docs/architecture.md (2 input, 3 model, 4 disk full, 130 cancel, 1 internal)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    exit_code: int = 1


@dataclass(frozen=True)
class Cancel(Event):
    """Sent by the client on the engine's stdin: stop at the next step boundary."""

    type: ClassVar[str] = "cancel"


EVENT_TYPES: dict[str, type[Event]] = {
    kind.type: kind for kind in (Start, Stage, Progress, Preview, Warning, Result, Error, Cancel)
}


def parse_line(line: str) -> Event | None:
    """The event on one line, or None for a line that is not a protocol event.

    Non-JSON lines (a library printing to stdout) and JSON that is not an event are skipped,
    so a stray print never breaks the client.
    """
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return Event.from_dict(data)
    except (ValueError, TypeError):
        return None


def read_events(stream: IO[str] | Iterable[str]) -> Iterator[Event]:
    """Yield the events of a text stream line by line, skipping everything else."""
    for line in stream:
        event = parse_line(line)
        if event is not None:
            yield event
