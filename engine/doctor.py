"""``gen3dface doctor``: what this engine can use, as one JSON report.

Every probe is guarded: doctor always exits 0 and reports failures as data, so the
add-on's "Check engine" can show what is wrong.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from . import hardware
from .paths import MODELS_ENV, cache_dir, default_models_dir
from .versions import versions


def _torch_report() -> dict:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"available": False, "error": str(exc)}
    cuda = torch.cuda.is_available()
    devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())] if cuda else ["cpu"]
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {"available": True, "version": torch.__version__, "cuda": cuda, "cuda_version": torch.version.cuda,
            "mps": mps, "devices": devices, "threads": torch.get_num_threads()}


def device_report(hw: hardware.Hardware | None = None) -> dict:
    """The device ``--device auto`` will use, torch's build, and a warning when they waste a GPU.

    The GPU is found from its driver (``engine.hardware``), not from torch: a CPU build of
    torch reports no CUDA whether or not the machine has an NVIDIA GPU.
    """
    hw = hw or hardware.detect()
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"device": None, "torch_build": None, "nvidia_gpu": hw.nvidia, "warning": f"torch: {exc}"}
    build = (f"cuda {torch.version.cuda}" if torch.version.cuda else
             f"rocm {torch.version.hip}" if getattr(torch.version, "hip", None) else "cpu")
    cuda = torch.cuda.is_available()
    device = f"cuda:0 ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
    warning = ""
    if hw.nvidia and build == "cpu":
        gpus = ", ".join(hw.nvidia_gpus) or "an NVIDIA driver is installed"
        warning = (f"NVIDIA GPU present ({gpus}) but torch {torch.__version__} is a CPU build: the engine runs "
                   "on the CPU. Set up the engine again with Torch build Auto or CUDA (GEN3DFACE_TORCH=cuda)")
    elif hw.nvidia and not cuda:
        warning = f"NVIDIA GPU present but torch ({build}) cannot use it: check the driver's CUDA version"
    return {"device": device, "torch_build": build, "nvidia_gpu": hw.nvidia, "warning": warning}


def _importable(module: str) -> dict:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "file": getattr(mod, "__file__", None)}


def _mediapipe_report() -> dict:
    report = _importable("mediapipe")
    if report["ok"]:
        import mediapipe

        root = Path(mediapipe.__file__).parent / "modules"
        models = ["face_detection/face_detection_short_range.tflite", "face_landmark/face_landmark_with_attention.tflite",
                  "selfie_segmentation/selfie_segmentation.tflite"]
        report["models"] = {m: (root / m).is_file() for m in models}
    return report


def _model_files(models_dir: Path) -> dict:
    from weights.discovery import find_weights

    from .prior import flame

    found_flame = flame.find_flame(models_dir)
    weights = find_weights(models_dir)
    return {
        "flame": None if found_flame is None else {"model": str(found_flame[0]), "embedding": str(found_flame[1])},
        "diffusion_weights": None if weights is None else str(weights),
    }


def report(models_dir: Path | None = None) -> dict:
    """The doctor report as a dict (JSON-serialisable)."""
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    out = {
        "versions": versions(),
        "device": device_report(),
        "torch": _torch_report(),
        "mediapipe": _mediapipe_report(),
        "optional": {m: _importable(m)["ok"] for m in ("spconv", "transformers", "insightface", "onnxruntime", "accelerate")},
        "models_dir": {"path": str(models_dir), "exists": models_dir.is_dir(),
                       "from": MODELS_ENV if os.environ.get(MODELS_ENV) else "default"},
        "cache_dir": str(cache_dir()),
    }
    try:
        out["model_files"] = _model_files(models_dir)
    except Exception as exc:  # noqa: BLE001
        out["model_files"] = {"error": f"{type(exc).__name__}: {exc}"}
    out["backends"] = {"projection": True, "diffusion": bool(out["model_files"].get("diffusion_weights"))}
    return out
