"""``gen3dface train DATASET -o OUT``: the CLI of the training loop (works under ``accelerate launch``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.context import RunContext
from engine.errors import BadInput

from .config import TrainConfig


def add_parser(sub, common) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train the multi-view model on a dataset (accelerate; resumes)")
    p.add_argument("dataset", type=Path, help="a folder made by `gen3dface dataset build`")
    p.add_argument("-o", "--output", type=Path, required=True, help="training folder (checkpoints/, logs/, validation/)")
    p.add_argument("--config", type=Path, default=None, help="JSON file of TrainConfig fields (engine/train/config.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one TrainConfig field (JSON value), e.g. --set max_steps=1000")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    common(p)
    return p


def parse_config(path: Path | None, overrides: list[str]) -> TrainConfig:
    """TrainConfig from a JSON file plus KEY=VALUE overrides; BadInput (exit 2) naming what is wrong."""
    data = {}
    if path is not None:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(path, f"not a readable JSON config ({exc})") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise BadInput(None, f"--set expects KEY=VALUE, got {item!r}", "usage")
        try:
            data[key] = json.loads(value)
        except ValueError:
            data[key] = value  # a bare string
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise BadInput(path, str(exc), "usage") from None


def run(args, ctx: RunContext) -> dict:
    from engine.dataset.format import DatasetError

    from .loop import train

    cfg = parse_config(args.config, args.set)
    try:
        result = train(args.dataset, args.output, cfg, ctx, resume=not args.no_resume)
    except DatasetError as exc:
        raise BadInput(exc.path, exc.reason) from None
    ck = result.checkpoint
    return {"run_dir": str(args.output), "outputs": {"checkpoint": str(ck.relative_to(args.output)) if ck else "."},
            "step": result.step, "loss": result.loss}
