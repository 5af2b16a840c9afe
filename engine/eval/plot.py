"""The PNG of ``gen3dface eval``: I2O identity distance against azimuth, drawn with PIL (no matplotlib)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def identity_plot(report: dict, path: Path, size: tuple[int, int] = (720, 420)) -> Path:
    """One line per run: I2O distance (y) per view azimuth (x, −180..180°); × at the bottom = no face.

    The dashed line is the match threshold: points below it are the same person.
    """
    w, h = size
    left, right, top, bottom = 60, 20, 30, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    distances = [row["i2o_distance"] for r in report["runs"] for row in r["by_view"] if row["i2o_distance"] is not None]
    y_max = max([report["threshold"] * 1.5] + distances) * 1.05

    def xy(az: float, d: float) -> tuple[float, float]:
        return (left + (az + 180.0) / 360.0 * (w - left - right), h - bottom - d / y_max * (h - top - bottom))

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for az in range(-180, 181, 45):
        x, _ = xy(az, 0)
        draw.line([x, h - bottom, x, h - bottom + 4], fill="black")
        draw.text((x - 12, h - bottom + 8), f"{az}", fill="black")
    for i in range(5):
        d = y_max * i / 4
        _, y = xy(-180, d)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((4, y - 6), f"{d:.2f}", fill="black")
    _, ty = xy(0, report["threshold"])
    for x in range(left, w - right, 12):  # dashed threshold
        draw.line([x, ty, x + 6, ty], fill=(120, 120, 120))
    draw.text((left + 4, ty - 14), f"match threshold {report['threshold']}", fill=(90, 90, 90))
    draw.text((left, 8), f"I2O identity distance ({report['face_backend']}) vs view azimuth (deg); x = no face",
              fill="black")
    for k, run in enumerate(report["runs"]):
        colour = _COLOURS[k % len(_COLOURS)]
        rows = sorted(run["by_view"], key=lambda r: r["azimuth"])
        points = [xy(r["azimuth"], r["i2o_distance"]) for r in rows if r["i2o_distance"] is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        for r in rows:
            if not r["face"]:
                x, y = xy(r["azimuth"], 0)
                y -= 6 + 4 * k
                draw.line([x - 3, y - 3, x + 3, y + 3], fill=colour)
                draw.line([x - 3, y + 3, x + 3, y - 3], fill=colour)
        draw.text((w - right - 200, top + 6 + 12 * k), Path(run["run"]).name[:30], fill=colour)
    path = Path(path)
    img.save(path)
    return path
