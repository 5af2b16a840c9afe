"""Contact sheet of one or more runs: per run, the input crop(s) then its views, one row each.

    python scripts/contact_sheet.py RUN [RUN ...] [-o sheet.png] [--views 8] [--tile 192]

Each row starts with the run's input crop (``input/crop.png``) and those of further photos
(``extra/NN/input/crop.png``), then ``--views`` of its views evenly picked from
``transforms.json`` (all with ``--views 0``), on a grey background, labelled with the run's
name, backend, timings and warnings count from ``result.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (128, 128, 128)


def _tile(path: Path, tile: int) -> np.ndarray:
    im = Image.open(path).convert("RGBA").resize((tile, tile), Image.LANCZOS)
    a = np.asarray(im, np.float32) / 255
    rgb = a[..., :3] * a[..., 3:] + np.asarray(BACKGROUND, np.float32) / 255 * (1 - a[..., 3:])
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def run_row(run: Path, n_views: int, tile: int) -> tuple[np.ndarray, str]:
    """(RGB row [tile, k·tile, 3], label) of one run; ValueError naming what is missing."""
    meta_path = run / "transforms.json"
    if not meta_path.is_file():
        raise ValueError(f"{run}: no transforms.json (not a finished run directory)")
    frames = json.loads(meta_path.read_text())["frames"]
    if n_views and len(frames) > n_views:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, n_views).round().astype(int)]
    crops = [run / "input" / "crop.png"] + sorted((run / "extra").glob("*/input/crop.png"))
    tiles = [_tile(p, tile) for p in crops if p.is_file()]
    tiles += [_tile(run / f["file_path"], tile) for f in frames]
    label = run.name
    result = run / "result.json"
    if result.is_file():
        r = json.loads(result.read_text())
        total = sum(r.get("timings", {}).values())
        label += f"  {r.get('backend', '?')}  {len(r.get('photos', [0]))} photo(s)  {total:.1f} s in stages" \
                 f"  {len(r.get('warnings', []))} warning(s)"
    return np.concatenate(tiles, 1), label


def sheet(runs: list[Path], n_views: int = 8, tile: int = 192) -> Image.Image:
    """All runs' rows stacked (rows padded to the widest), each under a one-line label."""
    rows = [run_row(Path(r), n_views, tile) for r in runs]
    width = max(r.shape[1] for r, _ in rows)
    label_h = 18
    out = Image.new("RGB", (width, len(rows) * (tile + label_h)), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for i, (row, label) in enumerate(rows):
        y = i * (tile + label_h)
        draw.text((4, y + 3), label, fill=(255, 255, 255))
        out.paste(Image.fromarray(row), (0, y + label_h))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("-o", "--output", type=Path, default=Path("contact_sheet.png"))
    p.add_argument("--views", type=int, default=8, help="views per run (0: all)")
    p.add_argument("--tile", type=int, default=192, help="tile side in pixels")
    args = p.parse_args(argv)
    try:
        image = sheet(args.runs, args.views, args.tile)
    except (ValueError, OSError) as exc:
        print(f"contact_sheet.py: {exc}", file=sys.stderr)
        return 2
    image.save(args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
