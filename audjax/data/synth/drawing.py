"""SynthAU's drawing primitives: curves in face units, the pose that projects them to pixels,
and a painter that draws them with OpenCV (anti-aliased, in fixed point)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from audjax.data.synth.face import MIDLINE_X

POSE_CENTRE = np.array([MIDLINE_X, 0.55])  # rotations and yaw turn about this point
HEAD_RADIUS = 0.55  # yaw treats the face as a cylinder of this radius around the midline

SHIFT = 4  # OpenCV fixed-point bits: shapes are placed to 1/16 pixel, so small faces stay smooth
ONE = 1 << SHIFT


def spline(points, n: int = 8) -> np.ndarray:
    """Catmull-Rom curve through `points` (M, 2), `n` samples per segment.

    Example: `spline([(0, 0), (1, 1), (2, 0)], n=4)` has 9 points, from (0, 0) through (1, 1)
    to (2, 0).
    """
    p = np.asarray(points, float)
    # The end points mirrored, so that the curve leaves and arrives in a straight line.
    ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    segments = len(p) - 1
    p0, p1, p2, p3 = (ext[i:i + segments, None] for i in range(4))  # each (segments, 1, 2)
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    curve = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                   + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
    return np.concatenate([curve.reshape(-1, 2), p[-1:]])


def ellipse(centre, axes, n: int = 24, angle: float = 0.0) -> np.ndarray:
    """(n, 2) points of an ellipse in face units (`angle` in radians)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], 1)


def arc(centre, axes, start: float, stop: float, n: int = 24) -> np.ndarray:
    """Points of an ellipse arc from angle `start` to `stop` (radians, counter-clockwise on screen:
    0 is to the right, pi/2 up)."""
    t = np.linspace(start, stop, n)
    return np.stack([centre[0] + axes[0] * np.cos(t), centre[1] - axes[1] * np.sin(t)], 1)


def _nose_depth(points: np.ndarray) -> np.ndarray:
    """How far each face-unit point stands out of the face's cylinder: only the nose does.

    The ridge rises from the nasal root to the tip (y about 0.55) and falls off under it, so
    under yaw the nose swings out past the cheek on the near side, as a real one does.
    """
    x, y = points[:, 0] - MIDLINE_X, points[:, 1]
    ramp = np.minimum(np.minimum((y - 0.3) / 0.26, (0.64 - y) / 0.08), 1)
    return 0.1 * np.maximum(ramp, 0) * np.exp(-((x / 0.05) ** 2))


@dataclass(frozen=True)
class Pose:
    """Where a face appears in its raw image.

    The face is a cylinder of radius HEAD_RADIUS about the vertical line x = MIDLINE_X: yaw turns
    it (squashing the far side), then roll, scale and translation place POSE_CENTRE at `centre`.
    """

    scale: float  # pixels per face unit
    roll: float  # radians, in-plane, clockwise on screen
    yaw: float  # radians
    centre: tuple[float, float]  # pixel position of POSE_CENTRE

    def project(self, points, body: bool = False) -> np.ndarray:
        """(N, 2) face units -> (N, 2) float pixels. `body` points (neck, shoulders) do not lie on
        the head's cylinder: they turn as a flat plane, a little."""
        p = np.asarray(points, float).reshape(-1, 2)
        if body:
            x = (p[:, 0] - MIDLINE_X) * math.cos(self.yaw * 0.3)
        else:
            u = np.minimum(np.maximum((p[:, 0] - MIDLINE_X) / HEAD_RADIUS, -1), 1)
            # Points turned past the silhouette stay on it (the far cheek's outline).
            turned = np.minimum(np.maximum(np.arcsin(u) + self.yaw, -np.pi / 2), np.pi / 2)
            x = HEAD_RADIUS * (np.sin(turned) - math.sin(self.yaw)) \
                + _nose_depth(p) * math.sin(self.yaw)
        y = p[:, 1] - POSE_CENTRE[1]
        c, s = math.cos(self.roll), math.sin(self.roll)
        return np.stack([self.centre[0] + self.scale * (c * x - s * y),
                         self.centre[1] + self.scale * (s * x + c * y)], 1)


class Painter:
    """Draws face-unit shapes through a `Pose` onto a BGR uint8 image (anti-aliased)."""

    def __init__(self, image: np.ndarray, pose: Pose):
        self.image = image
        self.pose = pose

    def fixed(self, points, body: bool = False) -> np.ndarray:
        """Pixel positions in OpenCV's fixed point (`SHIFT` fractional bits)."""
        return np.round(self.pose.project(points, body) * ONE).astype(np.int32)

    def width(self, units: float) -> int:
        """A line width in whole pixels (OpenCV's thickness), at least 1."""
        return max(1, int(round(units * self.pose.scale)))

    def fill(self, points, colour, body: bool = False, image: np.ndarray | None = None):
        target = self.image if image is None else image
        cv2.fillPoly(target, [self.fixed(points, body)], clip_colour(colour), cv2.LINE_AA, SHIFT)

    def line(self, points, colour, width: float, closed: bool = False, body: bool = False):
        cv2.polylines(self.image, [self.fixed(points, body)], closed, clip_colour(colour),
                      self.width(width), cv2.LINE_AA, SHIFT)

    def ellipse(self, centre, axes, colour):
        """A filled ellipse (an iris, a pupil): squashed by yaw, turned by roll."""
        c = self.fixed([centre])[0]
        a = (int(axes[0] * self.pose.scale * math.cos(self.pose.yaw) * ONE),
             int(axes[1] * self.pose.scale * ONE))
        cv2.ellipse(self.image, (int(c[0]), int(c[1])), a, math.degrees(self.pose.roll), 0, 360,
                    clip_colour(colour), -1, cv2.LINE_AA, SHIFT)


def clip_colour(c) -> tuple[float, ...]:
    """A colour as OpenCV takes it: a tuple of floats, each clipped to [0, 255]."""
    return tuple(min(255.0, max(0.0, float(v))) for v in c)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones run at a reduced resolution (soft layers need no detail)."""
    factor = max(1, int(sigma // 3))
    if factor == 1:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def mix(a, b, t: float) -> np.ndarray:
    """The colour (or point) a fraction `t` of the way from `a` to `b`."""
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t

