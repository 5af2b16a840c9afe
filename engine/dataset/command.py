"""``gen3dface dataset build SRC -o OUT``: the CLI of the dataset format (``build``, ``format``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.context import RunContext
from engine.errors import BadInput


def _dataset_tools(sub) -> argparse._SubParsersAction:
    """The subcommands of ``gen3dface dataset``: joins the ``dataset`` parser another module made
    (``dataset prune``, issue 12) or makes it."""
    p = sub.choices.get("dataset")
    if p is None:
        p = sub.add_parser("dataset", help="training dataset tools (docs/training.md)")
        return p.add_subparsers(dest="dataset_command", required=True, parser_class=type(p))
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))


def add_parser(sub, common) -> None:
    """Register ``dataset build`` and ``dataset synth``."""
    dsub = _dataset_tools(sub)
    b = dsub.add_parser("build", help="posed renders or textured meshes → the training format (resumable)")
    b.add_argument("source", type=Path, help="folder of <id>/transforms.json renders and/or GLB/OBJ/PLY meshes")
    b.add_argument("-o", "--output", type=Path, required=True, help="dataset folder (created or resumed)")
    b.add_argument("--from", dest="source_kind", default="auto", choices=("auto", "renders", "meshes"))
    b.add_argument("--input-view", default="front", help="'front' or a view index: the view the prior is fitted on")
    b.add_argument("--crop-size", type=int, default=256, help="side of the input crop in pixels")
    b.add_argument("--mesh-views", type=int, default=48, help="views rendered per mesh (paper: 48)")
    b.add_argument("--mesh-size", type=int, default=256, help="side of the rendered mesh views")
    b.add_argument("--mesh-up", default="y", choices=("y", "z"), help="up axis of the mesh files")
    b.add_argument("--prior-model", default="auto", choices=("auto", "flame", "template"))
    b.add_argument("--limit", type=int, default=0, help="build at most this many new items")
    common(b)
    s = dsub.add_parser("synth", help="make the synthetic multi-view head set (posed renders)")
    s.add_argument("-o", "--output", type=Path, required=True)
    s.add_argument("--identities", type=int, default=8)
    s.add_argument("--views", type=int, default=48)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    common(s)


def run(args, ctx: RunContext) -> dict:
    """Run ``dataset build`` / ``dataset synth``; the CLI's manifest-like result."""
    if args.dataset_command == "synth":
        from .synthetic import SyntheticConfig, make_set

        folders = make_set(args.output, SyntheticConfig(args.identities, args.views, args.size, args.seed))
        return {"run_dir": str(args.output), "outputs": {f.name: f.name for f in folders[:1]}, "count": len(folders)}
    from .build import BuildConfig, build
    from .format import DatasetError

    try:
        cfg = BuildConfig(source=args.source_kind, input_view=args.input_view, crop_size=args.crop_size,
                          mesh_views=args.mesh_views, mesh_size=args.mesh_size, mesh_up=args.mesh_up,
                          prior_model=args.prior_model, limit=args.limit)
        manifest = build(args.source, args.output, cfg, ctx)
    except ValueError as exc:
        if isinstance(exc, DatasetError):
            raise BadInput(exc.path, exc.reason) from None
        raise BadInput(None, str(exc), "usage") from None
    return {"run_dir": str(args.output), "outputs": {"manifest": "manifest.json"}, "counts": manifest["counts"]}
