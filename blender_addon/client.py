"""The engine client: one engine subprocess, its events on a queue, cancel. No ``bpy``.

Blender's Python has no torch, so the add-on runs the engine in its own Python as a
subprocess (docs/architecture.md, "Protocol"): JSON lines on stdout, logs on stderr, a ``cancel``
line on stdin or SIGTERM to stop. A reader thread turns stdout into protocol events on
a queue so Blender's UI thread only drains the queue from a timer and never blocks.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

try:  # inside Blender the repository root is the extension package: bl_ext.<repo>.gen3dface
    from ..engine import protocol
except ImportError:  # imported as a top-level package (tests, batch with the bpy module)
    from engine import protocol

log = logging.getLogger(__name__)

#: The extension's folder (the repository root): holds engine/, recon/, weights/.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

#: Seconds the engine has to acknowledge a cancel (its ``error`` event, exit 130) before SIGKILL.
KILL_AFTER = 5.0

#: Seconds an engine that acknowledged the cancel has to exit before SIGKILL. Its
#: interpreter teardown with torch, diffusers and mediapipe loaded takes 2–4 s on two busy
#: cores (measured), longer than ``KILL_AFTER`` under load: killing it then would turn a
#: clean 130 into -9 while gaining nothing (the run directory is already discarded).
EXIT_GRACE = 30.0

EXIT_MESSAGES = {
    2: "bad input",
    3: "a required model file is missing",
    4: "the output disk is full (or the quota is exceeded)",
    130: "cancelled",
    1: "internal engine error",
}


@dataclass(frozen=True)
class GenerateSettings:
    """Arguments of ``engine generate``; ``None`` leaves the engine's default."""

    photo: str
    """The portrait photo (the input view)."""
    output_dir: str
    """The run directory to create (must not exist unless ``overwrite``)."""
    backend: str = "auto"
    """``auto``, ``projection`` or ``diffusion``."""
    views: int | None = None
    """Number of generated views."""
    resolution: int | None = None
    """View resolution in pixels."""
    steps: int | None = None
    """Diffusion steps."""
    guidance: float | None = None
    """Classifier-free guidance scale."""
    seed: int | None = None
    """Random seed."""
    recon: str = "auto"
    """Neural surface reconstruction: ``auto``, ``on`` or ``off``."""
    models_dir: str = ""
    """Folder with user-supplied models (FLAME, weights); empty = engine default."""
    weights: str = ""
    """Folder with diffusion weights; empty = engine default."""
    overwrite: bool = False
    """Replace an existing run directory."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    extra_photos: tuple[str, ...] = ()
    """More photos of the same person (after ``photo`` on the command line)."""


def generate_args(s: GenerateSettings) -> list[str]:
    """The engine's command-line arguments after ``-m engine`` (a list: no shell)."""
    args = ["generate", str(s.photo), *map(str, s.extra_photos), "-o", str(s.output_dir), "--json",
            "--backend", s.backend, "--recon", s.recon, "--device", s.device]
    for flag, value in (("--views", s.views), ("--resolution", s.resolution), ("--steps", s.steps),
                        ("--guidance", s.guidance), ("--seed", s.seed)):
        if value is not None:
            args += [flag, str(value)]
    if s.models_dir:
        args += ["--models-dir", str(s.models_dir)]
    if s.weights:
        args += ["--weights", str(s.weights)]
    if s.overwrite:
        args.append("--overwrite")
    return args


def engine_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: the extension folder first on PYTHONPATH.

    Running ``-m engine`` from the extension's own copy keeps engine and add-on at the
    same version even when the engine venv only holds the dependencies.
    """
    env = dict(os.environ if base is None else base)
    parts = [str(PACKAGE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Blender sets these for its own Python; the engine's Python must not inherit them.
    for key in ("PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(key, None)
    return env


@dataclass
class Outcome:
    """How a finished run ended."""

    exit_code: int
    result: protocol.Result | None = None
    error: protocol.Error | None = None
    warnings: list[protocol.Warning] = field(default_factory=list)
    stderr_tail: str = ""
    cancel_requested: bool = False
    """The client asked the engine to stop (a signal death then also counts as cancelled)."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.result is not None

    @property
    def cancelled(self) -> bool:
        if self.exit_code == 130 or (self.error is not None and self.error.exit_code == 130):
            return True
        # SIGTERM before the engine installed its handler, or SIGKILL after KILL_AFTER.
        return self.cancel_requested and self.exit_code < 0

    @property
    def message(self) -> str:
        """One line for the user: the engine's error, else the exit code's meaning + stderr."""
        if self.ok:
            return "done"
        if self.error is not None and self.error.message:
            return self.error.message
        if self.exit_code == 0:
            return "the engine exited without a result"
        tail = self.stderr_tail.strip().splitlines()
        reason = EXIT_MESSAGES.get(self.exit_code, f"exit code {self.exit_code}")
        return f"engine failed ({reason})" + (f": {tail[-1]}" if tail else "")


class EngineProcess:
    """One running engine: ``events()``/``poll_events()`` read it, ``cancel()`` stops it.

    The reader threads put protocol events on ``self.queue``; ``None`` marks the end of
    stdout. ``wait()`` returns the ``Outcome`` once the process has exited.
    """

    def __init__(self, python: str, args: list[str], cwd: str | None = None,
                 env: dict[str, str] | None = None):
        self.command = [str(python), "-m", "engine", *args]
        self.queue: queue.Queue[protocol.Event | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._result: protocol.Result | None = None
        self._error: protocol.Error | None = None
        self._warnings: list[protocol.Warning] = []
        self._cancel_at: float | None = None
        self._acknowledged = threading.Event()  # the engine reported its end (error event or stdout closed)
        log.info("engine: %s", " ".join(self.command))
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", bufsize=1,
            cwd=cwd or str(PACKAGE_ROOT), env=engine_env(env),
        )
        self._out = threading.Thread(target=self._read_stdout, name="gen3dface-stdout", daemon=True)
        self._err = threading.Thread(target=self._read_stderr, name="gen3dface-stderr", daemon=True)
        self._out.start()
        self._err.start()

    # -- reader threads -------------------------------------------------------------
    def _read_stdout(self) -> None:
        try:
            for event in protocol.read_events(self.proc.stdout):
                if isinstance(event, protocol.Result):
                    self._result = event
                elif isinstance(event, protocol.Error):
                    self._error = event
                    self._acknowledged.set()
                elif isinstance(event, protocol.Warning):
                    self._warnings.append(event)
                self.queue.put(event)
        finally:
            self._acknowledged.set()
            self.queue.put(None)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    # -- state ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def poll_events(self) -> list[protocol.Event]:
        """Every event queued so far, without blocking (for a UI timer)."""
        out = []
        while True:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                break
            if event is not None:
                out.append(event)
        self._enforce_kill()
        return out

    def events(self, timeout: float = 0.2) -> Iterator[protocol.Event]:
        """Yield events until stdout closes (blocking; for background mode)."""
        while True:
            try:
                event = self.queue.get(timeout=timeout)
            except queue.Empty:
                self._enforce_kill()
                continue
            if event is None:
                return
            yield event

    @property
    def finished(self) -> bool:
        """The process exited and its output has been read."""
        return self.proc.poll() is not None and not self._out.is_alive()

    def outcome(self) -> Outcome:
        """The outcome of a finished process (call after ``finished`` or ``wait``)."""
        return Outcome(self.proc.returncode, self._result, self._error, list(self._warnings),
                       "\n".join(self._stderr), self._cancel_at is not None)

    def wait(self, timeout: float | None = None) -> Outcome:
        """Wait for the process and its readers; SIGKILL follows a cancel after ``KILL_AFTER``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.proc.poll() is None:
            self._enforce_kill()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"engine still running after {timeout} s")
            time.sleep(0.05)
        self._out.join(timeout=5)
        self._err.join(timeout=5)
        return self.outcome()

    # -- cancel --------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to stop: a ``cancel`` line and SIGTERM.

        SIGKILL follows after ``KILL_AFTER`` s if the engine has not acknowledged (no
        ``error`` event, stdout still open), or after ``EXIT_GRACE`` s if it has but is
        still exiting.
        """
        if self.proc.poll() is not None:
            return
        if self._cancel_at is None:
            self._cancel_at = time.monotonic()
        try:
            self.proc.stdin.write(protocol.Cancel().to_json() + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the engine already closed stdin or exited
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        # The kill deadline is enforced by poll_events/events/wait; a thread makes sure it
        # happens even when nobody polls (Blender closed the panel).
        threading.Thread(target=self._kill_later, name="gen3dface-kill", daemon=True).start()

    def _kill_deadline(self) -> float:
        """Monotonic time at which a cancelled engine that is still running gets SIGKILL."""
        return self._cancel_at + (EXIT_GRACE if self._acknowledged.is_set() else KILL_AFTER)

    def _kill_later(self) -> None:
        while self.proc.poll() is None:
            try:
                self.proc.wait(timeout=max(0.05, self._kill_deadline() - time.monotonic()))
            except subprocess.TimeoutExpired:
                if self._enforce_kill():
                    return

    def _enforce_kill(self) -> bool:
        """SIGKILL a cancelled engine past its deadline; True if it was killed."""
        if self._cancel_at is None or self.proc.poll() is not None or time.monotonic() < self._kill_deadline():
            return False
        if self._acknowledged.is_set():
            log.warning("engine still exiting %.0f s after it acknowledged the cancel: killing it", EXIT_GRACE)
        else:
            log.warning("engine ignored the cancel for %.0f s: killing it", KILL_AFTER)
        self.proc.kill()
        return True


def start_generate(python: str, settings: GenerateSettings, env: dict[str, str] | None = None) -> EngineProcess:
    """Start ``engine generate`` for ``settings`` with the engine's ``python``."""
    return EngineProcess(python, generate_args(settings), env=env)


def run_generate(python: str, settings: GenerateSettings,
                 on_event: Callable[[protocol.Event], None] | None = None,
                 env: dict[str, str] | None = None) -> Outcome:
    """Run ``engine generate`` to the end (background mode). Ctrl-C cancels the engine."""
    proc = start_generate(python, settings, env)
    try:
        for event in proc.events():
            if on_event is not None:
                on_event(event)
    except KeyboardInterrupt:
        proc.cancel()
        return proc.wait()
    return proc.wait()


def run_doctor(python: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run ``engine doctor``; returns (exit code, its stdout or the reason it failed)."""
    try:
        done = subprocess.run([str(python), "-m", "engine", "doctor"], capture_output=True, text=True,
                              timeout=timeout, cwd=str(PACKAGE_ROOT), env=engine_env())
    except FileNotFoundError:
        return 127, f"{python}: no such Python executable"
    except subprocess.TimeoutExpired:
        return 124, f"engine doctor took longer than {timeout:.0f} s"
    text = done.stdout.strip() or done.stderr.strip()
    return done.returncode, text


def default_engine_python(user_dir: str | None) -> str:
    """The engine Python: the environment "Set up engine" finished in ``user_dir``, else ``$GEN3DFACE_PYTHON``.

    Only a finished environment counts (``engine_setup.ready_python``: its stamp is written
    last), so a cancelled or failed set-up is never picked up.
    """
    if user_dir:
        from . import engine_setup

        found = engine_setup.ready_python(Path(user_dir, engine_setup.ENV_NAME))
        if found:
            return found
    return os.environ.get("GEN3DFACE_PYTHON", "")


@dataclass
class ProgressState:
    """What the UI shows about a running engine, updated from its events."""

    stage: str = "starting"
    index: int = 0
    total: int = 0
    step: int = 0
    steps: int = 0
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def factor(self) -> float:
        """Overall progress in [0, 1]: finished stages plus the fraction of the current one."""
        if self.total <= 0:
            return 0.0
        inner = self.step / self.steps if self.steps > 0 else 0.0
        return max(0.0, min(1.0, (self.index + min(inner, 1.0)) / self.total))

    @property
    def text(self) -> str:
        """``stage (i/n)`` plus the step counter, for the progress bar."""
        head = self.stage.replace("_", " ")
        if self.total:
            head += f" ({self.index + 1}/{self.total})"
        if self.steps:
            head += f" {self.step}/{self.steps}"
        return head

    def apply(self, event: protocol.Event) -> str | None:
        """Update from one event; returns a line worth printing in background mode, or None."""
        if isinstance(event, protocol.Stage):
            self.stage, self.index, self.total = event.name, event.index, event.total
            self.step = self.steps = 0
            self.message = ""
            return f"stage {event.index + 1}/{event.total}: {event.name}"
        if isinstance(event, protocol.Progress):
            self.step, self.steps, self.message = event.step, event.total, event.message
            return None
        if isinstance(event, protocol.Warning):
            self.warnings.append(event.message)
            return f"warning: {event.message}"
        if isinstance(event, protocol.Error):
            return f"error: {event.message}"
        if isinstance(event, protocol.Result):
            self.stage, self.index = "done", self.total
            return f"result: {event.output_dir}"
        return None


def unique_run_dir(parent: str | Path, name: str) -> Path:
    """``parent/name``, or ``parent/name_001`` … when that exists already."""
    parent = Path(parent)
    candidate = parent / name
    n = 0
    while candidate.exists():
        n += 1
        candidate = parent / f"{name}_{n:03d}"
    return candidate
