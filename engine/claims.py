"""Who owns a temporary run directory, and the per-run lock (shared storage, render farms).

A run's hidden temporaries are named ``.<name>.tmp-<pid>-<start>-<host>-<rand>`` (and
``.<name>.old-…`` for a run being replaced), so a later run into the same parent can tell
whether their owner is gone: the host token is this machine's name, ``start`` is the
owner's start time in clock ticks since boot (``/proc/<pid>/stat``), which tells a reused
PID from the original. A temporary is *stale* only when it was made on this host and its
process is dead or is another process with the same PID; temporaries of other hosts are
never touched, because their PIDs mean nothing here.

Each run also holds a POSIX record lock on ``.<name>.lock`` beside it while it writes, so
that two processes (two ``batch`` workers, two GPUs) never build the same run at once. The
kernel drops the lock when its process dies, even by SIGKILL, so a lock is never stale;
the lock file itself may stay behind and is harmless. On NFS the lock needs the NFS lock
service (mounts without ``nolock``); without it the final rename still refuses a second
complete run (``rundir.RunDir.commit``), so the worst case is duplicated work.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path

log = logging.getLogger(__name__)

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<start>\d+)-(?P<host>[^/]+)-[0-9a-f]{8}$")


def host_token() -> str:
    """This machine's name, safe inside a file name (no '/', no whitespace)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname() or "localhost")[:64]


def process_start(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot; 0 when unknown (no /proc) or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # Field 22 counted after the command name, which may itself hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else 0


def owner_token() -> str:
    """``<pid>-<start>-<host>`` of this process, the middle of a temporary's name."""
    pid = os.getpid()
    return f"{pid}-{process_start(pid)}-{host_token()}"


def _alive(pid: int, start: int) -> bool:
    """Whether the process that made a temporary still runs (here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = process_start(pid)
    return not (start and now and now != start)  # same PID, other start time: PID reused


def stale_temporaries(parent: Path) -> list[Path]:
    """Hidden temporaries in ``parent`` left by dead processes of this host."""
    here = host_token()
    found = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or match["host"] != here:
            continue
        if not _alive(int(match["pid"]), int(match["start"])):
            found.append(Path(entry.path))
    return found


def sweep(parent: Path) -> list[Path]:
    """Remove stale temporaries from ``parent``; return what was removed."""
    removed = []
    for path in stale_temporaries(parent):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # another run swept it first
            continue
        except OSError as exc:
            log.warning("cannot remove stale temporary %s: %s", path, exc)
            continue
        log.info("removed stale temporary %s", path)
        removed.append(path)
    return removed


class Busy(Exception):
    """Another live process holds the run's lock; ``owner`` says who, if it wrote that."""

    def __init__(self, path: Path, owner: str):
        self.path, self.owner = path, owner
        super().__init__(f"{path}: held by {owner}")


class RunLock:
    """Exclusive, non-blocking lock on ``.<name>.lock`` beside the run directory ``final``."""

    def __init__(self, final: Path):
        self.path = final.with_name(f".{final.name}.lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``Busy``; OSError when the parent cannot be written."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EACCES, errno.EAGAIN):
                    raise Busy(self.path, self._owner()) from None
                raise
            # The holder before us may have unlinked the file after we opened it: then our
            # lock is on a dead inode, and a third process may lock a new file. Retry.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:  # other users of a shared disk must be able to lock it after we died (umask would stop them)
            os.fchmod(fd, 0o666)
        except OSError:  # not our file: its owner already made it lockable for us
            pass
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self.fd = fd

    def _owner(self) -> str:
        try:
            data = json.loads(self.path.read_text() or "{}")
            return f"process {data['pid']} on {data['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        """Remove the lock file (while still holding it, so nobody locks a dead inode) and unlock."""
        if self.fd is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
