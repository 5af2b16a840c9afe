"""Occluders the shipped models can find, left out of the head's matte (so they are not projected).

``remove_occluders`` runs the three tests on the crop: hands (below), glasses
(``glasses``: frame inpainted from its surroundings, dark lenses out of the matte) and hats
(``hats``: out of the matte), each with its warning (``occluder_hand``,
``occluder_glasses``, ``occluder_hat``).

mediapipe 0.10.21's wheel ships face detection/mesh, a binary selfie segmenter (person vs
background), pose, palm detection + hand landmarks and iris models; it has no multi-class
segmenter (hair / clothes / accessories) and no glasses or hat model. So of the occluders
that end up painted on a head, hands (a hand on the chin or cheek, holding a microphone or a
phone) are the ones found here: mediapipe's hand landmarks in the crop, their hull grown by
the fingers' width, are taken out of the matte; the projection backend then fills those
parts like any unseen skin, and the run gets an ``occluder_hand`` warning. Microphones
without a hand, scarves, earrings and hair accessories are not detected (README, "What
the embedded default can and cannot do").
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: The hull of the 21 hand landmarks is grown by this share of the hand's size (fingers have width).
GROW = 0.12


def hand_polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    """bool [S, S]: the convex hull of one hand's landmarks [21, 2] (crop pixels), grown by ``GROW``."""
    from scipy.spatial import ConvexHull, QhullError
    from skimage.draw import polygon2mask

    p = np.asarray(points, np.float64)[:, :2]
    centre = p.mean(0)
    extent = max(float(np.ptp(p, axis=0).max()), 1.0)
    try:
        hull = p[ConvexHull(p).vertices]
    except (QhullError, ValueError):
        return np.zeros((size, size), bool)
    d = hull - centre
    grown = hull + d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9) * GROW * extent
    return polygon2mask((size, size), grown[:, ::-1] - 0.5)


def find_hands(crop_rgb: np.ndarray, confidence: float = 0.5) -> list[np.ndarray]:
    """Hand landmarks [21, 2] in crop pixels for each hand mediapipe finds in the crop [S, S, 3] uint8."""
    from .detect import process

    s = crop_rgb.shape[0]
    result = process("hands", crop_rgb, static_image_mode=True, max_num_hands=2,
                     min_detection_confidence=confidence)
    hands = []
    for hand in result.multi_hand_landmarks or []:
        hands.append(np.array([[lm.x * s, lm.y * s] for lm in hand.landmark], np.float64))
    return hands


def remove_hands(crop_rgb: np.ndarray, alpha: np.ndarray, photo_path, ctx) -> np.ndarray:
    """The matte [S, S] uint8 without the hands found in the crop (with an ``occluder_hand`` warning)."""
    hands = find_hands(crop_rgb)
    if not hands:
        return alpha
    mask = np.zeros(alpha.shape, bool)
    for h in hands:
        mask |= hand_polygon_mask(h, alpha.shape[0])
    share = float((mask & (alpha > 127)).mean())
    if share <= 0:
        return alpha
    ctx.warn("occluder_hand", f"{photo_path}: {len(hands)} hand(s) in front of the head ({100 * share:.0f} % of the "
             "crop); left out of the texture and filled")
    return np.where(mask, 0, alpha).astype(np.uint8)


def remove_glasses(crop_rgb: np.ndarray, alpha: np.ndarray, landmarks: np.ndarray, photo_path,
                   ctx) -> tuple[np.ndarray, np.ndarray]:
    """(crop, matte) without the glasses ``glasses.detect`` finds: the frame inpainted, dark lenses
    out of the matte; an ``occluder_glasses`` warning."""
    from . import glasses

    found = glasses.detect(crop_rgb, landmarks)
    log.debug("glasses: %s", found.scores)
    if not found.found:
        return crop_rgb, alpha
    crop_rgb = glasses.inpaint(crop_rgb, found.frame, glasses.eye_width(landmarks))
    kind = "sunglasses" if found.sunglasses else "glasses"
    what = "their frame inpainted from the skin around it"
    if found.sunglasses:
        alpha = np.where(found.lenses, 0, alpha).astype(np.uint8)
        what += ", the dark lenses left out of the texture and filled (the eyes behind them are not seen)"
    ctx.warn("occluder_glasses", f"{photo_path}: {kind} on the face; {what}")
    return crop_rgb, alpha


def remove_hat(crop_rgb: np.ndarray, alpha: np.ndarray, landmarks: np.ndarray, photo_path, ctx) -> np.ndarray:
    """The matte without the hat ``hats.detect`` finds (with an ``occluder_hat`` warning)."""
    from . import hats

    found = hats.detect(crop_rgb, alpha, landmarks)
    log.debug("hat: %s", found.info)
    if not found.found:
        return alpha
    ctx.warn("occluder_hat", f"{photo_path}: a hat on the head ({100 * found.info['share']:.0f} % of the crop); "
             "left out of the texture, the skull filled with the hair/skin fill")
    return np.where(found.mask, 0, alpha).astype(np.uint8)


def remove_occluders(crop_rgb: np.ndarray, alpha: np.ndarray, landmarks: np.ndarray, photo_path,
                     ctx) -> tuple[np.ndarray, np.ndarray]:
    """(crop [S, S, 3] uint8, matte [S, S] uint8) with hands, glasses and a hat taken out (see above).

    The hat is judged on the photo as taken (before the glasses' inpainting); the glasses
    before the hands leave the matte (their test reads only the crop)."""
    alpha = remove_hat(crop_rgb, alpha, landmarks, photo_path, ctx)
    crop_rgb, alpha = remove_glasses(crop_rgb, alpha, landmarks, photo_path, ctx)
    return crop_rgb, remove_hands(crop_rgb, alpha, photo_path, ctx)
