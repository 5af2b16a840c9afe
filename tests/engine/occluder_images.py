"""Glasses and a cap drawn onto a portrait at its mediapipe landmarks (for the occluder tests)."""
from __future__ import annotations

import cv2
import numpy as np

#: The drawn frame's colour: a dark blue no head in the tests has.
FRAME = (25, 30, 150)
#: The drawn cap's colour (green) and its badge's (yellow).
CAP = (40, 130, 60)
BADGE = (235, 200, 40)


def draw_glasses(rgb: np.ndarray, lm: np.ndarray, colour=FRAME, lens=None) -> np.ndarray:
    """rgb [H, W, 3] uint8 with a pair of glasses drawn at the landmarks lm [478, 2|3] (image pixels):
    elliptic rims around the eyes, a bridge, temples towards the ears; ``lens``: fill colour (sunglasses)."""
    im = rgb.copy()
    lm = np.asarray(lm, np.float64)[:, :2]
    w = float(np.linalg.norm(lm[33] - lm[133]))
    t = max(2, int(round(w / 12)))
    rims = []
    for outer, inner in ((33, 133), (263, 362)):
        c = (lm[outer] + lm[inner]) / 2 + [0.0, 0.12 * w]
        axes = (int(0.8 * w), int(0.58 * w))
        if lens is not None:
            cv2.ellipse(im, (int(c[0]), int(c[1])), axes, 0, 0, 360, lens, -1, cv2.LINE_AA)
        cv2.ellipse(im, (int(c[0]), int(c[1])), axes, 0, 0, 360, colour, t, cv2.LINE_AA)
        rims.append((c, axes))
    (c1, a1), (c2, a2) = rims
    y = int(min(c1[1], c2[1]) - 0.25 * w)
    cv2.line(im, (int(c1[0] + a1[0] * 0.93), y), (int(c2[0] - a2[0] * 0.93), y), colour, t, cv2.LINE_AA)
    for (c, a), side, sign in ((rims[0], 127, -1), (rims[1], 356, 1)):
        cv2.line(im, (int(c[0] + sign * a[0]), int(c[1] - 0.2 * w)), (int(lm[side, 0]), int(lm[side, 1] - 0.1 * w)),
                 colour, t, cv2.LINE_AA)
    return im


def paint_cap(rgb: np.ndarray, lm: np.ndarray, colour=CAP, badge=BADGE) -> np.ndarray:
    """rgb with a cap over the head top: a dome above a brim that runs across the upper forehead
    (through mediapipe's points 54, 10, 284), with a round badge on its front."""
    im = rgb.copy()
    lm = np.asarray(lm, np.float64)[:, :2]
    width = float(np.linalg.norm(lm[127] - lm[356]))
    ids = [54, 10, 284]
    coef = np.polyfit(lm[ids, 0], lm[ids, 1] + 0.06 * width, 2)  # the brim: low on the forehead
    cx = lm[10, 0]
    h, w = im.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    brim = np.polyval(coef, np.clip(xx, lm[54, 0], lm[284, 0]))
    top = np.polyval(coef, cx)
    dome = ((xx - cx) / (0.68 * width)) ** 2 + ((yy - top) / (0.8 * width)) ** 2 <= 1.0
    im[dome & (yy <= brim)] = colour
    cv2.circle(im, (int(cx), int(top - 0.2 * width)), max(3, int(0.07 * width)), badge, -1, cv2.LINE_AA)
    return im
