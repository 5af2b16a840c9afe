"""The ``gen3dface`` command (same as ``python -m engine``).

Subcommands: ``generate`` (photo → head), ``demo`` (the bundled portrait), ``recon``
(views + cameras → textured mesh), ``bake`` (a run's views → your mesh's texture), ``doctor``
(what this engine can use); tools with their own handler: ``batch`` (engine.batch), ``eval``
(engine.eval), ``dataset prune`` (engine.dataset). With ``--json``
stdout carries protocol events only; otherwise a progress bar goes to stderr. Exit codes
follow docs/architecture.md: 0 done, 2 bad input or usage, 3 model file missing, 4 disk full or
quota exceeded, 130 cancelled, 1 internal error (traceback on stderr).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from . import __version__, protocol
from .context import RunContext
from .errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, DiskFull, Gen3DError
from .reporting import JsonLines, ProgressBar
from .rundir import is_disk_full

log = logging.getLogger("engine")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (docs/architecture.md)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="JSON-lines events on stdout (for the add-on)")
    p.add_argument("--models-dir", type=Path, default=None, help="folder with FLAME/ and diffusion weights "
                   "(default: $GEN3DFACE_MODELS or ~/.local/share/gen3dface/models)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device")
    p.add_argument("--overwrite", action="store_true", help="replace a complete run at the output path")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")


def _generate_options(p: argparse.ArgumentParser, default_output: Path | None = None) -> None:
    p.add_argument("-o", "--output", type=Path, required=default_output is None, default=default_output,
                   help="run directory to create" + (f" (default {default_output})" if default_output else ""))
    p.add_argument("--backend", default="auto", choices=("auto", "projection", "diffusion"))
    p.add_argument("--views", type=int, default=None,
                   help="number of views around the head (default 16; diffusion: the model's count)")
    p.add_argument("--resolution", type=int, default=512, help="working size of crop and views in pixels")
    p.add_argument("--steps", type=int, default=50, help="diffusion DDIM steps")
    p.add_argument("--guidance", type=float, default=2.0, help="diffusion classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recon", default="auto", choices=("auto", "on", "off"),
                   help="neural surface reconstruction (auto: on for diffusion, off for projection)")
    p.add_argument("--recon-steps", type=int, default=None, help="NeuS optimisation steps")
    p.add_argument("--recon-resolution", type=int, default=None, help="marching-cubes resolution of recon")
    p.add_argument("--texture-size", type=int, default=None, help="texture size of the recon mesh (default 2048)")
    p.add_argument("--weights", type=Path, default=None, help="diffusion model folder")
    p.add_argument("--uv", default="xatlas", choices=("xatlas", "template"),
                   help="UV layout of the recon mesh: xatlas charts or the template's fixed layout")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="gen3dface", description="One portrait photo → textured 3D head with cameras.")
    parser.add_argument("--version", action="version", version=f"gen3dface {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    p = sub.add_parser("generate", help="photo → textured head, views and cameras")
    p.add_argument("photo", type=Path, nargs="+",
                   help="one or more photos of one person (any order; the first is the input view; at most 16)")
    p.add_argument("--skip-bad", action="store_true", help="skip photos without a usable face (warning) instead of failing")
    p.add_argument("--shared-expression", action="store_true", help="fit one expression to all photos")
    _generate_options(p)
    p = sub.add_parser("demo", help="generate from the bundled portrait (skimage's astronaut, public domain)")
    _generate_options(p, default_output=Path("gen3dface-demo"))
    p = sub.add_parser("recon", help="views + transforms.json → textured mesh (NeuS)")
    p.add_argument("transforms", type=Path, help="nerfstudio transforms.json")
    p.add_argument("-o", "--output", type=Path, required=True, help="run directory to create")
    p.add_argument("--prior", type=Path, default=None, help="mesh to initialise the surface from")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps")
    p.add_argument("--resolution", type=int, default=None, help="marching-cubes resolution")
    p.add_argument("--texture-size", type=int, default=None, help="texture size in pixels (default 2048)")
    p.add_argument("--uv", default="xatlas", choices=("xatlas", "template"),
                   help="UV layout: xatlas charts, or the --prior mesh's own UVs transferred onto the surface")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    from .bake import add_parser as add_bake_parser

    _common(add_bake_parser(sub))
    sub.add_parser("warmup", help="build the template and texture caches once (the first run is then fast)")
    p = sub.add_parser("doctor", help="JSON report of Python, torch, devices, mediapipe and model files")
    p.add_argument("--models-dir", type=Path, default=None)
    from .batch import add_parser as add_batch  # tools with their own handler (args.handler)
    from .dataset.prune import add_parser as add_dataset
    from .eval.command import add_parser as add_eval

    add_batch(sub, _generate_options)
    add_eval(sub)
    add_dataset(sub)  # creates the `dataset` group (prune); build/synth and train join it
    from .dataset.command import add_parser as add_dataset_build
    from .train.command import add_parser as add_train

    add_dataset_build(sub, _common)
    add_train(sub, _common)
    return parser


def _watch_cancel(ctx: RunContext) -> None:
    """SIGTERM / SIGINT and a ``cancel`` line on stdin stop the run at the next step boundary."""
    def on_signal(signum, frame):
        log.warning("signal %d: cancelling at the next step", signum)
        ctx.cancel()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if sys.stdin is not None and not sys.stdin.closed and not sys.stdin.isatty():
        def read_stdin():
            try:
                for event in protocol.read_events(sys.stdin):
                    if isinstance(event, protocol.Cancel):
                        ctx.cancel()
                        return
            except (OSError, ValueError):
                return

        threading.Thread(target=read_stdin, name="gen3dface-stdin", daemon=True).start()


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _demo_photo(output: Path) -> Path:
    """Write the bundled portrait next to the run directory and return its path."""
    from PIL import Image
    from skimage import data

    path = Path(os.path.abspath(output)).parent / "astronaut.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        Image.fromarray(data.astronaut()).save(path)
    return path


def _run(args, ctx: RunContext) -> dict:
    from .paths import default_models_dir

    ctx.models_dir = args.models_dir or default_models_dir()
    ctx.device = _device(args.device)
    if args.command == "recon":
        from .reconstruct import recon_command

        return recon_command(args, ctx)
    if args.command == "bake":
        from .bake import bake_command

        return bake_command(args, ctx)
    if args.command in ("dataset", "train"):  # their own modules (issue 11)
        from .dataset.command import run as dataset_run
        from .train.command import run as train_run

        return (dataset_run if args.command == "dataset" else train_run)(args, ctx)
    from .pipeline import GenerateConfig, generate

    photo = _demo_photo(args.output) if args.command == "demo" else args.photo
    config = GenerateConfig(backend=args.backend, views=args.views, resolution=args.resolution, steps=args.steps,
                            guidance=args.guidance, seed=args.seed, recon=args.recon, recon_steps=args.recon_steps,
                            recon_resolution=args.recon_resolution, texture_size=args.texture_size,
                            uv_layout=args.uv,
                            weights=args.weights, skip_bad=getattr(args, "skip_bad", False),
                            shared_expression=getattr(args, "shared_expression", False))
    return generate(photo, args.output, config, ctx, overwrite=args.overwrite)


def _silence_native_stderr() -> None:
    """Keep native libraries' chatter (TensorFlow Lite, absl in mediapipe) off the terminal.

    They write to file descriptor 2 directly, so Python-level filters cannot catch them:
    Python's own stderr (progress, logs, tracebacks) moves to a duplicate of fd 2 and fd 2
    itself points at /dev/null. ``-v`` keeps everything.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(saved, "w", buffering=1, encoding="utf-8", errors="replace")
    except OSError:  # no usable fd 2 (embedded interpreters): leave things as they are
        return


def _tool(args) -> int:
    """A subcommand that is not one run (eval, batch, dataset): its handler returns the exit code."""
    if not args.verbose:
        _silence_native_stderr()
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except Gen3DError as exc:
        print(f"gen3dface: {exc.message}", file=sys.stderr)
        return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "warmup":
        from .warmup import warm_caches

        print(json.dumps(warm_caches()))
        return EXIT_OK
    if args.command == "doctor":
        from .doctor import report

        found = report(args.models_dir)
        print(json.dumps(found, indent=1))
        if found["device"]["warning"]:  # the JSON is for programs; say it to the person too
            print(f"warning: {found['device']['warning']}", file=sys.stderr)
        return EXIT_OK
    if getattr(args, "handler", None) is not None:
        return _tool(args)
    if not args.verbose:
        _silence_native_stderr()
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    emit = JsonLines() if args.json else ProgressBar()
    ctx = RunContext(emit=emit)
    _watch_cancel(ctx)
    emit(protocol.Start(command=args.command, output_dir=str(Path(os.path.abspath(args.output))),
                        engine_version=__version__, pid=os.getpid()))
    try:
        try:
            manifest = _run(args, ctx)
        except OSError as exc:  # a full disk outside a run directory (e.g. the demo's photo)
            if not is_disk_full(exc):
                raise
            raise DiskFull(exc.filename or args.output, exc) from None
    except Gen3DError as exc:
        emit(protocol.Error(code=exc.code, message=exc.message, exit_code=exc.exit_code))
        if args.json:  # the bar already printed it for humans
            print(f"gen3dface: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the one place internal errors become exit 1
        traceback.print_exc(file=sys.stderr)
        emit(protocol.Error(code="internal", message=f"internal error: {type(exc).__name__}: {exc}".splitlines()[0],
                            exit_code=EXIT_INTERNAL))
        return EXIT_INTERNAL
    run_dir = Path(manifest["run_dir"])
    outputs = {k: str(run_dir / v) for k, v in manifest["outputs"].items()}
    emit(protocol.Result(output_dir=str(run_dir), manifest=str(run_dir / manifest.get("manifest", "result.json")),
                         outputs=outputs))
    return EXIT_OK


def limit_blas_threads(env) -> None:
    """One OpenBLAS thread for numpy unless the user set one (``env``: ``os.environ``; before numpy loads).

    The engine makes thousands of small numpy linear-algebra calls (camera inverses, 3×3
    solves) between torch's work; OpenBLAS's second thread busy-waits between them and takes
    the other core: on 2 cores a four-photo run spent 29.0 s CPU with it and 15.3 s without
    (19.35 → 14.69 s wall, ``bench/prior.py --photos 4``; one photo and the bake unchanged).
    torch keeps its own threads."""
    env.setdefault("OPENBLAS_NUM_THREADS", "1")


def entry() -> None:
    """Console entry point: run ``main`` and leave at once.

    Python's own shutdown with torch, diffusers and mediapipe loaded takes 2–4 s, which a
    cancelled run would spend after it has already reported exit 130. Everything that
    matters is done by then: the run directory is committed or discarded and the streams
    are flushed here.
    """
    limit_blas_threads(os.environ)
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
