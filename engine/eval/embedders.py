"""Face and image embedders with swappable backends (seed paper §4: ArcFace, CLIP, FID).

Face identity (``face_embedder(name)``), one backend picked once:

- ``dlib`` (offline default): dlib's HOG face detector, its 5-point aligner and its ResNet
  face descriptor (128-d); faces match when the Euclidean distance is < 0.6, the threshold
  of the paper's Re-ID figure (Table 2). PyPI ``dlib-bin`` (Boost licence) and
  ``face_recognition_models`` (MIT package; the model files were released into the public
  domain by their author, Davis King).
- ``arcface``: an insightface recognition model in ONNX format from a local file (e.g.
  ``w600k_r50.onnx`` of the buffalo_l pack, whose weights insightface licenses for
  non-commercial research only), run by onnxruntime; faces aligned to insightface's
  112 × 112 five-point template with mediapipe's landmarks; distance = 1 − cosine.

Image features: ``ClipEmbedder`` (a local transformers CLIP folder; OpenAI's CLIP weights
are MIT) and ``InceptionFeatures`` for FID (a local TorchScript or ONNX export of the FID
Inception-v3, e.g. pytorch-fid's ``pt_inception`` weights, Apache-2.0). Nothing downloads:
every model comes from a file the user names. A missing package fails on first use with the
command that installs it (exit 3).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput, ModelMissing

log = logging.getLogger(__name__)


def require(module: str, package: str):
    """Import ``module`` or stop with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelMissing(None, f"this backend needs the Python package {module!r}: "
                           f"pip install {package}", "package_missing") from None


def _model_file(path: Path | None, what: str, flag: str) -> Path:
    if path is None:
        raise BadInput(None, f"the {what} backend needs a local model file: pass {flag}", "usage")
    path = Path(path)
    if not path.exists():
        raise ModelMissing(path, f"{what} model not found (nothing is downloaded: supply the file)")
    return path


@dataclass(frozen=True)
class Face:
    """One face found in an image: box (x0, y0, x1, y1) in pixels and its identity vector [D]."""

    box: tuple[float, float, float, float]
    vector: np.ndarray


class DlibFaces:
    """dlib HOG detector + 5-point alignment + ResNet descriptor: 128-d, Euclidean, threshold 0.6."""

    name = "dlib"
    threshold = 0.6

    def __init__(self):
        dlib = require("dlib", "dlib-bin face_recognition_models")
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ModelMissing(None, "dlib's face models are missing: pip install face_recognition_models",
                               "package_missing")
        # Read the files directly: the package's own __init__ needs pkg_resources (setuptools).
        models = Path(spec.submodule_search_locations[0]) / "models"
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._rectangle = dlib.rectangle

    def faces(self, rgb: np.ndarray) -> list[Face]:
        """Every face in ``rgb`` [H, W, 3] uint8, largest first."""
        rgb = np.ascontiguousarray(rgb)
        # One upsampling finds faces down to ~40 px; views of 512 px do not need it (4× faster).
        boxes = list(self._detector(rgb, 0 if min(rgb.shape[:2]) >= 384 else 1))
        boxes.sort(key=lambda r: r.area(), reverse=True)
        out = []
        for rect in boxes:
            shape = self._shape(rgb, rect)
            vector = np.asarray(self._net.compute_face_descriptor(rgb, shape), np.float64)
            out.append(Face((rect.left(), rect.top(), rect.right(), rect.bottom()), vector))
        return out

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


# insightface's five-point template for 112 × 112 crops (eyes, nose tip, mouth corners).
_ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])
# mediapipe FaceMesh indices of those points (iris centres with refine_landmarks).
_MP_FIVE = ((468,), (473,), (1,), (61,), (291,))


class ArcFaceOnnx:
    """insightface ArcFace recognition model (ONNX, [1, 3, 112, 112] → [1, 512]); 1 − cosine."""

    name = "arcface"

    def __init__(self, model: Path | None, threshold: float = 0.7):
        ort = require("onnxruntime", "onnxruntime")
        model = _model_file(model, "arcface", "--arcface MODEL.onnx")
        self._session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        # 1 − cos 0.7 ↔ cosine similarity 0.3, a common ArcFace verification threshold.
        self.threshold = threshold

    def faces(self, rgb: np.ndarray) -> list[Face]:
        from skimage.transform import SimilarityTransform, warp

        from ..preprocess.detect import detect_faces, landmarks_in_box

        out = []
        for box in detect_faces(rgb):
            points = landmarks_in_box(rgb, box)
            if points is None:
                continue
            src = np.array([points[list(i)][:, :2].mean(0) for i in _MP_FIVE])
            tf = SimilarityTransform()
            tf.estimate(_ARCFACE_DST, src)  # crop → photo, as warp() wants
            chip = warp(rgb, tf, output_shape=(112, 112), preserve_range=True).astype(np.float32)
            x = ((chip - 127.5) / 127.5).transpose(2, 0, 1)[None]
            vector = self._session.run(None, {self._input: x})[0][0].astype(np.float64)
            out.append(Face((box.x0, box.y0, box.x1, box.y1), vector / np.linalg.norm(vector)))
        return out

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


FACE_BACKENDS = ("dlib", "arcface")


def face_embedder(name: str = "dlib", arcface_model: Path | None = None):
    """The face backend ``name``, loaded once (models stay in memory for every image)."""
    if name == "dlib":
        backend = DlibFaces()
    elif name == "arcface":
        backend = ArcFaceOnnx(arcface_model)
    else:
        raise BadInput(None, f"unknown face backend {name!r} (choose from {', '.join(FACE_BACKENDS)})", "usage")
    log.info("face identity backend: %s (threshold %.2f)", backend.name, backend.threshold)
    return backend


class ClipEmbedder:
    """CLIP image and text embeddings from a local transformers folder (no hub access)."""

    def __init__(self, folder: Path | None, device: str = "cpu"):
        transformers = require("transformers", "transformers")
        folder = _model_file(folder, "CLIP", "--clip DIR")
        self.torch = require("torch", "torch")
        self.model = transformers.CLIPModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        self.processor = transformers.CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
        self.device = device

    def images(self, rgbs: list[np.ndarray]) -> np.ndarray:
        """Unit image embeddings [N, D] of [H, W, 3] uint8 images."""
        inputs = self.processor(images=list(rgbs), return_tensors="pt").to(self.device)
        with self.torch.no_grad():
            feats = self.model.get_image_features(**inputs)
        return _unit(feats)

    def texts(self, prompts: list[str]) -> np.ndarray:
        """Unit text embeddings [N, D]."""
        inputs = self.processor(text=list(prompts), return_tensors="pt", padding=True).to(self.device)
        with self.torch.no_grad():
            feats = self.model.get_text_features(**inputs)
        return _unit(feats)

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())


def _unit(feats) -> np.ndarray:
    if not hasattr(feats, "detach"):  # newer transformers return an output object
        feats = feats.pooler_output
    x = feats.detach().cpu().double().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class InceptionFeatures:
    """FID features [N, D] from a local TorchScript (.pt) or ONNX (.onnx) Inception-v3.

    The model takes float [N, 3, 299, 299] RGB in [0, 1] and returns [N, D] (or [N, D, 1, 1])
    pool features, D = 2048 for the FID Inception; normalising the input is the model's job,
    as in pytorch-fid's ``InceptionV3(normalize_input=True)``.
    """

    size = 299

    def __init__(self, model: Path | None, device: str = "cpu"):
        model = _model_file(model, "Inception (FID)", "--inception MODEL.pt|.onnx")
        self.device = device
        if model.suffix == ".onnx":
            ort = require("onnxruntime", "onnxruntime")
            self._session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            self._module = None
        else:
            self.torch = require("torch", "torch")
            try:
                self._module = self.torch.jit.load(str(model), map_location=device).eval()
            except (RuntimeError, ValueError) as exc:
                raise ModelMissing(model, f"not a TorchScript Inception model ({str(exc).splitlines()[0]})",
                                   "model_bad") from None

    def __call__(self, rgbs: list[np.ndarray], batch: int = 16) -> np.ndarray:
        from PIL import Image

        out = []
        for i in range(0, len(rgbs), batch):
            x = np.stack([np.asarray(Image.fromarray(im).resize((self.size, self.size), Image.BICUBIC))
                          for im in rgbs[i:i + batch]]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
            if self._module is None:
                y = self._session.run(None, {self._session.get_inputs()[0].name: x})[0]
            else:
                with self.torch.no_grad():
                    y = self._module(self.torch.from_numpy(x).to(self.device)).cpu().numpy()
            out.append(np.asarray(y, np.float64).reshape(len(x), -1))
        return np.concatenate(out)
