"""Generates assets/street.png, the synthetic demo image (no real photo can be shipped
or downloaded here): a 320x240 street scene drawn with OpenCV. Deterministic.

    python assets/make_street.py
"""
from pathlib import Path

import cv2
import numpy as np

W, H = 320, 240
HORIZON = 110


def make_street(seed: int = 0) -> np.ndarray:
    """The scene as an RGB uint8 [H, W, 3] array."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.uint8)

    # Sky: vertical gradient from deep to pale blue.
    t = np.linspace(0.0, 1.0, HORIZON)[:, None]
    top, bottom = np.array([70, 130, 210]), np.array([190, 220, 245])
    img[:HORIZON] = (top * (1 - t) + bottom * t).astype(np.uint8)[:, None, :]

    # Buildings along the horizon, with windows.
    x = 0
    while x < W:
        bw = int(rng.integers(35, 70))
        bh = int(rng.integers(40, 95))
        color = tuple(int(c) for c in rng.integers(90, 190, 3))
        cv2.rectangle(img, (x, HORIZON - bh), (x + bw - 2, HORIZON + 10), color, -1)
        for wy in range(HORIZON - bh + 6, HORIZON, 12):
            for wx in range(x + 5, x + bw - 8, 10):
                lit = (255, 230, 140) if rng.random() < 0.3 else (60, 70, 90)
                cv2.rectangle(img, (wx, wy), (wx + 4, wy + 6), lit, -1)
        x += bw

    # Sidewalk and road (a trapezoid narrowing to the horizon).
    img[HORIZON + 10:] = (165, 160, 150)
    road = np.array([[0, H], [W, H], [W // 2 + 40, HORIZON + 10], [W // 2 - 40, HORIZON + 10]], np.int32)
    cv2.fillPoly(img, [road], (80, 80, 85))
    # Lane markings: dashes along the centre line, growing towards the viewer.
    for i in range(7):
        y0 = HORIZON + 14 + int(i ** 1.6 * 5)
        y1 = y0 + 4 + i * 2
        if y1 >= H:
            break
        half = 1 + i // 2
        cv2.rectangle(img, (W // 2 - half, y0), (W // 2 + half, y1), (240, 240, 240), -1)

    # Cars: body, cabin, windows, wheels.
    def car(cx, cy, scale, color):
        w, h = int(60 * scale), int(18 * scale)
        cv2.rectangle(img, (cx - w // 2, cy - h), (cx + w // 2, cy), color, -1)
        cv2.rectangle(img, (cx - w // 4, cy - h - int(12 * scale)), (cx + w // 4, cy - h), color, -1)
        cv2.rectangle(img, (cx - w // 4 + 3, cy - h - int(10 * scale)), (cx + w // 4 - 3, cy - h - 1),
                      (170, 200, 220), -1)
        for wx in (cx - w // 3, cx + w // 3):
            cv2.circle(img, (wx, cy), max(2, int(6 * scale)), (20, 20, 20), -1)

    car(95, 200, 1.3, (200, 40, 40))
    car(215, 160, 0.8, (40, 70, 190))
    car(150, 135, 0.45, (230, 230, 230))

    # Pedestrians on the sidewalk: head, torso, legs.
    def person(x0, y0, scale, shirt):
        s = scale
        cv2.circle(img, (x0, y0 - int(34 * s)), max(2, int(4 * s)), (225, 190, 160), -1)
        cv2.rectangle(img, (x0 - int(5 * s), y0 - int(30 * s)), (x0 + int(5 * s), y0 - int(14 * s)), shirt, -1)
        cv2.line(img, (x0 - int(2 * s), y0 - int(14 * s)), (x0 - int(4 * s), y0), (40, 40, 70), max(1, int(3 * s)))
        cv2.line(img, (x0 + int(2 * s), y0 - int(14 * s)), (x0 + int(4 * s), y0), (40, 40, 70), max(1, int(3 * s)))

    person(292, 200, 1.6, (40, 160, 60))
    person(268, 150, 1.0, (200, 160, 30))
    person(22, 175, 1.3, (150, 50, 160))

    # A slight blur softens the hard drawing edges (no noise: it would bloat the PNG).
    return cv2.GaussianBlur(img, (3, 3), 0)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "street.png"
    cv2.imwrite(str(out), cv2.cvtColor(make_street(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} ({out.stat().st_size} bytes)")
