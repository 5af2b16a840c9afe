"""Run directories appear only when complete."""
import os

import pytest

from engine.errors import BadInput
from engine.rundir import RunDir, is_complete


def test_commit_renames_into_place(tmp_path):
    run = RunDir(tmp_path / "run")
    tmp = run.open()
    assert tmp.parent == tmp_path and tmp.name.startswith(".run.tmp-")
    (tmp / "mesh").mkdir()
    assert not (tmp_path / "run").exists()
    final = run.commit({"ok": True})
    assert final == tmp_path / "run" and is_complete(final) and (final / "mesh").is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_discard_leaves_nothing(tmp_path):
    run = RunDir(tmp_path / "run")
    (run.open() / "partial.png").write_bytes(b"x")
    run.discard()
    assert list(tmp_path.iterdir()) == []


def test_existing_complete_run_needs_overwrite(tmp_path):
    first = RunDir(tmp_path / "run")
    first.open()
    first.commit({"n": 1})
    with pytest.raises(BadInput) as err:
        RunDir(tmp_path / "run").check()
    assert err.value.code == "output_exists" and "--overwrite" in err.value.message
    second = RunDir(tmp_path / "run", overwrite=True)
    second.open()
    second.commit({"n": 2})
    assert (tmp_path / "run" / "result.json").read_text().find('"n": 2') >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("not a directory")
    with pytest.raises(BadInput) as err:
        RunDir(target).open()
    assert err.value.exit_code == 2 and str(target) in err.value.message and "file" in err.value.message


def test_non_empty_foreign_directory_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.jpg").write_bytes(b"x")
    with pytest.raises(BadInput) as err:
        RunDir(tmp_path / "photos", overwrite=True).check()
    assert err.value.code == "output_not_empty"


def test_empty_directory_is_used(tmp_path):
    (tmp_path / "run").mkdir()
    run = RunDir(tmp_path / "run")
    run.open()
    assert is_complete(run.commit({}))


def read_only_parent(tmp_path):
    """A directory we cannot create entries in (root ignores mode bits, so use /sys then)."""
    if os.geteuid() == 0:
        return "/sys/gen3dface-readonly"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return str(ro)


def test_read_only_output_directory(tmp_path):
    target = os.path.join(read_only_parent(tmp_path), "run")
    with pytest.raises(BadInput) as err:
        RunDir(target).open()
    assert err.value.code == "output_not_writable" and "\n" not in err.value.message
