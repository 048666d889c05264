"""SynthAU's portraits: a person drawn through a `Pose`, back to front (body, hair, ears, skin,
AU lines, brows, eyes, nose, mouth, shading), and the occluders the target domain adds (a fringe
of hair, glasses, a hand)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from audjax.data.synth.drawing import (
    ONE,
    SHIFT,
    Painter,
    Pose,
    arc,
    blur,
    clip_colour,
    ellipse,
    mix,
    spline,
)
from audjax.data.synth.face import MIDLINE_X, Identity


def draw_face(p: Painter, ident: Identity, lm: np.ndarray, a: np.ndarray,
               rng: np.random.Generator) -> None:
    """Body, hair, ears, skin, AU lines, features and shading, back to front."""
    _draw_body(p, ident, rng.uniform(20, 230, 3))
    if ident.hair_style == "long":
        _draw_hair_back(p, ident)
    _draw_ears(p, ident, lm)
    outline = _face_outline(ident, lm)
    p.fill(outline, ident.skin)
    _draw_wrinkles(p, ident, lm, a, rng)
    _draw_brows(p, ident, lm)
    _draw_eyes(p, ident, lm, rng.normal(0, (0.06, 0.03)))
    _draw_nose(p, ident, lm)
    _draw_mouth(p, ident, lm)
    # Shading: the face darkens toward its outline (it is round), plus the soft features.
    mask = np.zeros(p.image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [p.fixed(outline)], 255, cv2.LINE_AA, SHIFT)
    m = mask.astype(np.float32) / 255
    depth = np.clip((blur(m, 0.07 * p.pose.scale) - 0.5) * 2.5, 0, 1)
    soft = blur(_soft_features(p, ident, lm, a), 0.02 * p.pose.scale)
    shaded = p.image * (1 - m * 0.22 * (1 - depth))[..., None] + soft * m[..., None]
    p.image[:] = np.clip(shaded, 0, 255).astype(np.uint8)
    if ident.hair_style != "bald":
        _draw_hair_cap(p, ident)


def _skull(ident: Identity) -> tuple[np.ndarray, tuple[float, float]]:
    """Centre and radii of the forehead's half-ellipse, from the neutral jaw ends and brows."""
    s = ident.shape
    centre = (s[0] + s[16]) / 2
    top = s[17:27, 1].min() - 0.3
    return centre, ((s[16, 0] - s[0, 0]) / 2, centre[1] - top)


def _face_outline(ident: Identity, lm: np.ndarray) -> np.ndarray:
    centre, axes = _skull(ident)
    return np.concatenate([spline(lm[0:17], 4), arc(centre, axes, 0.0, np.pi, 28)[1:-1]])


def _draw_body(p: Painter, ident: Identity, shirt) -> None:
    m = MIDLINE_X
    collar = arc((m, 1.08), (0.2, 0.1), np.pi, 2 * np.pi, 12)
    p.fill([(m - 1.1, 2.3), (m - 1.1, 1.55), (m - 0.7, 1.22), (m - 0.22, 1.08), *collar,
            (m + 0.22, 1.08), (m + 0.7, 1.22), (m + 1.1, 1.55), (m + 1.1, 2.3)], shirt, body=True)
    p.fill([(m - 0.19, 0.7), (m + 0.19, 0.7), (m + 0.2, 1.08), *collar[::-1], (m - 0.2, 1.08)],
           ident.skin * 0.78, body=True)


def _draw_hair_back(p: Painter, ident: Identity) -> None:
    """Long hair: a mass behind the head that falls to the shoulders."""
    centre, (ax, by) = _skull(ident)
    top = arc(centre, (ax + 0.07, by + 0.08), 0.0, np.pi, 20)
    p.fill([*top, (centre[0] - ax - 0.1, 1.05), (centre[0] - ax + 0.05, 1.2),
            (centre[0] + ax - 0.05, 1.2), (centre[0] + ax + 0.1, 1.05)], ident.hair * 0.8)


def _draw_hair_cap(p: Painter, ident: Identity) -> None:
    """Hair on top of the head down to the hairline, with sideburns down to the ears."""
    centre, (ax, by) = _skull(ident)
    outer = arc(centre, (ax + 0.035, by + 0.06), -0.3, np.pi + 0.3, 30)
    inner = arc(centre, (ax - 0.01, centre[1] - ident.hairline), np.pi + 0.3, -0.3, 30)
    p.fill(np.concatenate([outer, inner]), ident.hair)


def _draw_ears(p: Painter, ident: Identity, lm: np.ndarray) -> None:
    for end, side in ((lm[0], -1), (lm[16], 1)):
        centre = end + (side * 0.012, 0.085)
        p.fill(ellipse(centre, (0.045, 0.09), 16, side * 0.15), ident.skin * 0.9)
        p.line(arc(centre, (0.025, 0.06), np.pi / 2 - side * 1.2, np.pi / 2 + side * 1.2, 8)
               + (side * 0.008, 0.005), ident.skin * 0.68, 0.008)


def _wrinkle(p: Painter, ident: Identity, points, alpha: float, width: float = 0.006):
    """A skin line whose darkness is `alpha` (0 invisible, 1 the darkest crease)."""
    if alpha > 0.04:
        p.line(points, ident.skin * (1 - 0.55 * min(alpha, 1.0)), width)


def _draw_wrinkles(p: Painter, ident: Identity, lm: np.ndarray, a: np.ndarray,
                   rng: np.random.Generator) -> None:
    """The AU lines: forehead (AU1, AU2), glabella (AU4), crow's feet and lid bags (AU6),
    nasolabial folds (AU12), chin dimpling and mentolabial furrow (AU17). Every face shows them
    faintly (`ident.wrinkle`); an AU deepens its own."""
    base = ident.wrinkle
    m = MIDLINE_X
    # AU1: short horizontal lines over the middle of the forehead, bowed up at the centre.
    inner_top = min(lm[21, 1], lm[22, 1])
    for k in range(3):
        half = 0.1 * (1 - 0.15 * k)
        x = np.linspace(m - half, m + half, 7)
        y = inner_top - 0.045 - 0.032 * k - (0.012 + 0.012 * a[0]) * (1 - ((x - m) / half) ** 2)
        _wrinkle(p, ident, np.stack([x, y], 1), base + 0.75 * a[0])
    # AU2: lines over the outer forehead that follow the raised brow arch.
    for brow, side in ((lm[17:21], -1), (lm[23:27][::-1], 1)):
        for k in range(2):
            line = brow[:3] + (side * 0.01, -0.05 - 0.032 * k)
            _wrinkle(p, ident, spline(line, 4), base + 0.7 * a[1])
    # AU4: vertical furrows between the brows and a crease across the nasal root.
    for side in (-1, 1):
        top = np.array([m + side * 0.02, inner_top - 0.015])
        _wrinkle(p, ident, [top, top + (side * 0.004, 0.035), top + (side * 0.012, 0.065)],
                 0.85 * a[2])
    _wrinkle(p, ident, [(m - 0.025, lm[27, 1] - 0.01), (m + 0.025, lm[27, 1] - 0.01)],
             0.55 * a[2])
    for eye, corner, side in ((lm[36:42], lm[36], -1), (lm[42:48], lm[45], 1)):
        # AU6: crow's feet fanning out from the outer eye corner...
        start = corner + (side * 0.02, 0.0)
        for angle in (-0.5, -0.05, 0.45):
            d = np.array([side * math.cos(angle), math.sin(angle)])
            _wrinkle(p, ident, [start, start + 0.022 * d + (0, 0.004), start + 0.042 * d],
                     base * 0.7 + 0.8 * a[3], 0.005)
        # ...and the bag under the raised lower lid.
        lower = eye[[0, 5, 4, 3]] if side < 0 else eye[[3, 4, 5, 0]]
        centre = lower.mean(0)
        _wrinkle(p, ident, spline((lower - centre) * (0.85, 1) + centre + (0, 0.026), 4),
                 base + 0.6 * a[3], 0.005)
    # AU12: the nasolabial folds, from the nose wing around the (raised) lip corner.
    for wing, corner, side in ((lm[31], lm[48], -1), (lm[35], lm[54], 1)):
        fold = [wing + (side * 0.022, -0.012), corner + (side * 0.018, -0.04),
                corner + (side * 0.028, 0.01), corner + (side * 0.02, 0.06)]
        _wrinkle(p, ident, spline(fold, 5), 0.08 + base + 0.5 * a[4], 0.007)
    # AU17: the furrow under the lower lip bends into an arch and the chin boss dimples.
    lip = lm[57]
    _wrinkle(p, ident, spline([lip + (-0.06, 0.05), lip + (0, 0.04 - 0.012 * a[5]),
                                lip + (0.06, 0.05)], 4), 0.1 + base + 0.6 * a[5])
    if a[5] > 0.05:
        chin = (lm[57] + lm[8]) / 2 + (0, 0.025)
        for dx, dy in rng.uniform(-1, 1, (12, 2)) * (0.06, 0.03):
            p.fill(ellipse(chin + (dx, dy), (0.007, 0.005), 8),
                   ident.skin * (1 - 0.35 * min(1.0, a[5])))


def _draw_brows(p: Painter, ident: Identity, lm: np.ndarray) -> None:
    colour = mix(ident.skin * 0.45, ident.hair * 0.8, 0.65)
    for brow in (lm[17:22], lm[26:21:-1]):  # outer -> inner
        upper = spline(brow, 4)
        s = np.linspace(0, 1, len(upper))[:, None]
        # The iBUG brow points trace the brow's upper edge; it thickens toward the nose.
        lower = upper + np.concatenate([np.zeros_like(s), ident.brow_width * (0.4 + 0.6 * s)], 1)
        p.fill(np.concatenate([upper, lower[::-1]]), colour)


def _draw_eyes(p: Painter, ident: Identity, lm: np.ndarray, gaze: np.ndarray) -> None:
    for eye in (lm[36:42], lm[42:48]):
        upper, lower = spline(eye[0:4], 4), spline(eye[[3, 4, 5, 0]], 4)
        contour = np.concatenate([upper, lower[1:-1]])
        width = np.linalg.norm(eye[3] - eye[0])
        # Draw white, iris and pupil into a copy, then keep the copy inside the lids only.
        pts = p.fixed(contour)
        x0, y0 = np.maximum(pts.min(0) // ONE - 1, 0)
        x1, y1 = pts.max(0) // ONE + 2
        roi = p.image[y0:y1, x0:x1]
        if roi.size == 0:
            continue
        mask = np.zeros(roi.shape[:2], np.uint8)
        offset = np.array([x0, y0]) * ONE
        cv2.fillPoly(mask, [pts - offset], 255, cv2.LINE_AA, SHIFT)
        drawn = np.empty_like(roi)
        drawn[:] = clip_colour(mix((222, 228, 235), ident.skin, 0.15))
        sub = Painter(drawn, Pose(p.pose.scale, p.pose.roll, p.pose.yaw,
                                   (p.pose.centre[0] - x0, p.pose.centre[1] - y0)))
        iris_centre = eye.mean(0) + gaze * width
        r = 0.22 * width
        sub.ellipse(iris_centre, (r, r), ident.iris)
        sub.ellipse(iris_centre, (r * 0.45, r * 0.45), (15, 15, 18))
        sub.ellipse(iris_centre + (-0.3 * r, -0.35 * r), (r * 0.18, r * 0.18), (235, 240, 245))
        m = mask[..., None].astype(np.float32) / 255
        roi[:] = (roi * (1 - m) + drawn * m).astype(np.uint8)
        # Lash line, lower lid, and the lid crease above.
        p.line(upper, ident.hair * 0.25 + 10, 0.009)
        p.line(lower, ident.skin * 0.6, 0.004)
        centre = eye.mean(0)
        _wrinkle(p, ident, (upper - centre) * (0.92, 1.1) + centre + (0, -0.018), 0.45, 0.005)


def _draw_nose(p: Painter, ident: Identity, lm: np.ndarray) -> None:
    for wing, inner, side in ((lm[31], lm[32], -1), (lm[35], lm[34], 1)):
        nostril = (wing * 0.55 + inner * 0.45) + (0, -0.006)
        p.fill(ellipse(nostril, (0.017, 0.008), 12, side * 0.25), ident.skin * 0.38)
        # The alar crease curls around the nose wing.
        ala = [wing + (side * -0.004, -0.04), wing + (side * 0.012, -0.024),
               wing + (side * 0.01, -0.002), wing + (side * -0.006, 0.006)]
        p.line(spline(ala, 4), ident.skin * 0.7, 0.006)


def _draw_mouth(p: Painter, ident: Identity, lm: np.ndarray) -> None:
    upper_outer = spline(lm[48:55], 4)
    lower_outer = spline(lm[[54, 55, 56, 57, 58, 59, 48]], 4)
    upper_inner = spline(lm[[48, 61, 62, 63, 54]], 4)
    lower_inner = spline(lm[[54, 65, 66, 67, 48]], 4)
    gap = float(np.mean(lm[[65, 66, 67], 1] - lm[[63, 62, 61], 1]))
    if gap > 0.004:  # an open mouth: dark inside, upper teeth showing
        p.fill(np.concatenate([upper_inner, lower_inner]), (40, 32, 70))
        teeth = upper_inner + (0, min(gap * 0.6, 0.02))
        p.fill(np.concatenate([upper_inner, teeth[::-1]]), (205, 220, 228))
    p.fill(np.concatenate([upper_outer, upper_inner[::-1]]), ident.lips * 0.9)
    p.fill(np.concatenate([lower_outer, lower_inner[::-1]]), ident.lips * 1.04)
    p.line(upper_inner, ident.lips * 0.45, 0.006)


def _soft_features(p: Painter, ident: Identity, lm: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Blurred shading in skin-relative units: eye sockets, nose, cheeks, chin.

    Drawn as hard shapes into a float layer that `draw_face` blurs and adds, so each gain
    here means "this much brighter (+) or darker (-) than the skin".
    """
    layer = np.zeros(p.image.shape, np.float32)
    skin = ident.skin

    def soft(points, gain, tint=(0.0, 0.0, 0.0)):
        p.fill(points, skin * gain + np.asarray(tint), image=layer)

    for eye in (lm[36:42], lm[42:48]):
        soft(ellipse(eye.mean(0) + (0, -0.01), (0.085, 0.05)), -0.12)
    m = MIDLINE_X
    for side in (-1, 1):  # the nose's sides, lit from the front
        soft([(m + side * 0.02, lm[28, 1]), (m + side * 0.035, lm[28, 1]),
              (m + side * 0.06, lm[30, 1]), (m + side * 0.03, lm[30, 1])], -0.12)
    soft(ellipse(lm[30] + (0, -0.012), (0.022, 0.018)), 0.1)
    soft(ellipse((lm[33] + lm[51]) / 2, (0.018, 0.025)), -0.09)
    # AU6 and AU12 lift and round the cheeks; AU6 also shades the bag under the eye.
    lift = 0.04 * a[3] + 0.015 * a[4]
    for eye, side in ((lm[36:42], -1), (lm[42:48], 1)):
        cheek = eye.mean(0) + (side * 0.035, 0.14 - lift) + ident.cheek * (side, 1)
        soft(ellipse(cheek, (0.075, 0.055)), 0.04 + 0.1 * max(a[3], a[4]),
             (-3, -4, 8 * (0.5 + a[3])))
        soft(ellipse(eye.mean(0) + (0, 0.035), (0.05, 0.012)), -0.12 * a[3])
    # AU4 bunches the skin between the brows into a shadow.
    soft(ellipse((m, (lm[21, 1] + lm[22, 1]) / 2 + 0.03), (0.035, 0.03)), -0.14 * a[2])
    # AU17: a shadow under the pushed-up lower lip, a highlight on the raised chin boss.
    soft(ellipse(lm[57] + (0, 0.04), (0.06, 0.015)), -0.05 - 0.12 * a[5])
    soft(ellipse((lm[57] + lm[8]) / 2 + (0, 0.025 - 0.01 * a[5]), (0.05, 0.03)),
         0.03 + 0.1 * a[5])
    # AU12: the folds' shadow on the cheek side.
    for corner, side in ((lm[48], -1), (lm[54], 1)):
        soft(ellipse(corner + (side * 0.04, -0.03), (0.025, 0.045), 12, side * -0.3),
             -0.04 - 0.1 * a[4])
    return layer


# ---------------------------------------------------------------------------------------------
# Occluders
# ---------------------------------------------------------------------------------------------


def draw_occluders(p: Painter, ident: Identity, lm: np.ndarray, rng: np.random.Generator):
    """The target's occasional fringe of hair, glasses and hand over the face."""
    if ident.hair_style != "bald" and rng.uniform() < 0.15:
        _draw_fringe(p, ident, lm, rng)
    if rng.uniform() < 0.15:
        _draw_glasses(p, lm, rng)
    if rng.uniform() < 0.1:
        _draw_hand(p, ident, rng)


def _draw_glasses(p: Painter, lm: np.ndarray, rng: np.random.Generator) -> None:
    """Glasses over the eyes (brows partly behind the frame); some are sunglasses."""
    frame = rng.uniform(10, 90, 3) if rng.uniform() < 0.7 else rng.uniform(0, 255, 3)
    lenses = [ellipse(eye.mean(0) + (0, 0.008), (0.088, 0.062), 28)
              for eye in (lm[36:42], lm[42:48])]
    if rng.uniform() < 0.3:  # sunglasses: tinted lenses over the eyes
        tinted = p.image.copy()
        for lens in lenses:
            p.fill(lens, rng.uniform(0, 60, 3), image=tinted)
        cv2.addWeighted(p.image, 0.3, tinted, 0.7, 0, dst=p.image)
    for lens in lenses:
        p.line(lens, frame, 0.012, closed=True)
    left, right = (lens.mean(0) for lens in lenses)
    p.line([left + (0.088, -0.01), (MIDLINE_X, left[1] - 0.02), right - (0.088, 0.01)], frame,
           0.01)
    p.line([left - (0.088, 0.01), lm[0] + (0.01, 0.0)], frame, 0.01)
    p.line([right + (0.088, -0.01), lm[16] - (0.01, 0.0)], frame, 0.01)


def _draw_hand(p: Painter, ident: Identity, rng: np.random.Generator) -> None:
    """A hand raised to the face: palm and four fingers pointing up, over the mouth or a cheek."""
    skin = ident.skin * rng.uniform(0.88, 1.05)
    side = rng.choice([-1.0, 1.0])
    centre = np.array([MIDLINE_X + side * rng.uniform(0.0, 0.35), rng.uniform(0.9, 1.15)])
    angle = side * rng.uniform(0.0, 0.6)
    c, s = math.cos(angle), math.sin(angle)
    turn = np.array([[c, -s], [s, c]])
    p.fill(ellipse(centre, (0.13, 0.16), 20, angle), skin * 0.75, body=True)
    p.fill(ellipse(centre, (0.12, 0.15), 20, angle), skin, body=True)
    for j, length in enumerate((0.15, 0.19, 0.18, 0.14)):
        base = centre + turn @ (-0.085 + 0.057 * j, -0.1)
        tip = base + turn @ (0.02 * (j - 1.5), -length)
        for width, shade in ((0.05, 0.75), (0.04, 1.0)):  # a darker rim, then the finger
            p.line([base, tip], skin * shade, width, body=True)


def _draw_fringe(p: Painter, ident: Identity, lm: np.ndarray, rng: np.random.Generator) -> None:
    """Hair falling over the forehead, its ragged edge down to (or over) the brows."""
    centre, (ax, by) = _skull(ident)
    top = arc(centre, (ax + 0.035, by + 0.06), 0.2, np.pi - 0.2, 16)
    x = np.linspace(centre[0] - 0.85 * ax, centre[0] + 0.85 * ax, 13)
    brow_y = lm[17:27, 1].min()
    y = brow_y + rng.uniform(-0.1, 0.03) + rng.uniform(-0.03, 0.03, 13)
    y[1::2] -= 0.04  # alternate strand tips and gaps
    p.fill(np.concatenate([top, np.stack([x, y], 1)]), ident.hair)
