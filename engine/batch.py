"""``gen3dface batch PHOTO_DIR -o OUT_DIR``: many photos in one process, safe on a render farm.

Every photo of the folder (sorted by name) becomes the run ``OUT_DIR/<photo stem>``, made by
the same ``generate`` as one photo, in one process, so imports, mediapipe's graphs and the
diffusion model (``RunContext.models``) are loaded once. Resumable: a complete run is
skipped. ``--shard I/N`` (0-based; ``auto`` reads ``RANK``/``WORLD_SIZE`` as set by
``accelerate launch`` or ``torchrun``) takes photos I, I+N, I+2N, … so N processes or GPUs
share the work without talking to each other; processes that overlap anyway (two workers
on one shard, a rerun while one is still going) skip a run that another holds or finished
(``rundir``'s lock and rename), so no run is written twice or half. One line per photo on
stderr; a summary on stdout (JSON with ``--json``); exit 1 when any photo failed, 130 when
cancelled, 4 when the disk filled up (the batch stops there: every later run would fail too).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .context import RunContext
from .errors import (EXIT_CANCELLED, EXIT_DISK_FULL, EXIT_INTERNAL, EXIT_OK, BadInput, Cancelled, DiskFull,
                     Gen3DError)
from .rundir import is_complete

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: BadInput codes meaning "another process has (or had) this run": not a failure of ours.
TAKEN = ("output_busy", "output_exists")


def parse_shard(text: str, env: dict | None = None) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 0 ≤ I < N; ``"auto"`` → ($RANK, $WORLD_SIZE) or (0, 1)."""
    env = os.environ if env is None else env
    if text == "auto":
        text = f"{env.get('RANK', env.get('LOCAL_RANK', 0))}/{env.get('WORLD_SIZE', 1)}"
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise BadInput(None, f"--shard must be I/N (e.g. 0/4) or auto, got {text!r}", "usage") from None
    if not (n >= 1 and 0 <= i < n):
        raise BadInput(None, f"--shard {text}: need 0 ≤ I < N", "usage")
    return i, n


def list_photos(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name; ``BadInput`` when it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput(folder, "photo folder not found" if not folder.exists() else "not a folder", "not_found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def run_names(photos: list[Path]) -> dict[Path, str]:
    """Run directory name of each photo: its stem, or ``stem.ext`` when two photos share a stem."""
    stems: dict[str, int] = {}
    for p in photos:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else p.name for p in photos}


def shard(photos: list[Path], index: int, count: int) -> list[Path]:
    """Photos index, index+count, …: N shards cover every photo exactly once."""
    return photos[index::count]


@dataclass
class Summary:
    """What one batch process did; ``done``/``skipped``/``failed`` hold one dict per photo."""

    shard: str
    done: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    cancelled: bool = False
    disk_full: bool = False

    def to_dict(self) -> dict:
        counts = {"done": len(self.done), "skipped": len(self.skipped), "failed": len(self.failed)}
        return {"shard": self.shard, "counts": counts, "cancelled": self.cancelled, "disk_full": self.disk_full,
                "done": self.done, "skipped": self.skipped, "failed": self.failed}


def run_batch(photo_dir: Path, out_dir: Path, config, ctx_factory, shard_spec: str = "0/1",
              overwrite: bool = False) -> Summary:
    """Generate every photo of this shard into ``out_dir``; ``ctx_factory()`` gives each run a context."""
    from .pipeline import generate

    index, count = parse_shard(shard_spec)
    photos = list_photos(photo_dir)
    names = run_names(photos)
    summary = Summary(f"{index}/{count}")
    mine = shard(photos, index, count)
    log.info("shard %d/%d: %d of %d photos", index, count, len(mine), len(photos))
    for k, photo in enumerate(mine):
        final = Path(out_dir) / names[photo]
        entry = {"photo": str(photo), "run": str(final)}
        if is_complete(final) and not overwrite:
            summary.skipped.append({**entry, "reason": "complete"})
            _say(k, len(mine), photo, "skipped (already complete)")
            continue
        t0 = time.perf_counter()
        try:
            generate(photo, final, config, ctx_factory(), overwrite=overwrite)
        except Cancelled:
            summary.cancelled = True
            _say(k, len(mine), photo, "cancelled")
            break
        except DiskFull as exc:  # every later run would fail the same way: stop here
            _failed(summary, entry, exc.message, exc.exit_code, k, len(mine), photo)
            summary.disk_full = True
            break
        except BadInput as exc:
            if exc.code in TAKEN:
                summary.skipped.append({**entry, "reason": exc.message})
                _say(k, len(mine), photo, f"skipped ({exc.message})")
                continue
            _failed(summary, entry, exc.message, exc.exit_code, k, len(mine), photo)
            continue
        except Gen3DError as exc:
            _failed(summary, entry, exc.message, exc.exit_code, k, len(mine), photo)
            continue
        except Exception as exc:  # noqa: BLE001 - one photo's internal error must not stop the others
            log.exception("internal error on %s", photo)
            _failed(summary, entry, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0], EXIT_INTERNAL,
                    k, len(mine), photo)
            continue
        seconds = round(time.perf_counter() - t0, 3)
        summary.done.append({**entry, "seconds": seconds})
        _say(k, len(mine), photo, f"done in {seconds:.1f} s")
    return summary


def _failed(summary: Summary, entry: dict, message: str, code: int, k: int, n: int, photo: Path) -> None:
    summary.failed.append({**entry, "error": message, "exit_code": code})
    _say(k, n, photo, f"FAILED: {message}")


def _say(k: int, n: int, photo: Path, what: str) -> None:
    print(f"[{k + 1}/{n}] {photo.name}: {what}", file=sys.stderr, flush=True)


def add_parser(sub, generate_options) -> None:
    p = sub.add_parser("batch", help="every photo of a folder → OUT_DIR/<stem>, models loaded once, resumable")
    p.add_argument("photo_dir", type=Path)
    generate_options(p)
    p.add_argument("--shard", default="0/1", help="I/N: this process takes photos I, I+N, … (0-based); "
                   "auto: $RANK/$WORLD_SIZE (accelerate launch, torchrun)")
    p.set_defaults(handler=main)


def main(args) -> int:
    """CLI handler: the summary on stdout, exit 1 if any photo failed, 130 if cancelled."""
    from .cli import _device, _watch_cancel
    from .paths import default_models_dir
    from .pipeline import GenerateConfig

    config = GenerateConfig(backend=args.backend, views=args.views, resolution=args.resolution, steps=args.steps,
                            guidance=args.guidance, seed=args.seed, recon=args.recon, recon_steps=args.recon_steps,
                            recon_resolution=args.recon_resolution, texture_size=args.texture_size,
                            weights=args.weights)
    first = RunContext(models_dir=args.models_dir or default_models_dir(), device=_device(args.device))
    _watch_cancel(first)  # one cancel flag and one model cache for every run of the batch

    def ctx_factory() -> RunContext:
        return RunContext(models_dir=first.models_dir, device=first.device, cancel_event=first.cancel_event,
                          models=first.models)

    summary = run_batch(args.photo_dir, args.output, config, ctx_factory, args.shard, args.overwrite)
    data = summary.to_dict()
    if args.json:
        print(json.dumps(data))
    else:
        c = data["counts"]
        print(f"shard {summary.shard}: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed")
        for f in summary.failed:
            print(f"  failed: {f['error']}")
    if summary.cancelled:
        return EXIT_CANCELLED
    if summary.disk_full:
        return EXIT_DISK_FULL
    return EXIT_INTERNAL if summary.failed else EXIT_OK
