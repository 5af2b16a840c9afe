"""Run directories that appear only when complete (DESIGN.md, "Run directory").

A run writes into a hidden sibling ``.<name>.tmp-<pid>-<n>`` and renames it into place
after ``result.json`` is written, so a failed or cancelled run never leaves a directory
that looks complete. A directory is complete when it holds ``result.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import BadInput
from .versions import versions

MANIFEST = "result.json"


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a finished run (it holds result.json)."""
    return (path / MANIFEST).is_file()


class RunDir:
    """The output directory of one run: check → ``open()`` → write in ``tmp`` → ``commit()``.

    final: where the finished run will be.
    overwrite: replace a complete run already at ``final``.
    """

    def __init__(self, final: Path, overwrite: bool = False):
        self.final = Path(os.path.abspath(final))
        self.overwrite = overwrite
        self.tmp: Path | None = None

    def check(self) -> None:
        """Refuse outputs we must not touch, before any work is done (exit 2)."""
        final = self.final
        if final.exists() and not final.is_dir():
            raise BadInput(final, "output path exists and is a file, not a directory", "output_is_file")
        if final.is_dir() and any(final.iterdir()):
            if not is_complete(final):
                raise BadInput(final, "output directory is not empty and is not a Gen3D Face run", "output_not_empty")
            if not self.overwrite:
                raise BadInput(final, "output directory already holds a complete run; pass --overwrite to replace it",
                               "output_exists")
        parent = final.parent
        if parent.exists() and not parent.is_dir():
            raise BadInput(parent, "parent of the output path is a file", "output_is_file")

    def open(self) -> Path:
        """Create the temporary directory and return it."""
        self.check()
        parent = self.final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-{os.getpid()}-", dir=parent))
        except OSError as exc:
            raise BadInput(parent, f"cannot write the output directory ({exc.strerror or exc})", "output_not_writable") from None
        return self.tmp

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:  # failure or cancel: nothing that looks like a run is left
            self.discard()
        return False

    def commit(self, manifest: dict) -> Path:
        """Write result.json last, then rename the temporary directory into place."""
        assert self.tmp is not None, "open() first"
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        old = None
        if self.final.exists():
            self.check()  # still ours to replace (complete + overwrite, or empty)
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.rename(self.final, old)
        os.rename(self.tmp, self.final)
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        """Remove the temporary directory (failure or cancel); the final path is untouched."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def manifest(command: str, input_path: Path, **fields) -> dict:
    """The common head of result.json: engine, command, package versions and the input's sha256."""
    input_path = Path(input_path)
    return {"engine": "gen3dface", "command": command, "versions": versions(),
            "input": {"path": str(input_path.resolve()), "sha256": sha256_file(input_path)}, **fields}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
