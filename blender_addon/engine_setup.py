"""Run the set-up steps of ``engine_env`` on a thread: progress, log, cancel, all-or-nothing. No bpy.

The environment is built in ``<env>.partial`` and only moved to ``<env>`` after its last
step passed, with a stamp file (``engine_env.STAMP``) inside: a cancelled or failed set-up
never leaves anything that ``ready_python`` would hand out as the engine, and the next
set-up starts by deleting the leftover, so running it again over a broken environment
repairs it. Each command runs in its own process group so Cancel stops uv and everything
it started. The full output goes to a log file; the UI reads the last lines.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    from . import engine_env
except ImportError:  # run from scripts or tests as a top-level module
    import engine_env  # type: ignore[no-redef]

log = logging.getLogger(__name__)

#: Text in a failing step's output that means the network, not the package, is the problem.
NETWORK_HINTS = ("dns error", "error sending request", "failed to fetch", "name or service not known",
                 "temporary failure in name resolution", "network is unreachable", "connection refused",
                 "newconnectionerror", "no route to host", "network was disabled", "could not resolve host",
                 "failed to establish a new connection")
#: Seconds a cancelled step's process group has after SIGTERM before SIGKILL.
KILL_AFTER = 3.0


def partial_dir(env_dir: str | Path) -> Path:
    """Where an environment is built before it is swapped in."""
    env_dir = Path(env_dir)
    return env_dir.with_name(env_dir.name + ".partial")


def ready_python(env_dir: str | Path) -> str:
    """The environment's Python if a set-up finished there (stamp present), else ''."""
    py = engine_env.venv_python(env_dir)
    return str(py) if Path(env_dir, engine_env.STAMP).is_file() and py.exists() else ""


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the set-up's commands: none of Blender's or an active venv's Python settings."""
    env = dict(os.environ if base is None else base)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX", "UV_PYTHON"):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("UV_NO_PROGRESS", "1")  # no progress bars in the log
    return env


@dataclass
class SetupJob:
    """Runs ``steps`` on a thread; the UI reads ``states``, ``step``, ``title``, ``lines``, ``error``.

    env_dir: when given, the steps must build ``partial_dir(env_dir)``; after the last one the
    stamp is written and the result replaces ``env_dir``. log_path: the full log (overwritten).
    env: the commands' environment (default ``child_env()``). stamp: extra facts for the stamp.
    """

    steps: list[engine_env.Step]
    env_dir: Path | None = None
    log_path: Path | None = None
    env: dict[str, str] | None = None
    stamp: dict = field(default_factory=dict)
    states: list[str] = field(default_factory=list)
    step: int = 0
    title: str = ""
    lines: list[str] = field(default_factory=list)
    error: str = ""
    offline: bool = False
    done: bool = False
    seconds: float = 0.0
    _proc: subprocess.Popen | None = None
    _cancelled: bool = False

    def __post_init__(self):
        self.steps = [s if isinstance(s, engine_env.Step) else engine_env.Step(s[0], tuple(s[1])) for s in self.steps]
        self.states = ["pending"] * len(self.steps)

    def start(self) -> "SetupJob":
        threading.Thread(target=self._run, name="gen3dface-setup", daemon=True).start()
        return self

    def wait(self, timeout: float | None = None) -> "SetupJob":
        t0 = time.monotonic()
        while not self.done and (timeout is None or time.monotonic() - t0 < timeout):
            time.sleep(0.05)
        return self

    @property
    def factor(self) -> float:
        return sum(s == "done" for s in self.states) / max(1, len(self.steps))

    def cancel(self) -> None:
        """Stop now: the running command's whole process group, then no further step."""
        self._cancelled = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            threading.Thread(target=self._kill_later, args=(proc,), daemon=True).start()

    @staticmethod
    def _kill_later(proc: subprocess.Popen) -> None:
        try:
            proc.wait(KILL_AFTER)
        except subprocess.TimeoutExpired:
            _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))

    def _run(self) -> None:
        t0 = time.monotonic()
        logf = None
        try:
            if self.log_path is not None:
                Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
                if Path(self.log_path).exists():  # keep the previous set-up's log beside the new one
                    Path(self.log_path).replace(Path(str(self.log_path) + ".1"))
                logf = open(self.log_path, "w", encoding="utf-8", errors="replace")
            if self.env_dir is not None:
                shutil.rmtree(partial_dir(self.env_dir), ignore_errors=True)  # a cancelled or failed set-up's leftover
            for i, step in enumerate(self.steps):
                self.step, self.title = i, step.title
                if self._cancelled or not self._run_step(i, step, logf):
                    return
            if self.env_dir is not None:
                self._finish(t0)
            self.step, self.title = len(self.steps), "Done"
        except OSError as exc:
            self.error = f"{self.title or 'Set up'} failed: {exc}"
            if self.step < len(self.states):
                self.states[self.step] = "failed"
        finally:
            if self._cancelled and not self.error:
                self.error = "Set up engine cancelled: the previous engine (if any) is unchanged"
            self.seconds = time.monotonic() - t0
            self._write(logf, f"== {self.error or 'done'} ({self.seconds:.1f} s)")
            if logf is not None:
                logf.close()
            self.done = True

    def _run_step(self, i: int, step: engine_env.Step, logf) -> bool:
        """Run one command; False when it failed or was cancelled (``error`` says which)."""
        self.states[i] = "running"
        self._write(logf, f"== [{i + 1}/{len(self.steps)}] {step.title}\n$ {' '.join(step.argv)}")
        log.info("%s: %s", step.title, " ".join(step.argv))
        t0 = time.monotonic()
        self._proc = proc = subprocess.Popen(list(step.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, text=True, errors="replace",
                                             env=child_env() if self.env is None else self.env, **_group_kwargs())
        if self._cancelled:  # cancel() came between the check and Popen
            _signal_group(proc, signal.SIGTERM)
        output = []
        for line in proc.stdout:
            line = line.rstrip()
            output.append(line)
            self.lines = (self.lines + [line])[-8:]
            self._write(logf, line)
        rc = proc.wait()
        self._write(logf, f"-> exit {rc} ({time.monotonic() - t0:.1f} s)")
        if self._cancelled:
            self.states[i] = "cancelled"
            return False
        if rc == 0:
            self.states[i] = "done"
            return True
        self.states[i] = "failed"
        text = "\n".join(output[-200:]).lower()
        self.offline = any(hint in text for hint in NETWORK_HINTS)
        if self.offline:
            self.error = (f"{step.title}: no network (a package index could not be reached). Check the connection "
                          "and Preferences › System › Network › Allow Online Access, or install by hand")
        else:
            last = next((l for l in reversed(output) if l.strip()), "")
            self.error = f"{step.title} failed (exit {rc}): {last}"
        return False

    def _finish(self, t0: float) -> None:
        """Stamp the built environment and swap it in place of the old one."""
        built, env_dir = partial_dir(self.env_dir), Path(self.env_dir)
        stamp = dict(self.stamp, steps=[s.title for s in self.steps], seconds=round(time.monotonic() - t0, 1),
                     finished=time.strftime("%Y-%m-%dT%H:%M:%S"), device=last_json(self.lines))
        (built / engine_env.STAMP).write_text(json.dumps(stamp, indent=1))
        old = env_dir.with_name(env_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if env_dir.exists():
            env_dir.rename(old)
        built.rename(env_dir)
        shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _write(logf, text: str) -> None:
        if logf is not None:
            logf.write(text + "\n")
            logf.flush()


def last_json(lines: list[str]) -> dict:
    """The last line that is a JSON object (the check step's device report), else {}."""
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except json.JSONDecodeError:
                continue
            return found if isinstance(found, dict) else {}
    return {}


def read_stamp(env_dir: str | Path) -> dict:
    """The stamp of a finished environment ({} when there is none)."""
    try:
        return json.loads(Path(env_dir, engine_env.STAMP).read_text())
    except (OSError, ValueError):
        return {}


def log_tail(path: str | Path, n: int = 5) -> list[str]:
    """The last ``n`` non-empty lines of a log file ([] when there is none)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [l for l in lines if l.strip()][-n:]


def _group_kwargs() -> dict:
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True)
        else:
            os.killpg(proc.pid, sig)
    except (OSError, ProcessLookupError):
        pass


#: Folder names inside the extension's user folder.
ENV_NAME, TOOLS_NAME, LOG_NAME = "engine-env", "tools", "setup.log"


def make_job(base_python: str, user_dir: str | Path, package_dir: str | Path, torch_override: str = "",
             env: dict[str, str] | None = None) -> SetupJob:
    """The add-on's Set up engine: uv (installed into ``user_dir/tools`` by ``base_python`` when
    missing), then ``user_dir/engine-env`` with Python 3.11, torch by ``engine_env.choose_torch``
    and the engine from ``package_dir``; the log in ``user_dir/setup.log``.
    Raises engine_env.TorchChoiceError for an unusable torch override."""
    user_dir = Path(user_dir)
    env_dir, tools = user_dir / ENV_NAME, user_dir / TOOLS_NAME
    uv = engine_env.uv_in(tools)
    torch = engine_env.choose_torch(torch_override)
    steps = engine_env.plan(base_python, partial_dir(env_dir), package_dir, torch, uv,
                            install_uv=not uv.exists(), tools_dir=tools)
    return SetupJob(steps, env_dir=env_dir, log_path=user_dir / LOG_NAME, env=env,
                    stamp={"torch": torch.reason, "torch_kind": torch.kind, "package_dir": str(package_dir)})
