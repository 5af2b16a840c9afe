"""gen3dface batch: sharding, resume, failures counted, runs held by another process skipped."""
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.batch import list_photos, parse_shard, run_names, shard
from engine.errors import EXIT_DISK_FULL, BadInput
from tests.engine.cli_helpers import run_cli
from tests.engine.test_rundir_shared import in_small_tmpfs, kill, needs_tmpfs, start_holder


def test_shards_cover_every_photo_once():
    photos = [Path(f"p{i:02d}.png") for i in range(11)]
    for n in (1, 2, 3, 4, 11, 13):
        parts = [shard(photos, i, n) for i in range(n)]
        flat = [p for part in parts for p in part]
        assert sorted(flat) == photos and len(flat) == len(set(flat)), n
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard("3/4") == (3, 4)
    assert parse_shard("auto", {"RANK": "2", "WORLD_SIZE": "8"}) == (2, 8)  # accelerate launch / torchrun
    assert parse_shard("auto", {}) == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(BadInput):
            parse_shard(bad)


def test_photo_names_and_folder(tmp_path):
    for name in ("b.jpg", "a.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    photos = list_photos(tmp_path)
    assert [p.name for p in photos] == ["a.jpg", "a.png", "b.jpg"]
    assert list(run_names(photos).values()) == ["a.jpg", "a.png", "b"]
    with pytest.raises(BadInput) as err:
        list_photos(tmp_path / "none")
    assert str(tmp_path / "none") in err.value.message


@pytest.mark.slow
def test_batch_resumes_counts_failures_and_skips_held_runs(tmp_path):
    from skimage import data

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "a.png")
    (photos / "bad.png").write_bytes(b"not an image")
    Image.fromarray(data.astronaut()).save(photos / "done.png")
    Image.fromarray(data.astronaut()).save(photos / "held.png")
    (out / "done").mkdir(parents=True)
    (out / "done" / "result.json").write_text("{}")  # a complete run from an earlier batch
    holder, _ = start_holder(out / "held")  # another worker is writing this one right now
    try:
        first = run_cli("batch", photos, "-o", out, "--resolution", "128", "--views", "2", "--json")
    finally:
        kill(holder)
    assert first.code == 1, first.stderr[-2000:]
    summary = json.loads(first.stdout)
    assert summary["counts"] == {"done": 1, "skipped": 2, "failed": 1}
    assert summary["done"][0]["run"] == str(out / "a") and (out / "a" / "result.json").is_file()
    assert str(photos / "bad.png") in summary["failed"][0]["error"]
    reasons = {Path(s["photo"]).name: s["reason"] for s in summary["skipped"]}
    assert reasons["done.png"] == "complete" and "being written by process" in reasons["held.png"]
    assert "FAILED" in first.stderr and "Traceback" not in first.stderr
    # Resume with the other workers' shard layout: shard 0/2 has a.png and done.png (complete) → nothing to do.
    again = run_cli("batch", photos, "-o", out, "--shard", "0/2", "--json")
    assert again.code == 0 and json.loads(again.stdout)["counts"] == {"done": 0, "skipped": 2, "failed": 0}


@needs_tmpfs
@pytest.mark.slow
def test_batch_stops_on_a_full_disk_with_exit_4(tmp_path):
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(data.astronaut()).save(photos / name)
    out = in_small_tmpfs(tmp_path / "m", 300, sys.executable, "-m", "engine", "batch", photos, "-o",
                         tmp_path / "m", "--resolution", "256", "--views", "4", "--json")
    report, listing = out.stdout.split("--listing--")
    summary = json.loads(report)
    assert out.returncode == EXIT_DISK_FULL and summary["disk_full"], out.stderr[-2000:]
    assert summary["counts"] == {"done": 0, "skipped": 0, "failed": 1}  # b.png was not tried
    assert "no space left" in summary["failed"][0]["error"] and listing.strip() == ""


@pytest.mark.slow
def test_two_batch_processes_over_the_same_folder_write_each_run_once(tmp_path):
    import os
    import subprocess

    from skimage import data

    from tests.engine.cli_helpers import ROOT

    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "a.png")
    Image.fromarray(data.astronaut()[:, ::-1].copy()).save(photos / "b.png")
    command = [sys.executable, "-m", "engine", "batch", photos, "-o", out, "--resolution", "128", "--views", "2",
               "--json"]
    workers = [subprocess.Popen(list(map(str, command)), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}) for _ in range(2)]
    summaries = [json.loads(w.communicate(timeout=600)[0]) for w in workers]
    assert [w.returncode for w in workers] == [0, 0]
    done = sorted(Path(d["run"]).name for s in summaries for d in s["done"])
    assert done == ["a", "b"]  # each run made by exactly one of the two
    assert sum(s["counts"]["skipped"] for s in summaries) == 2
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]  # no temporaries, no locks, nothing half
