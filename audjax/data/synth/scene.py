"""SynthAU's two domains around the face: where the camera puts it, what is behind it, and what
the camera does to the picture.

Source ("lab", BP4D-like): near-frontal, one plain backdrop, even light, a clean camera. Target
("wild", EmotioNet-like): in-plane rotation up to ±30°, yaw up to ±35° (the far half of the face
squashed), scale and position jitter, cluttered backgrounds, light gradients, colour casts, blur,
noise and JPEG artefacts. A raw image is `RAW_SCALE` times the aligned size with the face anywhere
plausible.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from audjax.data.synth.drawing import Pose, clip_colour
from audjax.data.synth.face import NEUTRAL_FACE, eye_centres

RAW_SCALE = 1.5  # raw image side / aligned image side
BOX_ENLARGE = 2.8  # docs/design.md §6: the aligned image spans 2.8x the eyes-nose-mouth box

BACKDROP = (84, 80, 76)  # the lab's single plain backdrop (BGR)


def _aligned_span() -> float:
    """Face units an aligned image spans for the mean face (docs/design.md §6: the eye-centres,
    nose-tip and mouth-corner box, enlarged 2.8x)."""
    left, right = eye_centres(NEUTRAL_FACE)
    box = np.stack([left, right, NEUTRAL_FACE[30], NEUTRAL_FACE[48], NEUTRAL_FACE[54]])
    return BOX_ENLARGE * float((box.max(0) - box.min(0)).max())


ALIGNED_SPAN = _aligned_span()


def raw_size(image_size: int) -> int:
    """Side of the raw (unaligned) images for aligned images of side `image_size`."""
    return int(round(RAW_SCALE * image_size))


def sample_pose(rng: np.random.Generator, domain: str, image_size: int) -> Pose:
    """Source: one fixed camera, the subject near-frontal and centred. Target: any roll up to
    30°, yaw up to 35°, faces smaller or larger, anywhere the face still fits the frame."""
    size = raw_size(image_size)
    aligned_scale = (image_size - 1) / ALIGNED_SPAN  # the scale alignment will bring faces to
    if domain == "source":
        scale = aligned_scale * rng.uniform(0.95, 1.05)
        roll, yaw = rng.normal(0, 0.03), rng.uniform(-0.08, 0.08)
        centre = size / 2 + rng.normal(0, 0.015 * size, 2)
    else:
        scale = aligned_scale * rng.uniform(0.7, 1.12)
        roll, yaw = rng.uniform(-1, 1) * math.radians(30), rng.uniform(-1, 1) * math.radians(35)
        # Keep the face in the frame: the forehead reaches 0.65 face units above POSE_CENTRE,
        # the chin 0.5 below, the cheeks 0.45 to the sides (a little may be cut off).
        low, high = np.array([0.45, 0.6]) * scale, size - np.array([0.45, 0.5]) * scale
        centre = rng.uniform(low, high)
    return Pose(float(scale), float(roll), float(yaw), (float(centre[0]), float(centre[1])))


def clutter(rng: np.random.Generator, size: int) -> np.ndarray:
    """A busy scene: a colour gradient, low-frequency texture and random shapes, out of focus."""
    # Gradient and texture are smooth, so they are made on a coarse grid and resized.
    cells = int(rng.integers(3, 24))
    t = np.linspace(-0.5, 0.5, cells)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = math.cos(angle) * t[None, :] + math.sin(angle) * t[:, None] + 0.5
    c0, c1 = rng.uniform(0, 255, (2, 3))
    coarse = c0 + (c1 - c0) * ramp[..., None]
    coarse += rng.uniform(0, 60) * rng.uniform(-1, 1, coarse.shape)
    image = cv2.resize(np.clip(coarse, 0, 255).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 13))):
        colour = clip_colour(rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        a, b = (rng.uniform(-0.2, 1.2, (2, 2)) * size).astype(int).tolist()
        if kind == 0:
            cv2.rectangle(image, a, b, colour, -1)
        elif kind == 1:
            cv2.circle(image, a, int(rng.uniform(0.04, 0.35) * size), colour, -1, cv2.LINE_AA)
        elif kind == 2:
            cv2.line(image, a, b, colour, max(1, int(rng.uniform(0.005, 0.06) * size)),
                     cv2.LINE_AA)
        else:
            corners = rng.uniform(-0.1, 1.1, (int(rng.integers(3, 6)), 2)) * size
            cv2.fillPoly(image, [corners.astype(np.int32)], colour, cv2.LINE_AA)
    sigma = rng.uniform(0, 2.5) * size / 300
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma > 0.3 else image


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed (2 size, 2 size, 3) field of standard normal noise; each image takes a random
    window of it, which is much cheaper than drawing fresh normals for every pixel."""
    return np.random.default_rng(0).standard_normal((2 * size, 2 * size, 3), np.float32)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    x, y = rng.integers(0, size, 2)
    return cv2.add(image, _noise_bank(size)[y:y + size, x:x + size] * sigma, dtype=cv2.CV_8U)


def wild_camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven light, a colour cast, a tone curve, defocus, sensor noise and JPEG compression."""
    size = image.shape[0]
    t = np.linspace(-1, 1, 8)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = math.cos(angle) * t[None, :] + math.sin(angle) * t[:, None]
    light = 1 + rng.uniform(0.1, 0.45) * ramp
    cast = rng.uniform(0.8, 1.2, 3) * rng.uniform(0.65, 1.15)
    gain = cv2.resize((light[..., None] * cast).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_LINEAR)
    image = cv2.multiply(image, gain, dtype=cv2.CV_8U)
    curve = 255 * (np.arange(256) / 255) ** rng.uniform(0.75, 1.3)
    image = cv2.LUT(image, np.round(curve).astype(np.uint8))
    if rng.uniform() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.5) * size / 300)
    image = add_noise(image, rng.uniform(1, 8), rng)
    quality = int(rng.integers(25, 91))
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


