"""Run directories on shared storage: stale temporaries, umask, locks, a full disk (real, no mocks)."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from engine import claims
from engine.errors import EXIT_DISK_FULL, BadInput, DiskFull
from engine.rundir import RunDir, is_complete
from tests.engine.cli_helpers import ROOT, Completed, assert_one_line_error

# A child that opens a run in argv[1], says "open" and waits to be killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from engine.rundir import RunDir
    run = RunDir(sys.argv[1])
    tmp = run.open()
    (tmp / "half.png").write_bytes(b"x" * 1000)
    print("open", tmp, flush=True)
    time.sleep(60)
""")


def start_holder(final):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(final)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = child.stdout.readline().split()
    assert line and line[0] == "open", line
    return child, line[1]


def kill(child):
    child.send_signal(signal.SIGKILL)
    child.wait(10)


def test_sigkilled_run_is_swept_by_the_next_run(tmp_path):
    child, tmp = start_holder(tmp_path / "a")
    kill(child)
    assert os.path.isdir(tmp) and os.path.basename(tmp).startswith(".a.tmp-")
    run = RunDir(tmp_path / "b")  # another run into the same parent sweeps it
    run.open()
    run.commit({})
    assert not os.path.exists(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.lock", "b"]  # the lock file is inert


def test_live_and_foreign_temporaries_are_kept(tmp_path):
    child, live = start_holder(tmp_path / "a")
    try:
        foreign = tmp_path / f".c.tmp-{child.pid + 1}-123-some-other-host-0123abcd"
        foreign.mkdir()
        run = RunDir(tmp_path / "b")
        run.open()
        run.commit({})
        assert os.path.isdir(live) and foreign.is_dir()
    finally:
        kill(child)


def test_reused_pid_is_told_apart_by_its_start_time(tmp_path):
    # Our own PID is alive, but a temporary that claims a different start time was made by an
    # earlier process that had the same PID.
    reused = tmp_path / f".x.tmp-{os.getpid()}-1-{claims.host_token()}-0123abcd"
    ours = tmp_path / f".y.tmp-{claims.owner_token()}-0123abcd"
    reused.mkdir()
    ours.mkdir()
    assert claims.stale_temporaries(tmp_path) == [reused]


def test_second_writer_of_the_same_run_is_refused_while_the_first_lives(tmp_path):
    child, tmp = start_holder(tmp_path / "run")
    try:
        with pytest.raises(BadInput) as err:
            RunDir(tmp_path / "run").open()
        assert err.value.code == "output_busy" and f"process {child.pid}" in err.value.message
    finally:
        kill(child)
    run = RunDir(tmp_path / "run")  # the kernel dropped the dead holder's lock
    run.open()
    run.commit({"n": 2})
    assert is_complete(tmp_path / "run") and not os.path.exists(tmp)


def test_a_run_completed_meanwhile_is_never_replaced(tmp_path):
    first, second = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    (first.open() / "who").write_text("first")
    first.lock.release()  # as on an NFS mount without the lock service
    (second.open() / "who").write_text("second")
    second.commit({})
    with pytest.raises(BadInput) as err:
        first.commit({})
    assert err.value.code == "output_exists"
    first.discard()
    assert (tmp_path / "run" / "who").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o002, 0o775), (0o077, 0o700)])
def test_run_directory_follows_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        run = RunDir(tmp_path / "run")
        run.open()
        final = run.commit({})
    finally:
        os.umask(old)
    assert final.stat().st_mode & 0o777 == mode


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a user namespace here")


def in_small_tmpfs(mount, size_kb: int, *command, after="ls -A {m}"):
    """Run ``command`` with a real, small tmpfs mounted at ``mount`` (own mount namespace), then ``after``."""
    mount.mkdir()
    script = (f'mount -t tmpfs -o size={size_kb}k tmpfs {mount} && "$@"; code=$?; echo "--listing--"; '
              + after.format(m=mount) + '; exit $code')
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *map(str, command)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@needs_tmpfs
def test_full_disk_is_disk_full_and_leaves_nothing(tmp_path):
    fill = textwrap.dedent("""
        import sys
        from engine.errors import DiskFull
        from engine.rundir import RunDir
        try:
            with RunDir(sys.argv[1] + "/run") as tmp:
                (tmp / "big.bin").write_bytes(b"x" * 4_000_000)
        except DiskFull as exc:
            print("DiskFull", exc.exit_code, exc.message)
    """)
    out = in_small_tmpfs(tmp_path / "m", 256, sys.executable, "-c", fill, tmp_path / "m")
    report, listing = out.stdout.split("--listing--")
    assert report.startswith(f"DiskFull {EXIT_DISK_FULL} {tmp_path / 'm' / 'run'}: no space left"), out
    assert listing.strip() == "", listing  # no temporary, no lock file


@needs_tmpfs
@pytest.mark.slow
def test_generate_on_a_full_disk_exits_4_in_one_line(tmp_path, portrait_path):
    out = in_small_tmpfs(tmp_path / "m", 300, sys.executable, "-m", "engine", "generate", portrait_path,
                         "-o", tmp_path / "m" / "run", "--resolution", "256", "--views", "4")
    listing = out.stdout.split("--listing--")[1]
    result = Completed(out.returncode, "", out.stderr)
    assert_one_line_error(result, str(tmp_path / "m" / "run"), "no space left", code=EXIT_DISK_FULL)
    assert listing.strip() == "", listing


def test_disk_full_message_names_the_path():
    err = DiskFull("/farm/out/run", OSError(28, "No space left on device"))
    assert err.exit_code == 4 and err.message.startswith("/farm/out/run: no space left on device")
    assert "quota" in DiskFull("/x", OSError(122, "Disk quota exceeded")).message
