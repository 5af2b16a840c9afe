"""Run directories that appear only when complete (docs/architecture.md, "Run directory").

A run writes into a hidden sibling ``.<name>.tmp-<pid>-<start>-<host>-<rand>`` and renames
it into place after ``result.json`` is written, so a failed or cancelled run never leaves a
directory that looks complete. A directory is complete when it holds ``result.json``.

On shared storage (``claims``): a run holds ``.<name>.lock`` while it writes, so two
processes never build the same run; it first sweeps the parent of temporaries that dead
processes of this host left behind (SIGKILL, power loss); a full disk or quota ends the
run with ``DiskFull`` (exit 4) and removes the temporary. Directories are made with mode
0o777 minus the umask, like ``mkdir``, so a shared disk's other users can read runs.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from . import claims
from .errors import BadInput, DiskFull
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
        self.lock = claims.RunLock(self.final)

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
        """Claim the run, sweep stale temporaries, create the temporary directory and return it."""
        self.check()
        parent = self.final.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except claims.Busy as busy:
            raise BadInput(self.final, f"output directory is being written by {busy.owner} right now",
                           "output_busy") from None
        except OSError as exc:
            self._fail(exc, parent)
        try:
            self.check()  # a competitor may have finished it while we waited for the lock
            claims.sweep(parent)
            self.tmp = _make_dir(parent, f".{self.final.name}.tmp-{claims.owner_token()}")
        except BaseException as exc:
            self.lock.release()
            if isinstance(exc, OSError):
                self._fail(exc, parent)
            raise
        return self.tmp

    def _fail(self, exc: OSError, parent: Path):
        if is_disk_full(exc):
            raise DiskFull(parent, exc) from None
        raise BadInput(parent, f"cannot write the output directory ({exc.strerror or exc})",
                       "output_not_writable") from None

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:  # failure or cancel: nothing that looks like a run is left
            self.discard()
            if exc is not None and is_disk_full(exc):
                raise DiskFull(self.final, disk_full_error(exc)) from None
        return False

    def commit(self, manifest: dict) -> Path:
        """Write result.json last, then rename the temporary directory into place."""
        assert self.tmp is not None, "open() first"
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        old = None
        if self.final.exists():
            self.check()  # still ours to replace (complete + overwrite, or empty)
            if self.overwrite and is_complete(self.final):
                old = _unique(self.final.parent, f".{self.final.name}.old-{claims.owner_token()}")
                os.rename(self.final, old)
        try:
            # rename() onto a non-empty directory fails: whatever happened to the lock, a
            # run that someone else completed meanwhile is never replaced or mixed with ours.
            os.rename(self.tmp, self.final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise BadInput(self.final, "output directory was completed by another process meanwhile",
                           "output_exists") from None
        self.tmp = None
        self.lock.release()
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        """Remove the temporary directory (failure or cancel); the final path is untouched."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        self.lock.release()


def _unique(parent: Path, prefix: str) -> Path:
    return parent / f"{prefix}-{secrets.token_hex(4)}"


def _make_dir(parent: Path, prefix: str) -> Path:
    """A new directory ``<prefix>-<8 hex>`` in ``parent``; mode 0o777 minus the umask (not
    mkdtemp's 0o700, which would make finished runs unreadable to a shared disk's other users)."""
    for _ in range(100):
        path = _unique(parent, prefix)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))


def disk_full_error(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT OSError behind ``exc`` (itself or a cause / context), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a full disk or an exhausted quota."""
    return disk_full_error(exc) is not None


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
