"""engine.rundir's contract with the user, exactly: each refusal's one-line message and
code, nested output paths, the manifest's head and its input hash (found missing by
``scripts/mutation.sh rundir``). Expected values are computed here, not by the module."""
import hashlib
import json
import os
import platform

import pytest

from engine.errors import BadInput
from engine.rundir import RunDir, manifest, sha256_file


def _refusal(fn) -> BadInput:
    with pytest.raises(BadInput) as info:
        fn()
    assert info.value.exit_code == 2 and "\n" not in info.value.message
    return info.value


def test_each_refusal_names_the_path_the_reason_and_its_code(tmp_path):
    (tmp_path / "file").write_text("x")
    err = _refusal(RunDir(tmp_path / "file").check)
    assert (err.message, err.code) == (f"{tmp_path / 'file'}: output path exists and is a file, not a directory",
                                       "output_is_file")
    err = _refusal(RunDir(tmp_path / "file" / "run").check)
    assert (err.message, err.code) == (f"{tmp_path / 'file'}: parent of the output path is a file", "output_is_file")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.jpg").write_text("x")
    err = _refusal(RunDir(tmp_path / "photos").check)
    assert (err.message, err.code) == (
        f"{tmp_path / 'photos'}: output directory is not empty and is not a Gen3D Face run", "output_not_empty")
    done = RunDir(tmp_path / "done")
    done.open()
    done.commit({})
    err = _refusal(RunDir(tmp_path / "done").check)
    assert (err.message, err.code) == (
        f"{tmp_path / 'done'}: output directory already holds a complete run; pass --overwrite to replace it",
        "output_exists")


def test_nested_output_path_is_created_and_discard_is_idempotent(tmp_path):
    run = RunDir(tmp_path / "a" / "b" / "run")
    tmp = run.open()
    assert tmp.parent == tmp_path / "a" / "b"
    run.discard()
    run.discard()  # a second discard (e.g. cancel after failure) is a no-op
    assert list((tmp_path / "a" / "b").iterdir()) == [] and run.tmp is None


def test_commit_before_open_is_a_programming_error(tmp_path):
    with pytest.raises(AssertionError, match=r"^open\(\) first$"):
        RunDir(tmp_path / "run").commit({})


def test_result_json_is_readable_utf8(tmp_path):
    run = RunDir(tmp_path / "run")
    run.open()
    data = {"photo": "Zoë.png", "timings": {"prior": 1.5}}
    final = run.commit(data)
    text = (final / "result.json").read_text(encoding="utf-8")
    assert text == '{\n "photo": "Zoë.png",\n "timings": {\n  "prior": 1.5\n }\n}'  # one key per line, not escaped
    assert run.tmp is None


def test_manifest_head_and_input_hash(tmp_path):
    photo = tmp_path / "photo.png"
    data = bytes(range(256)) * 9000  # > 1 MiB: more than one read block
    photo.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(photo) == expected
    m = manifest("generate", photo, backend="projection")
    assert m["engine"] == "gen3dface" and m["command"] == "generate" and m["backend"] == "projection"
    assert m["input"] == {"path": str(photo.resolve()), "sha256": expected}
    assert m["versions"]["python"] == platform.python_version() and "torch" in m["versions"]
    json.dumps(m)  # JSON-ready


def test_unwritable_parent_names_it_and_the_os_reason(tmp_path):
    from tests.engine.test_rundir import read_only_parent

    parent = read_only_parent(tmp_path)
    with pytest.raises(OSError) as probe:  # what the OS says when we try ourselves
        os.makedirs(os.path.join(parent, "probe"))
    reason = probe.value.strerror
    err = _refusal(RunDir(f"{parent}/run").open)
    assert (err.message, err.code) == (f"{parent}: cannot write the output directory ({reason})", "output_not_writable")


def test_with_block_discards_on_failure_and_lets_the_error_through(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyError, match="boom"):
        with run as tmp:
            (tmp / "partial.png").write_bytes(b"x")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == [] and run.tmp is None
    with RunDir(tmp_path / "ok") as tmp:  # no error: the temporary directory stays for commit()
        pass
    assert tmp.is_dir()
