"""Drawing a detector's rows on their image: face box, landmarks and one labelled bar per AU.

    image = draw(frame_bgr, rows, detector.au_columns, detector.num_landmarks, threshold=0.5)

Sizes follow each face's box, so the drawing reads the same on a thumbnail and on a 4K frame.
A bar is green when its AU counts as present (probability >= threshold), grey otherwise.
"""

import math

import cv2
import numpy as np

BOX = (0, 200, 255)  # BGR: orange
POINT = (255, 255, 0)  # cyan
PRESENT = (80, 200, 80)  # green
ABSENT = (160, 160, 160)  # grey
TEXT = (255, 255, 255)
PANEL = (40, 40, 40)


def draw(image_bgr: np.ndarray, rows: list[dict], au_columns, num_landmarks: int,
         threshold: float = 0.5) -> np.ndarray:
    """A copy of `image_bgr` with every scored face of `rows` drawn on it (see module doc); an
    image whose rows found no face gets "no face" in its corner."""
    out = np.ascontiguousarray(image_bgr).copy()
    scored = [r for r in rows if r["success"]]
    if not scored:
        size = max(0.4, out.shape[0] / 800)
        cv2.putText(out, "no face", (8, int(30 * size)), cv2.FONT_HERSHEY_SIMPLEX, size, BOX,
                    max(1, round(2 * size)), cv2.LINE_AA)
    for row in scored:
        _draw_face(out, row, au_columns, num_landmarks, threshold)
    return out


def _draw_face(out, row, au_columns, num_landmarks, threshold):
    x, y, w, h = (row[k] for k in ("face_x", "face_y", "face_width", "face_height"))
    thick = max(1, round(h / 100))
    cv2.rectangle(out, (round(x), round(y)), (round(x + w - 1), round(y + h - 1)), BOX, thick,
                  cv2.LINE_AA)
    radius = max(1, round(h / 80))
    for i in range(num_landmarks):
        px, py = row[f"x_{i}"], row[f"y_{i}"]
        if math.isfinite(px) and math.isfinite(py):
            cv2.circle(out, (round(px), round(py)), radius, POINT, -1, cv2.LINE_AA)
    if au_columns:
        _draw_bars(out, row, au_columns, threshold, (x, y, w, h))


def _draw_bars(out, row, au_columns, threshold, box):
    """A panel of AU bars beside the face: to the right of the box if it fits, else left."""
    x, y, w, h = box
    line = int(np.clip(h / len(au_columns), 12, 40))  # one row of the panel per AU
    font = line / 32
    label_w = cv2.getTextSize("AU00 ", cv2.FONT_HERSHEY_SIMPLEX, font, 1)[0][0]
    value_w = cv2.getTextSize("0.00", cv2.FONT_HERSHEY_SIMPLEX, 0.8 * font, 1)[0][0]
    bar_w = 3 * line
    panel_w, panel_h = label_w + bar_w + value_w + 12, line * len(au_columns) + 4
    left = round(x + w + 4)
    if left + panel_w > out.shape[1]:
        left = max(0, round(x - 4 - panel_w))
    top = int(np.clip(round(y), 0, max(0, out.shape[0] - panel_h)))
    cv2.rectangle(out, (left, top), (left + panel_w, top + panel_h), PANEL, -1)
    for i, column in enumerate(au_columns):
        p = row[column]
        base = top + 2 + i * line
        cv2.putText(out, column, (left + 3, base + int(0.75 * line)), cv2.FONT_HERSHEY_SIMPLEX,
                    font, TEXT, 1, cv2.LINE_AA)
        x0, x1 = left + 3 + label_w, left + 3 + label_w + bar_w
        y0, y1 = base + line // 5, base + line - line // 5
        cv2.rectangle(out, (x0, y0), (x1, y1), ABSENT, 1)
        colour = PRESENT if p >= threshold else ABSENT
        cv2.rectangle(out, (x0, y0), (x0 + round(p * bar_w), y1), colour, -1)
        cv2.putText(out, f"{p:.2f}", (x1 + 3, base + int(0.75 * line)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.8 * font, TEXT, 1, cv2.LINE_AA)
