"""The JSON-lines protocol: round trips, the line reader, and independence from torch."""
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import protocol

ROOT = Path(__file__).resolve().parents[2]

EXAMPLES = [
    protocol.Start(command="generate", output_dir="/tmp/run", engine_version="0.1.0", pid=12),
    protocol.Stage(name="prior", index=1, total=3),
    protocol.Progress(stage="projection", step=3, total=16, message="view 3"),
    protocol.Preview(stage="projection", path="/tmp/run/views/view_000.png"),
    protocol.Warning(code="multiple_faces", message="2 faces; the largest was used"),
    protocol.Result(output_dir="/tmp/run", manifest="/tmp/run/result.json", outputs={"mesh": "/tmp/run/mesh/head.glb"}),
    protocol.Error(code="no_face", message="a.png: no face found", exit_code=2),
    protocol.Cancel(),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.type)
def test_round_trip(event):
    line = event.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert data["v"] == 1 and data["type"] == event.type
    assert protocol.Event.from_dict(data) == event
    assert protocol.parse_line(line + "\n") == event


def test_events_are_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'name'"):
        EXAMPLES[1].name = "other"
    assert EXAMPLES[1].name == "prior"


def test_reader_skips_non_events():
    text = "\n".join([
        "a library printed this",
        "{not json",
        "[1, 2]",
        json.dumps({"type": "stage", "v": 2, "name": "x"}),  # future version
        json.dumps({"type": "mystery", "v": 1}),
        json.dumps({"type": "stage", "v": 1}),  # missing a required field
        EXAMPLES[1].to_json(),
        "",
        json.dumps({**EXAMPLES[2].to_dict(), "extra": "ignored"}),
    ])
    assert list(protocol.read_events(io.StringIO(text))) == [EXAMPLES[1], EXAMPLES[2]]


def test_from_dict_rejects_unknown_type_and_version():
    with pytest.raises(ValueError):
        protocol.Event.from_dict({"type": "stage", "v": 99, "name": "x"})
    with pytest.raises(ValueError):
        protocol.Event.from_dict({"type": "nope", "v": 1})


def test_protocol_imports_with_the_standard_library_only():
    """``python -S`` has no site-packages: no torch, no numpy. The add-on's Python is like that."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import engine.protocol, engine.errors; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_wire_format_is_one_compact_utf8_line():
    """Exactly what goes over the pipe: compact separators, non-ASCII text kept as is."""
    event = protocol.Warning(code="font", message="café — ✓ \"quoted\"\nsecond line")
    line = event.to_json()
    assert line == ('{"type":"warning","v":1,"code":"font","message":"café — ✓ \\"quoted\\"\\nsecond line"}')
    assert protocol.parse_line(line) == event


@pytest.mark.parametrize("data, message", [
    ({"type": "stage", "v": 2, "name": "x"}, "unsupported protocol version 2"),
    ({"type": "stage", "name": "x"}, "unsupported protocol version None"),
    ({"type": "mystery", "v": 1}, "unknown event type 'mystery'"),
    ({"v": 1}, "unknown event type None"),
])
def test_from_dict_names_what_is_wrong(data, message):
    with pytest.raises(ValueError) as info:
        protocol.Event.from_dict(data)
    assert str(info.value) == message
