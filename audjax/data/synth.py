"""SynthAU: a generated two-domain facial action unit data set in ADLD's list format.

The licensed sets of the paper (BP4D -> EmotioNet) cannot ship with the code, so every command
defaults to this one: procedural faces with the 68 iBUG landmarks, six AUs that move what FACS
says they move, and two domains that differ the way lab and in-the-wild photographs do.

Faces. The base geometry is the normalised 68-point mean face of OpenFace (`TEMPLATE`). Each
identity perturbs it (face width and length, eye spacing and size, nose length and width, mouth
width and height, brow height) and has its own skin, hair, iris and lip colours. Everything is
drawn with OpenCV primitives in "face units" (the template's coordinates, inter-ocular distance
about 0.38) and projected to pixels by one pose function, so the landmarks and the picture agree.

AUs (label order `audjax.landmarks.AU_NAMES`). Each has an intensity in [0, 1] that moves the
landmarks (linear displacement fields, `AU_DISPLACEMENT`) and draws appearance cues whose
contrast grows with it; an AU occurs when its intensity exceeds `ACTIVE_THRESHOLD`:

    AU1   inner brows up; horizontal wrinkles in the middle of the forehead
    AU2   outer brows up; wrinkles over the outer forehead
    AU4   brows down and together; vertical furrows and a shadow between the brows
    AU6   cheeks and lower lids up, eyes narrower; crow's feet, lid bags, raised cheek highlight
    AU12  lip corners up and out; deeper nasolabial folds, rounder cheeks
    AU17  chin boss and lower lip up; chin dimpling, a deeper furrow under the lower lip

Intensities come from a Gaussian copula: correlated normals (AU1 with AU2, AU6 with AU12, ...)
mapped through per-domain base rates, so the occurrence rates are exactly the table's in
expectation and co-occurrence looks like real faces.

Domains. Source ("lab", BP4D-like): 41 subjects split subject-exclusively, near-frontal, one
plain backdrop, even light, a clean camera. Target ("wild", EmotioNet-like): a new person in
every image, in-plane rotation up to ±30°, yaw up to ±35° (the far half of the face squashed),
scale and position jitter, cluttered backgrounds, light gradients, colour casts, blur, noise,
JPEG artefacts, and on some images glasses, a hand or a fringe of hair over the face. Its AU
rates are lower for AU1/2/4/17 (AU12 and AU6 the most common), as in EmotioNet.

Pipeline. A raw image is 1.5x the aligned size with the face anywhere plausible. `generate`
hands `audjax.data.prepare.prepare` one `RawItem` per image: the 68 landmarks up front and the
pixels as a callable that renders them in prepare's worker process, so the images go through
exactly the alignment real data goes through without a round trip through the disk. Aligned
images are stored as JPEG (OpenCV's default quality, 95). Every image draws its randomness from
`SeedSequence(seed, spawn_key=(split, index))`, so the data set is a function of the seed, the
sizes and the image size alone, whatever the number of workers.

    python -m audjax.data.synth --out /tmp/synthau                  # 10,000 images, 200x200
    python -m audjax.data.synth --out /tmp/synthau_small --image_size 72 --n_train 500
    python -m audjax.data.synth --domain_shift_check --out /tmp/synthau
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from audjax.data.lists import read_lists, write_weights
from audjax.data.prepare import RawItem, prepare
from audjax.files import atomic_write
from audjax.landmarks import AU_NAMES, LEFT_EYE_68, RIGHT_EYE_68

VERSION = 1

SPLITS = ("source_train", "source_val", "source_test", "target_train", "target_val", "target_test")

# 10,000 images in all: 3,500 training, 500 validation and 1,000 test images per domain.
DEFAULT_SIZES = {
    "source_train": 3500, "source_val": 500, "source_test": 1000,
    "target_train": 3500, "target_val": 500, "target_test": 1000,
}

NUM_AUS = len(AU_NAMES)
ACTIVE_THRESHOLD = 0.35  # an AU occurs when its intensity exceeds this
MISSING_LABEL = 999  # ADLD's "unknown" label (the target training set is unlabelled)
RAW_SCALE = 1.5  # raw image side / aligned image side
BOX_ENLARGE = 2.8  # docs/design.md §6: the aligned image spans 2.8x the eyes-nose-mouth box


# What sets the target domain apart (`generate`'s target_shift): "full" is everything the module
# doc lists; "appearance" keeps the source's pose (near-frontal, centred) and draws no occluders,
# so the target differs only in identity, AU rates, background and camera (light, colour, blur,
# noise, JPEG): the texture-like shift that a landmark/background separation can factor out.
TARGET_SHIFTS = ("full", "appearance")


def _domain(split: str) -> str:
    return split.split("_")[0]


# ---------------------------------------------------------------------------------------------
# Geometry: the mean face, identities and AU displacement fields
# ---------------------------------------------------------------------------------------------

# The normalised 68-point iBUG mean face, `TEMPLATE` in OpenFace's openface/align_dlib.py
# (cmusatyalab/openface, Apache-2.0). x to the right, y down, face about 0.9 units across.
MEAN_FACE = np.array([
    (0.0792396913815, 0.339223741112), (0.0829219487236, 0.456955367943),
    (0.0967927109165, 0.575648016728), (0.122141515615, 0.691921601066),
    (0.168687863544, 0.800341263616), (0.239789390707, 0.895732504778),
    (0.325662452515, 0.977068762493), (0.422318282013, 1.04329000149),
    (0.531777802068, 1.06080371126), (0.641296298053, 1.03981924107),
    (0.738105872266, 0.972268833998), (0.824444363295, 0.889624082279),
    (0.894792677532, 0.792494155836), (0.939395486253, 0.681546643421),
    (0.96111933829, 0.562238253072), (0.970579841181, 0.441758925744),
    (0.971193274221, 0.322118743967), (0.163846223133, 0.249151738053),
    (0.21780354657, 0.204255863861), (0.291299351124, 0.192367318323),
    (0.367460241458, 0.203582210627), (0.4392945113, 0.233135599851),
    (0.586445962425, 0.228141644834), (0.660152671635, 0.195923841854),
    (0.737466449096, 0.182360984545), (0.813236546239, 0.192828009114),
    (0.8707571886, 0.235293377042), (0.51534533827, 0.31863546193),
    (0.516221448289, 0.396200446263), (0.517118861835, 0.473797687758),
    (0.51816430343, 0.553157797772), (0.433701156035, 0.604054457668),
    (0.475501237769, 0.62076344024), (0.520712933176, 0.634268222208),
    (0.565874114041, 0.618796581487), (0.607054002672, 0.60157671656),
    (0.252418718401, 0.331052263829), (0.298663015648, 0.302646354002),
    (0.355749724218, 0.303020650651), (0.403718978315, 0.33867711083),
    (0.352507175597, 0.349987615384), (0.296791759886, 0.350478978225),
    (0.631326076346, 0.334136672344), (0.679073381078, 0.29645404267),
    (0.73597236153, 0.294721285802), (0.782865376271, 0.321305281656),
    (0.740312274764, 0.341849376713), (0.68499850091, 0.343734332172),
    (0.353167761422, 0.746189164237), (0.414587777921, 0.719053835073),
    (0.477677654595, 0.706835892494), (0.522732900812, 0.717092275768),
    (0.569832064287, 0.705414478982), (0.635195811927, 0.71565572516),
    (0.69951672331, 0.739419187253), (0.639447159575, 0.805236879972),
    (0.576410514055, 0.835436670169), (0.525398405766, 0.841706377792),
    (0.47641545769, 0.837505914975), (0.41379548902, 0.810045601727),
    (0.380084785646, 0.749979603086), (0.477955996282, 0.74513234612),
    (0.523389793327, 0.748924302636), (0.571057789237, 0.74332894691),
    (0.672409137852, 0.744177032192), (0.572539621444, 0.776609286626),
    (0.5240106503, 0.783370783245), (0.477561227414, 0.778476346951),
])

# Mirror partner of each iBUG point (jaw, brows, nose base, eyes and lips swap left and right).
MIRROR_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)

MIDLINE_X = 0.52  # the face's vertical axis in face units
POSE_CENTRE = np.array([MIDLINE_X, 0.55])  # rotations and yaw turn about this point
HEAD_RADIUS = 0.55  # yaw treats the face as a cylinder of this radius around the midline


def _symmetric_face(points: np.ndarray) -> np.ndarray:
    """Average a face with its mirror image about x = MIDLINE_X (the template is nearly so)."""
    mirrored = points[MIRROR_68].copy()
    mirrored[:, 0] = 2 * MIDLINE_X - mirrored[:, 0]
    return (points + mirrored) / 2


def _neutral_mean_face() -> np.ndarray:
    """The symmetric mean face with the lips closed (the template's inner lips are apart)."""
    face = _symmetric_face(MEAN_FACE)
    face[[65, 66, 67]] = face[[63, 62, 61]]
    return face


NEUTRAL_FACE = _neutral_mean_face()


def _eye_centres(landmarks68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks68[..., LEFT_EYE_68, :].mean(-2), landmarks68[..., RIGHT_EYE_68, :].mean(-2)


def _iod(landmarks68: np.ndarray) -> float:
    left, right = _eye_centres(landmarks68)
    return float(np.linalg.norm(right - left))


def _displacement(moves: dict[int, tuple[float, float]]) -> np.ndarray:
    """A (68, 2) field from the moves of image-left and midline points, mirrored to the right.

    A point's mirror partner gets the same move with dx negated, so every AU acts
    symmetrically (facial AUs can be unilateral; the labels here are bilateral).
    """
    field = np.zeros((68, 2))
    for i, (dx, dy) in moves.items():
        field[i] = (dx, dy)
        field[MIRROR_68[i]] = (-dx if MIRROR_68[i] != i else 0.0, dy)
    return field


# Landmark moves at intensity 1, in face units (inter-ocular distance 0.38; y grows downward).
# Image-left points are given; "outward" is -x there. Inner and outer lip points that touch
# when the mouth is closed move together so that a closed mouth stays closed.
AU_DISPLACEMENT = np.stack([
    # AU1 inner brow raiser: the inner ends of the brows go up, the outer ends hardly move.
    _displacement({21: (0, -0.075), 20: (0, -0.06), 19: (0, -0.035), 18: (0, -0.015),
                   17: (0, -0.005)}),
    # AU2 outer brow raiser: the outer two thirds of the brows go up.
    _displacement({17: (-0.004, -0.07), 18: (0, -0.066), 19: (0, -0.045), 20: (0, -0.02),
                   21: (0, -0.006)}),
    # AU4 brow lowerer: brows down and drawn together, most at the inner ends; lids lower.
    _displacement({21: (0.03, 0.04), 20: (0.02, 0.036), 19: (0.01, 0.028), 18: (0.004, 0.02),
                   17: (0, 0.012), 37: (0, 0.006), 38: (0, 0.007)}),
    # AU6 cheek raiser: lower lids and cheeks up, the eye narrows, outer brows drop a little.
    _displacement({40: (0, -0.015), 41: (0, -0.015), 36: (0, -0.006), 39: (0, -0.002),
                   37: (0, 0.005), 38: (0, 0.004), 17: (0, 0.012), 18: (0, 0.008),
                   1: (0, -0.01), 2: (-0.004, -0.012), 3: (-0.004, -0.008)}),
    # AU12 lip corner puller: corners up and out, the lips stretch into a curve.
    _displacement({48: (-0.045, -0.045), 60: (-0.04, -0.041), 49: (-0.016, -0.022),
                   59: (-0.022, -0.03), 61: (-0.012, -0.016), 67: (-0.012, -0.016),
                   50: (-0.004, -0.008), 58: (-0.006, -0.012), 51: (0, -0.004),
                   57: (0, -0.006), 62: (0, -0.005), 66: (0, -0.005),
                   4: (-0.006, 0), 5: (-0.004, 0)}),
    # AU17 chin raiser: the chin boss pushes the lower lip (and with it the upper) up.
    _displacement({8: (0, -0.04), 7: (0, -0.035), 6: (0, -0.02), 5: (0, -0.008),
                   57: (0, -0.036), 58: (0, -0.032), 59: (0, -0.022), 66: (0, -0.03),
                   67: (0, -0.026), 62: (0, -0.03), 61: (0, -0.026), 51: (0, -0.022),
                   50: (0, -0.02), 49: (0, -0.012), 48: (0, 0.006), 60: (0, 0.006)}),
])

_MEAN_IOD = _iod(NEUTRAL_FACE)


@dataclass(frozen=True)
class Identity:
    """One synthetic person: a neutral 68-point shape (face units) and colours (BGR 0-255)."""

    shape: np.ndarray  # (68, 2) neutral landmarks
    skin: np.ndarray  # (3,)
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    hair_style: str  # "short", "long" or "bald"
    hairline: float  # y of the hairline at the midline
    brow_width: float  # brow thickness at its inner end, face units
    wrinkle: float  # contrast of the lines every face has at rest (older faces: more)
    cheek: np.ndarray  # (2,) offset of the cheek highlight from its mean place


# Skin tones from light to dark (BGR); an identity takes a random point on this polyline.
_SKIN_TONES = np.array([(196, 214, 244), (152, 180, 224), (110, 145, 196), (80, 112, 160),
                        (56, 78, 118), (40, 55, 86)], float)
_HAIR_COLOURS = np.array([(22, 24, 28), (30, 42, 62), (42, 68, 104), (82, 140, 190),
                          (40, 66, 140), (150, 150, 156)], float)
_HAIR_WEIGHTS = np.array([0.3, 0.25, 0.2, 0.1, 0.07, 0.08])
_IRIS_COLOURS = np.array([(28, 56, 96), (20, 30, 48), (160, 120, 70), (80, 120, 80),
                          (48, 96, 118)], float)


def random_identity(rng: np.random.Generator) -> Identity:
    """Draws a person: the mean face reshaped by per-feature perturbations, and colours."""
    shape = NEUTRAL_FACE.copy()
    u = rng.uniform
    # Face width and length: scale the jaw about the midline and (below the ears) the ear line.
    width, length = u(0.88, 1.12), u(0.9, 1.1)
    jaw = np.arange(17)
    shape[jaw, 0] = MIDLINE_X + (shape[jaw, 0] - MIDLINE_X) * width
    shape[jaw, 1] = 0.33 + (shape[jaw, 1] - 0.33) * np.where(shape[jaw, 1] > 0.33, length, 1)
    # Eyes: spacing (each eye slides sideways) and size (about its own centre).
    spacing, eye_size = u(-0.025, 0.025), u(0.85, 1.2)
    for eye, side in ((LEFT_EYE_68, -1), (RIGHT_EYE_68, 1)):
        centre = shape[eye].mean(0)
        shape[eye] = centre + (shape[eye] - centre) * eye_size + (side * spacing, 0)
    # Brows follow the eyes sideways and sit higher or lower.
    brow_height = u(-0.03, 0.025)
    shape[17:22] += (-spacing, brow_height)
    shape[22:27] += (spacing, brow_height)
    # Nose: length (tip and base move down) and width of the base.
    nose_length, nose_width = u(-0.04, 0.04), u(0.85, 1.25)
    shape[28:36, 1] += nose_length * np.array([0.33, 0.66, 1, 1, 1, 1, 1, 1])
    shape[31:36, 0] = MIDLINE_X + (shape[31:36, 0] - MIDLINE_X) * nose_width
    # Mouth: width about the midline, height, and lip thickness about the lip line.
    mouth_width, mouth_y, lip = u(0.85, 1.15), u(-0.02, 0.03), u(0.75, 1.35)
    mouth = np.arange(48, 68)
    shape[mouth, 0] = MIDLINE_X + (shape[mouth, 0] - MIDLINE_X) * mouth_width
    line_y = shape[62, 1]
    shape[mouth, 1] = line_y + (shape[mouth, 1] - line_y) * lip + mouth_y + nose_length / 2
    shape += rng.normal(0, 0.003, shape.shape)  # small asymmetries make faces individual
    shape = _symmetric_face(shape) * 0.3 + shape * 0.7
    shape[[65, 66, 67]] = shape[[63, 62, 61]]  # lips closed at rest

    skin = _on_polyline(_SKIN_TONES, rng.uniform()) * rng.uniform(0.95, 1.05, 3)
    hair_choice = rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)
    hair = _HAIR_COLOURS[hair_choice] * rng.uniform(0.85, 1.15)
    # Lips: a darker, redder version of the skin.
    lips = skin * (0.6, 0.56, 0.8) + np.array([8, 8, 22]) * rng.uniform(0.5, 1.5)
    return Identity(
        shape=shape,
        skin=np.clip(skin, 0, 255),
        hair=np.clip(hair, 0, 255),
        iris=_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))] * rng.uniform(0.8, 1.2),
        lips=np.clip(lips, 0, 255),
        hair_style=str(rng.choice(["short", "long", "bald"], p=[0.5, 0.4, 0.1])),
        hairline=rng.uniform(-0.02, 0.07),
        brow_width=rng.uniform(0.022, 0.036),
        wrinkle=rng.uniform(0.0, 0.2),
        cheek=rng.normal(0, 0.01, 2),
    )


def _on_polyline(anchors: np.ndarray, t: float) -> np.ndarray:
    pos = t * (len(anchors) - 1)
    i = min(int(pos), len(anchors) - 2)
    return anchors[i] + (anchors[i + 1] - anchors[i]) * (pos - i)


def expression_landmarks(shape: np.ndarray, intensity: np.ndarray,
                         mouth_open: float = 0.0) -> np.ndarray:
    """(68, 2) face-unit landmarks of `shape` showing AU `intensity` (K,) in [0, 1].

    The AU fields scale with the identity's inter-ocular distance. `mouth_open` (face units)
    drops the jaw and the lower lip; it is a nuisance factor, not an AU of the label set.
    """
    scale = _iod(shape) / _MEAN_IOD
    moved = shape + np.tensordot(np.asarray(intensity, float), AU_DISPLACEMENT, 1) * scale
    if mouth_open:
        drop = np.zeros(68)
        drop[[65, 66, 67]] = 1.0
        drop[55:60] = 0.95
        drop[[48, 54, 60, 64]] = 0.35
        drop[4:13] = [0.3, 0.6, 0.85, 1, 1, 1, 0.85, 0.6, 0.3]
        moved[:, 1] += drop * mouth_open
    return moved


# ---------------------------------------------------------------------------------------------
# AU intensities and labels
# ---------------------------------------------------------------------------------------------

# Occurrence rates (AU1, AU2, AU4, AU6, AU12, AU17). Source after BP4D (AU12 and AU6 near half
# the frames, the brow AUs about a fifth); target after EmotioNet, where AU1/2/4/17 are rare
# and smiles dominate. Every rate stays above 7% so that no AU is degenerate.
AU_RATES = {
    "source": np.array([0.22, 0.18, 0.20, 0.45, 0.55, 0.33]),
    "target": np.array([0.10, 0.08, 0.09, 0.27, 0.38, 0.09]),
}

# Correlation of the latent normals: AU1 and AU2 fire together (surprise), AU6 with AU12
# (Duchenne smile), AU4 with AU17 and AU1 (sadness, anger); frowns rarely come with smiles.
_AU_CORRELATION = np.array([
    # AU1  AU2   AU4   AU6   AU12  AU17
    [1.0, 0.85, 0.15, 0.0, 0.0, 0.1],
    [0.85, 1.0, 0.0, 0.0, 0.05, 0.0],
    [0.15, 0.0, 1.0, 0.1, -0.3, 0.3],
    [0.0, 0.0, 0.1, 1.0, 0.75, -0.05],
    [0.0, 0.05, -0.3, 0.75, 1.0, -0.15],
    [0.1, 0.0, 0.3, -0.05, -0.15, 1.0],
])
_AU_CHOLESKY = np.linalg.cholesky(_AU_CORRELATION)
_ERF = np.vectorize(math.erf)


def sample_intensities(rng: np.random.Generator, domain: str, n: int) -> np.ndarray:
    """(n, K) AU intensities in [0, 1] for `domain` ("source" or "target").

    A Gaussian copula: correlated normals z, u = Phi(z), and AU k occurs when u > 1 - rate_k,
    its intensity then uniform in (ACTIVE_THRESHOLD, 1]. Below that, half the faces show none
    of the AU and half a trace (intensity up to the threshold), as real faces do.
    """
    z = rng.standard_normal((n, NUM_AUS)) @ _AU_CHOLESKY.T
    u = 0.5 * (1 + _ERF(z / math.sqrt(2)))
    q = 1 - AU_RATES[domain]
    active = ACTIVE_THRESHOLD + (1 - ACTIVE_THRESHOLD) * (u - q) / (1 - q)
    trace = ACTIVE_THRESHOLD * np.clip((u - q / 2) / (q / 2), 0, 1)
    return np.where(u > q, active, trace).astype(np.float32)


def occurrence(intensity: np.ndarray) -> np.ndarray:
    """AU labels (int32, 1 = occurs) from intensities."""
    return (np.asarray(intensity) > ACTIVE_THRESHOLD).astype(np.int32)


def sample_labels(seed: int, domain: str, n: int) -> np.ndarray:
    """(n, K) labels with the distribution of the images' labels, without rendering anything."""
    rng = np.random.default_rng(seed)
    return occurrence(sample_intensities(rng, domain, n))


# ---------------------------------------------------------------------------------------------
# Drawing: face units -> pixels
# ---------------------------------------------------------------------------------------------

_SHIFT = 4  # OpenCV fixed-point bits: shapes are placed to 1/16 pixel, so small faces stay smooth
_ONE = 1 << _SHIFT


def _spline(points, n: int = 8, closed: bool = False) -> np.ndarray:
    """Catmull-Rom curve through `points` (M, 2), `n` samples per segment.

    Example: `_spline([(0, 0), (1, 1), (2, 0)], n=4)` has 9 points, from (0, 0) through (1, 1)
    to (2, 0).
    """
    p = np.asarray(points, float)
    if closed:
        ext = np.concatenate([p[-1:], p, p[:2]])
    else:  # mirror the end points so the curve leaves and arrives in a straight line
        ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    segments = len(p) if closed else len(p) - 1
    p0, p1, p2, p3 = (ext[i:i + segments, None] for i in range(4))  # each (segments, 1, 2)
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    curve = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                   + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
    curve = curve.reshape(-1, 2)
    return curve if closed else np.concatenate([curve, p[-1:]])


def _ellipse(centre, axes, n: int = 24, angle: float = 0.0) -> np.ndarray:
    """(n, 2) points of an ellipse in face units (`angle` in radians)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], 1)


def _arc(centre, axes, start: float, stop: float, n: int = 24) -> np.ndarray:
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


class _Painter:
    """Draws face-unit shapes through a `Pose` onto a BGR uint8 image (anti-aliased)."""

    def __init__(self, image: np.ndarray, pose: Pose):
        self.image = image
        self.pose = pose

    def fixed(self, points, body: bool = False) -> np.ndarray:
        """Pixel positions in OpenCV's fixed point (`_SHIFT` fractional bits)."""
        return np.round(self.pose.project(points, body) * _ONE).astype(np.int32)

    def width(self, units: float) -> int:
        """A line width in whole pixels (OpenCV's thickness), at least 1."""
        return max(1, int(round(units * self.pose.scale)))

    def fill(self, points, colour, body: bool = False, image: np.ndarray | None = None):
        target = self.image if image is None else image
        cv2.fillPoly(target, [self.fixed(points, body)], _colour(colour), cv2.LINE_AA, _SHIFT)

    def line(self, points, colour, width: float, closed: bool = False, body: bool = False):
        cv2.polylines(self.image, [self.fixed(points, body)], closed, _colour(colour),
                      self.width(width), cv2.LINE_AA, _SHIFT)

    def ellipse(self, centre, axes, colour, image: np.ndarray | None = None):
        """A filled ellipse (an iris, a pupil): squashed by yaw, turned by roll."""
        target = self.image if image is None else image
        c = self.fixed([centre])[0]
        a = (int(axes[0] * self.pose.scale * math.cos(self.pose.yaw) * _ONE),
             int(axes[1] * self.pose.scale * _ONE))
        cv2.ellipse(target, (int(c[0]), int(c[1])), a, math.degrees(self.pose.roll), 0, 360,
                    _colour(colour), -1, cv2.LINE_AA, _SHIFT)


def _colour(c) -> tuple[float, ...]:
    return tuple(min(255.0, max(0.0, float(v))) for v in c)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones run at a reduced resolution (soft layers need no detail)."""
    factor = max(1, int(sigma // 3))
    if factor == 1:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _mix(a, b, t: float) -> np.ndarray:
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t


# ---------------------------------------------------------------------------------------------
# The face
# ---------------------------------------------------------------------------------------------


def _skull(ident: Identity) -> tuple[np.ndarray, tuple[float, float]]:
    """Centre and radii of the forehead's half-ellipse, from the neutral jaw ends and brows."""
    s = ident.shape
    centre = (s[0] + s[16]) / 2
    top = s[17:27, 1].min() - 0.3
    return centre, ((s[16, 0] - s[0, 0]) / 2, centre[1] - top)


def _face_outline(ident: Identity, lm: np.ndarray) -> np.ndarray:
    centre, axes = _skull(ident)
    return np.concatenate([_spline(lm[0:17], 4), _arc(centre, axes, 0.0, np.pi, 28)[1:-1]])


def _draw_body(p: _Painter, ident: Identity, shirt) -> None:
    m = MIDLINE_X
    collar = _arc((m, 1.08), (0.2, 0.1), np.pi, 2 * np.pi, 12)
    p.fill([(m - 1.1, 2.3), (m - 1.1, 1.55), (m - 0.7, 1.22), (m - 0.22, 1.08), *collar,
            (m + 0.22, 1.08), (m + 0.7, 1.22), (m + 1.1, 1.55), (m + 1.1, 2.3)], shirt, body=True)
    p.fill([(m - 0.19, 0.7), (m + 0.19, 0.7), (m + 0.2, 1.08), *collar[::-1], (m - 0.2, 1.08)],
           ident.skin * 0.78, body=True)


def _draw_hair_back(p: _Painter, ident: Identity) -> None:
    """Long hair: a mass behind the head that falls to the shoulders."""
    centre, (ax, by) = _skull(ident)
    top = _arc(centre, (ax + 0.07, by + 0.08), 0.0, np.pi, 20)
    p.fill([*top, (centre[0] - ax - 0.1, 1.05), (centre[0] - ax + 0.05, 1.2),
            (centre[0] + ax - 0.05, 1.2), (centre[0] + ax + 0.1, 1.05)], ident.hair * 0.8)


def _draw_hair_cap(p: _Painter, ident: Identity) -> None:
    """Hair on top of the head down to the hairline, with sideburns down to the ears."""
    centre, (ax, by) = _skull(ident)
    outer = _arc(centre, (ax + 0.035, by + 0.06), -0.3, np.pi + 0.3, 30)
    inner = _arc(centre, (ax - 0.01, centre[1] - ident.hairline), np.pi + 0.3, -0.3, 30)
    p.fill(np.concatenate([outer, inner]), ident.hair)


def _draw_ears(p: _Painter, ident: Identity, lm: np.ndarray) -> None:
    for end, side in ((lm[0], -1), (lm[16], 1)):
        centre = end + (side * 0.012, 0.085)
        p.fill(_ellipse(centre, (0.045, 0.09), 16, side * 0.15), ident.skin * 0.9)
        p.line(_arc(centre, (0.025, 0.06), np.pi / 2 - side * 1.2, np.pi / 2 + side * 1.2, 8)
               + (side * 0.008, 0.005), ident.skin * 0.68, 0.008)


def _wrinkle(p: _Painter, ident: Identity, points, alpha: float, width: float = 0.006):
    """A skin line whose darkness is `alpha` (0 invisible, 1 the darkest crease)."""
    if alpha > 0.04:
        p.line(points, ident.skin * (1 - 0.55 * min(alpha, 1.0)), width)


def _draw_wrinkles(p: _Painter, ident: Identity, lm: np.ndarray, a: np.ndarray,
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
            _wrinkle(p, ident, _spline(line, 4), base + 0.7 * a[1])
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
        _wrinkle(p, ident, _spline((lower - centre) * (0.85, 1) + centre + (0, 0.026), 4),
                 base + 0.6 * a[3], 0.005)
    # AU12: the nasolabial folds, from the nose wing around the (raised) lip corner.
    for wing, corner, side in ((lm[31], lm[48], -1), (lm[35], lm[54], 1)):
        fold = [wing + (side * 0.022, -0.012), corner + (side * 0.018, -0.04),
                corner + (side * 0.028, 0.01), corner + (side * 0.02, 0.06)]
        _wrinkle(p, ident, _spline(fold, 5), 0.08 + base + 0.5 * a[4], 0.007)
    # AU17: the furrow under the lower lip bends into an arch and the chin boss dimples.
    lip = lm[57]
    _wrinkle(p, ident, _spline([lip + (-0.06, 0.05), lip + (0, 0.04 - 0.012 * a[5]),
                                lip + (0.06, 0.05)], 4), 0.1 + base + 0.6 * a[5])
    if a[5] > 0.05:
        chin = (lm[57] + lm[8]) / 2 + (0, 0.025)
        for dx, dy in rng.uniform(-1, 1, (12, 2)) * (0.06, 0.03):
            p.fill(_ellipse(chin + (dx, dy), (0.007, 0.005), 8),
                   ident.skin * (1 - 0.35 * min(1.0, a[5])))


def _draw_brows(p: _Painter, ident: Identity, lm: np.ndarray) -> None:
    colour = _mix(ident.skin * 0.45, ident.hair * 0.8, 0.65)
    for brow in (lm[17:22], lm[26:21:-1]):  # outer -> inner
        upper = _spline(brow, 4)
        s = np.linspace(0, 1, len(upper))[:, None]
        # The iBUG brow points trace the brow's upper edge; it thickens toward the nose.
        lower = upper + np.concatenate([np.zeros_like(s), ident.brow_width * (0.4 + 0.6 * s)], 1)
        p.fill(np.concatenate([upper, lower[::-1]]), colour)


def _draw_eyes(p: _Painter, ident: Identity, lm: np.ndarray, gaze: np.ndarray) -> None:
    for eye in (lm[36:42], lm[42:48]):
        upper, lower = _spline(eye[0:4], 4), _spline(eye[[3, 4, 5, 0]], 4)
        contour = np.concatenate([upper, lower[1:-1]])
        width = np.linalg.norm(eye[3] - eye[0])
        # Draw white, iris and pupil into a copy, then keep the copy inside the lids only.
        pts = p.fixed(contour)
        x0, y0 = np.maximum(pts.min(0) // _ONE - 1, 0)
        x1, y1 = pts.max(0) // _ONE + 2
        roi = p.image[y0:y1, x0:x1]
        if roi.size == 0:
            continue
        mask = np.zeros(roi.shape[:2], np.uint8)
        offset = np.array([x0, y0]) * _ONE
        cv2.fillPoly(mask, [pts - offset], 255, cv2.LINE_AA, _SHIFT)
        drawn = np.empty_like(roi)
        drawn[:] = _colour(_mix((222, 228, 235), ident.skin, 0.15))
        sub = _Painter(drawn, Pose(p.pose.scale, p.pose.roll, p.pose.yaw,
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


def _draw_nose(p: _Painter, ident: Identity, lm: np.ndarray) -> None:
    for wing, inner, side in ((lm[31], lm[32], -1), (lm[35], lm[34], 1)):
        nostril = (wing * 0.55 + inner * 0.45) + (0, -0.006)
        p.fill(_ellipse(nostril, (0.017, 0.008), 12, side * 0.25), ident.skin * 0.38)
        # The alar crease curls around the nose wing.
        ala = [wing + (side * -0.004, -0.04), wing + (side * 0.012, -0.024),
               wing + (side * 0.01, -0.002), wing + (side * -0.006, 0.006)]
        p.line(_spline(ala, 4), ident.skin * 0.7, 0.006)


def _draw_mouth(p: _Painter, ident: Identity, lm: np.ndarray) -> None:
    upper_outer = _spline(lm[48:55], 4)
    lower_outer = _spline(lm[[54, 55, 56, 57, 58, 59, 48]], 4)
    upper_inner = _spline(lm[[48, 61, 62, 63, 54]], 4)
    lower_inner = _spline(lm[[54, 65, 66, 67, 48]], 4)
    gap = float(np.mean(lm[[65, 66, 67], 1] - lm[[63, 62, 61], 1]))
    if gap > 0.004:  # an open mouth: dark inside, upper teeth showing
        p.fill(np.concatenate([upper_inner, lower_inner]), (40, 32, 70))
        teeth = upper_inner + (0, min(gap * 0.6, 0.02))
        p.fill(np.concatenate([upper_inner, teeth[::-1]]), (205, 220, 228))
    p.fill(np.concatenate([upper_outer, upper_inner[::-1]]), ident.lips * 0.9)
    p.fill(np.concatenate([lower_outer, lower_inner[::-1]]), ident.lips * 1.04)
    p.line(upper_inner, ident.lips * 0.45, 0.006)


def _soft_features(p: _Painter, ident: Identity, lm: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Blurred shading in skin-relative units: eye sockets, nose, cheeks, chin.

    Drawn as hard shapes into a float layer that `_draw_face` blurs and adds, so each gain
    here means "this much brighter (+) or darker (-) than the skin".
    """
    layer = np.zeros(p.image.shape, np.float32)
    skin = ident.skin

    def soft(points, gain, tint=(0.0, 0.0, 0.0)):
        p.fill(points, skin * gain + np.asarray(tint), image=layer)

    for eye in (lm[36:42], lm[42:48]):
        soft(_ellipse(eye.mean(0) + (0, -0.01), (0.085, 0.05)), -0.12)
    m = MIDLINE_X
    for side in (-1, 1):  # the nose's sides, lit from the front
        soft([(m + side * 0.02, lm[28, 1]), (m + side * 0.035, lm[28, 1]),
              (m + side * 0.06, lm[30, 1]), (m + side * 0.03, lm[30, 1])], -0.12)
    soft(_ellipse(lm[30] + (0, -0.012), (0.022, 0.018)), 0.1)
    soft(_ellipse((lm[33] + lm[51]) / 2, (0.018, 0.025)), -0.09)
    # AU6 and AU12 lift and round the cheeks; AU6 also shades the bag under the eye.
    lift = 0.04 * a[3] + 0.015 * a[4]
    for eye, side in ((lm[36:42], -1), (lm[42:48], 1)):
        cheek = eye.mean(0) + (side * 0.035, 0.14 - lift) + ident.cheek * (side, 1)
        soft(_ellipse(cheek, (0.075, 0.055)), 0.04 + 0.1 * max(a[3], a[4]),
             (-3, -4, 8 * (0.5 + a[3])))
        soft(_ellipse(eye.mean(0) + (0, 0.035), (0.05, 0.012)), -0.12 * a[3])
    # AU4 bunches the skin between the brows into a shadow.
    soft(_ellipse((m, (lm[21, 1] + lm[22, 1]) / 2 + 0.03), (0.035, 0.03)), -0.14 * a[2])
    # AU17: a shadow under the pushed-up lower lip, a highlight on the raised chin boss.
    soft(_ellipse(lm[57] + (0, 0.04), (0.06, 0.015)), -0.05 - 0.12 * a[5])
    soft(_ellipse((lm[57] + lm[8]) / 2 + (0, 0.025 - 0.01 * a[5]), (0.05, 0.03)),
         0.03 + 0.1 * a[5])
    # AU12: the folds' shadow on the cheek side.
    for corner, side in ((lm[48], -1), (lm[54], 1)):
        soft(_ellipse(corner + (side * 0.04, -0.03), (0.025, 0.045), 12, side * -0.3),
             -0.04 - 0.1 * a[4])
    return layer


def _draw_glasses(p: _Painter, lm: np.ndarray, rng: np.random.Generator) -> None:
    """Glasses over the eyes (brows partly behind the frame); some are sunglasses."""
    frame = rng.uniform(10, 90, 3) if rng.uniform() < 0.7 else rng.uniform(0, 255, 3)
    lenses = [_ellipse(eye.mean(0) + (0, 0.008), (0.088, 0.062), 28)
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


def _draw_hand(p: _Painter, ident: Identity, rng: np.random.Generator) -> None:
    """A hand raised to the face: palm and four fingers pointing up, over the mouth or a cheek."""
    skin = ident.skin * rng.uniform(0.88, 1.05)
    side = rng.choice([-1.0, 1.0])
    centre = np.array([MIDLINE_X + side * rng.uniform(0.0, 0.35), rng.uniform(0.9, 1.15)])
    angle = side * rng.uniform(0.0, 0.6)
    c, s = math.cos(angle), math.sin(angle)
    turn = np.array([[c, -s], [s, c]])
    p.fill(_ellipse(centre, (0.13, 0.16), 20, angle), skin * 0.75, body=True)
    p.fill(_ellipse(centre, (0.12, 0.15), 20, angle), skin, body=True)
    for j, length in enumerate((0.15, 0.19, 0.18, 0.14)):
        base = centre + turn @ (-0.085 + 0.057 * j, -0.1)
        tip = base + turn @ (0.02 * (j - 1.5), -length)
        for width, shade in ((0.05, 0.75), (0.04, 1.0)):  # a darker rim, then the finger
            p.line([base, tip], skin * shade, width, body=True)


def _draw_fringe(p: _Painter, ident: Identity, lm: np.ndarray, rng: np.random.Generator) -> None:
    """Hair falling over the forehead, its ragged edge down to (or over) the brows."""
    centre, (ax, by) = _skull(ident)
    top = _arc(centre, (ax + 0.035, by + 0.06), 0.2, np.pi - 0.2, 16)
    x = np.linspace(centre[0] - 0.85 * ax, centre[0] + 0.85 * ax, 13)
    brow_y = lm[17:27, 1].min()
    y = brow_y + rng.uniform(-0.1, 0.03) + rng.uniform(-0.03, 0.03, 13)
    y[1::2] -= 0.04  # alternate strand tips and gaps
    p.fill(np.concatenate([top, np.stack([x, y], 1)]), ident.hair)


# ---------------------------------------------------------------------------------------------
# Domains: pose, background, camera
# ---------------------------------------------------------------------------------------------

# BP4D-like source: 41 subjects, each in one split only (subject-exclusive, as BP4D protocols).
SOURCE_SUBJECTS = {"source_train": range(0, 27), "source_val": range(27, 32),
                   "source_test": range(32, 41)}
_BACKDROP = (84, 80, 76)  # the lab's single plain backdrop (BGR)


def _aligned_span() -> float:
    """Face units an aligned image spans for the mean face (docs/design.md §6: the eye-centres,
    nose-tip and mouth-corner box, enlarged 2.8x)."""
    left, right = _eye_centres(NEUTRAL_FACE)
    box = np.stack([left, right, NEUTRAL_FACE[30], NEUTRAL_FACE[48], NEUTRAL_FACE[54]])
    return BOX_ENLARGE * float((box.max(0) - box.min(0)).max())


ALIGNED_SPAN = _aligned_span()


def raw_size(image_size: int) -> int:
    """Side of the raw (unaligned) images for aligned images of side `image_size`."""
    return int(round(RAW_SCALE * image_size))


def _sample_pose(rng: np.random.Generator, domain: str, image_size: int) -> Pose:
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


def _clutter(rng: np.random.Generator, size: int) -> np.ndarray:
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
        colour = _colour(rng.uniform(0, 255, 3))
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


def _add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    x, y = rng.integers(0, size, 2)
    return cv2.add(image, _noise_bank(size)[y:y + size, x:x + size] * sigma, dtype=cv2.CV_8U)


def _wild_camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
    image = _add_noise(image, rng.uniform(1, 8), rng)
    quality = int(rng.integers(25, 91))
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


# ---------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One raw SynthAU image with its ground truth."""

    image: np.ndarray  # (R, R, 3) uint8 BGR, R = raw_size(image_size)
    landmarks: np.ndarray  # (68, 2) float32, raw-image pixels
    intensity: np.ndarray  # (K,) float32 AU intensities in [0, 1]
    labels: np.ndarray  # (K,) int32 occurrence (true labels, also for the unlabelled split)


@functools.lru_cache(maxsize=64)
def subject_identity(seed: int, subject: int) -> Identity:
    """The source domain's subject `subject`: the same person in every image of that subject."""
    key = (len(SPLITS), subject)  # a spawn key no image uses
    return random_identity(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key)))


@dataclass(frozen=True)
class _Plan:
    """Everything about an image that fixes its landmarks; `rng` continues with the rest."""

    rng: np.random.Generator
    identity: Identity
    intensity: np.ndarray
    landmarks: np.ndarray  # (68, 2) face units
    pose: Pose


def _plan(seed: int, split: str, index: int, image_size: int, shift: str = "full") -> _Plan:
    key = (SPLITS.index(split), index)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    domain = _domain(split)
    if domain == "source":
        ident = subject_identity(seed, int(rng.choice(SOURCE_SUBJECTS[split])))
    else:
        ident = random_identity(rng)
    intensity = sample_intensities(rng, domain, 1)[0]
    talking = rng.uniform() < (0.2 if domain == "source" else 0.3)
    lm = expression_landmarks(ident.shape, intensity, rng.uniform(0.005, 0.045) if talking else 0)
    pose_domain = "source" if shift == "appearance" else domain
    return _Plan(rng, ident, intensity, lm, _sample_pose(rng, pose_domain, image_size))


def raw_landmarks(seed: int, split: str, index: int, image_size: int = 200,
                  shift: str = "full") -> np.ndarray:
    """The (68, 2) raw-pixel landmarks of `render(seed, split, index, image_size, shift)`,
    without drawing the image (cheap: what `generate` hands to `prepare` up front)."""
    plan = _plan(seed, split, index, image_size, shift)
    return plan.pose.project(plan.landmarks).astype(np.float32)


def render(seed: int, split: str, index: int, image_size: int = 200,
           shift: str = "full") -> Sample:
    """Image `index` of `split`: a pure function of its arguments (its own random stream)."""
    plan = _plan(seed, split, index, image_size, shift)
    rng, ident, lm = plan.rng, plan.identity, plan.landmarks
    size = raw_size(image_size)
    if _domain(split) == "source":
        image = np.empty((size, size, 3), np.uint8)
        image[:] = _BACKDROP
    else:
        image = _clutter(rng, size)
    p = _Painter(image, plan.pose)
    _draw_face(p, ident, lm, plan.intensity, rng)
    if _domain(split) == "source":
        image = _add_noise(image, 1.5, rng)
    else:
        if shift == "full":
            _draw_occluders(p, ident, lm, rng)
        image = _wild_camera(image, rng)
    return Sample(image=image, landmarks=plan.pose.project(lm).astype(np.float32),
                  intensity=plan.intensity, labels=occurrence(plan.intensity))


def _draw_occluders(p: _Painter, ident: Identity, lm: np.ndarray, rng: np.random.Generator):
    """The target's occasional fringe of hair, glasses and hand over the face."""
    if ident.hair_style != "bald" and rng.uniform() < 0.15:
        _draw_fringe(p, ident, lm, rng)
    if rng.uniform() < 0.15:
        _draw_glasses(p, lm, rng)
    if rng.uniform() < 0.1:
        _draw_hand(p, ident, rng)


def _raw_image(seed: int, split: str, index: int, image_size: int, shift: str) -> np.ndarray:
    """`prepare`'s image source: picklable (a module-level function under functools.partial),
    so each raw image is drawn in the worker that aligns it and never touches the disk."""
    _keep_freed_memory()
    return render(seed, split, index, image_size, shift).image


@functools.cache
def _keep_freed_memory() -> None:
    """In a worker process, stop glibc from handing freed memory back to the kernel.

    Rendering allocates several megabytes of short-lived arrays per image; by default glibc
    unmaps them on free and the next image faults the pages in again, which cost about a third
    of the rendering time. Only worker processes are tuned (they are short-lived); elsewhere, or
    without glibc, nothing changes but the speed.
    """
    if multiprocessing.parent_process() is None:
        return
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter itself uses
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB of free heap
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: big arrays from the heap, not mmap
    except (OSError, AttributeError, TypeError):
        pass


def _draw_face(p: _Painter, ident: Identity, lm: np.ndarray, a: np.ndarray,
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
    cv2.fillPoly(mask, [p.fixed(outline)], 255, cv2.LINE_AA, _SHIFT)
    m = mask.astype(np.float32) / 255
    depth = np.clip((_blur(m, 0.07 * p.pose.scale) - 0.5) * 2.5, 0, 1)
    soft = _blur(_soft_features(p, ident, lm, a), 0.02 * p.pose.scale)
    shaded = p.image * (1 - m * 0.22 * (1 - depth))[..., None] + soft * m[..., None]
    p.image[:] = np.clip(shaded, 0, 255).astype(np.uint8)
    if ident.hair_style != "bald":
        _draw_hair_cap(p, ident)


# ---------------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------------


def _item(seed: int, split: str, index: int, image_size: int, shift: str) -> RawItem:
    """The `prepare` record of one image: its landmarks and labels now, its pixels on demand."""
    plan = _plan(seed, split, index, image_size, shift)
    return RawItem(
        image=functools.partial(_raw_image, seed, split, index, image_size, shift),
        name=f"{index:06d}.jpg",
        landmarks=plan.pose.project(plan.landmarks),
        # The target training set is the unlabelled one (all 999), as EmotioNet's 200k images.
        au=None if split == "target_train" else occurrence(plan.intensity),
    )


def _resolve_sizes(sizes: dict[str, int] | None) -> dict[str, int]:
    resolved = dict(DEFAULT_SIZES)
    for split, count in (sizes or {}).items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
        if int(count) < 1:
            raise ValueError(f"{split}: need at least one image, got {count}")
        resolved[split] = int(count)
    return resolved


def _params(sizes: dict[str, int] | None, image_size: int, seed: int,
            target_shift: str = "full") -> dict:
    """What the data set is a function of; `ensure` regenerates when any of it changes."""
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if target_shift not in TARGET_SHIFTS:
        raise ValueError(f"target_shift {target_shift!r}: expected one of {TARGET_SHIFTS}")
    params = {"version": VERSION, "seed": int(seed), "image_size": int(image_size),
              "raw_size": raw_size(image_size), "sizes": _resolve_sizes(sizes)}
    if target_shift != "full":  # recorded only when set, so earlier sets stay valid caches
        params["target_shift"] = target_shift
    return params


def generate(out_dir, *, sizes: dict[str, int] | None = None, image_size: int = 200,
             seed: int = 0, target_shift: str = "full", workers: int | None = None,
             progress: bool = True) -> dict:
    """Generates SynthAU under `out_dir` (replacing what is there) and returns its synthau.json.

    Args:
      out_dir: the data root. It receives list/<split>_{path,land,AUoccur}.txt for every split
        of SPLITS, list/source_train_weight.txt, images/<split>/NNNNNN.jpg (the list paths are
        relative to out_dir), contact_source.png, contact_target.png and synthau.json.
      sizes: images per split, overriding DEFAULT_SIZES split by split.
      image_size: side of the aligned images (200 for the paper's 176 crop; keep the crop /
        image ratio for small runs, e.g. 72 for a 64 crop).
      seed: the data set is a pure function of (seed, sizes, image_size, target_shift).
      target_shift: "full" or "appearance" (`TARGET_SHIFTS`: what sets the target apart).
      workers: processes (default: one per core), passed to `prepare`.
      progress: show progress lines on stderr.

    Everything is written into a temporary folder beside out_dir, which replaces out_dir only when
    complete, so out_dir is never half-written; synthau.json marks a finished data set. An
    existing out_dir must be empty or an earlier SynthAU (it has a synthau.json).

    Raises:
      FileExistsError: out_dir holds something other than SynthAU.
      ValueError: bad sizes or image size, or a source_train so small that an AU has no
        positive example to weigh (`audjax.losses.au_weights`).
    """
    # Imported here, not at the top: it imports JAX, which the worker processes (which import
    # this module to render images) do not need.
    from audjax.labels import au_weights

    params = _params(sizes, image_size, seed, target_shift)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and load_params(out_dir) is None:
        raise FileExistsError(f"{out_dir} is not empty and holds no synthau.json; refusing to "
                              "replace what may not be a SynthAU data set")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    start = time.monotonic()
    try:
        for split in SPLITS:
            items = [_item(seed, split, i, image_size, target_shift)
                     for i in range(params["sizes"][split])]
            report = prepare(items, work, split, out_size=image_size, box_enlarge=BOX_ENLARGE,
                             workers=workers, progress=progress)
            if report.dropped:  # SynthAU's landmarks are exact, so alignment cannot fail
                raise RuntimeError(report.summary())
        source_train = read_lists(work / "list" / "source_train")
        weights = au_weights(source_train.au)
        write_weights(work / "list" / "source_train", weights)
        for domain in ("source", "target"):
            cv2.imwrite(str(work / f"contact_{domain}.png"),
                        contact_sheet(work, f"{domain}_test"))
        info = dict(params, au_names=list(AU_NAMES), au_weights=weights.tolist(),
                    label_rates=_label_rates(work), seconds=round(time.monotonic() - start, 1))
        atomic_write(work / "synthau.json", json.dumps(info, indent=2) + "\n")
        _replace_folder(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return info


def _label_rates(data_dir: Path) -> dict[str, list[float]]:
    rates = {}
    for split in SPLITS:
        if split != "target_train":
            au = read_lists(data_dir / "list" / split).au
            rates[split] = [round(float(r), 4) for r in au.mean(0)]
    return rates


def _replace_folder(new: Path, old: Path) -> None:
    """Puts folder `new` where `old` is; an existing `old` is moved aside first, then deleted."""
    if old.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{old.name}.", suffix=".old", dir=old.parent))
        os.replace(old, trash / old.name)
        os.replace(new, old)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, old)


def load_params(out_dir) -> dict | None:
    """The synthau.json of a finished data set under `out_dir`, or None."""
    try:
        return json.loads((Path(out_dir) / "synthau.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def ensure(out_dir, *, sizes: dict[str, int] | None = None, image_size: int = 200,
           seed: int = 0, target_shift: str = "full", workers: int | None = None,
           progress: bool = True) -> dict:
    """Like `generate`, but keeps a finished data set made with the same parameters (a cache)."""
    found = load_params(out_dir)
    wanted = _params(sizes, image_size, seed, target_shift)
    if found is not None and all(found.get(k) == v for k, v in wanted.items()) and (
            found.get("target_shift", "full") == target_shift):
        return found
    return generate(out_dir, sizes=sizes, image_size=image_size, seed=seed,
                    target_shift=target_shift, workers=workers, progress=progress)


def contact_sheet(data_dir, split: str, rows: int = 6, cols: int = 6) -> np.ndarray:
    """A grid of the first rows x cols aligned images of `split` with their 49 landmarks and
    their active AUs written underneath (BGR uint8), for eyeballing a data set."""
    lists = read_lists(Path(data_dir) / "list" / split)
    n = min(rows * cols, len(lists))
    first = cv2.imread(str(Path(data_dir) / lists.paths[0]), cv2.IMREAD_COLOR)
    tile = max(first.shape[0], 144)  # small images are enlarged so the text stays legible
    band = 18
    sheet = np.full((rows * (tile + band), cols * tile, 3), 255, np.uint8)
    for i in range(n):
        image = cv2.imread(str(Path(data_dir) / lists.paths[i]), cv2.IMREAD_COLOR)
        zoom = tile / image.shape[0]
        image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_LINEAR)
        for x, y in (lists.landmarks[i] + 0.5) * zoom - 0.5:
            cv2.circle(image, (int(round(x * _ONE)), int(round(y * _ONE))), 1 * _ONE,
                       (0, 255, 0), -1, cv2.LINE_AA, _SHIFT)
        r, c = divmod(i, cols)
        sheet[r * (tile + band):r * (tile + band) + tile, c * tile:(c + 1) * tile] = image
        labels = lists.au[i]
        text = ("AU " + " ".join(name[2:] for name, on in zip(AU_NAMES, labels, strict=True)
                                 if on == 1)) if (labels == 1).any() else "-"
        if (labels == MISSING_LABEL).all():
            text = "unlabelled"
        cv2.putText(sheet, text, (c * tile + 4, r * (tile + band) + tile + band - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


# ---------------------------------------------------------------------------------------------
# Domain shift check: a linear probe trained on the source, tested on both domains
# ---------------------------------------------------------------------------------------------

CROP_RATIO = 176 / 200  # the paper's crop of its 200-pixel aligned images


def _hog(image: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
    """Histogram-of-oriented-gradients features of a grey image whose side is a multiple of
    `cell`: per cell, gradient magnitude binned by unsigned orientation, each cell divided by the
    gradient energy of its 3x3 cell neighbourhood (Dalal and Triggs' block normalisation, in
    short). A 64x64 image gives 8 * 8 * 9 = 576 numbers."""
    f = image.astype(np.float32)
    mag, angle = cv2.cartToPolar(cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=1),
                                 cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=1))
    which = (np.mod(angle, np.pi) * (bins / np.pi)).astype(np.int32) % bins
    votes = (which[..., None] == np.arange(bins)) * mag[..., None]
    h, w = f.shape
    hist = votes.reshape(h // cell, cell, w // cell, cell, bins).sum((1, 3))
    energy = cv2.blur((hist**2).sum(-1), (3, 3), borderType=cv2.BORDER_REFLECT)
    return (hist / np.sqrt(9 * energy + 1e-3)[..., None]).ravel()


def _hog_features(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 576) HOG features of the centre crops (grey, 64x64) and the (N, K) labels."""
    lists = read_lists(data_dir / "list" / split)

    def features(path: str) -> np.ndarray:
        image = cv2.imread(str(data_dir / path), cv2.IMREAD_GRAYSCALE)
        crop = int(round(CROP_RATIO * image.shape[0]))
        o = int(round((image.shape[0] - crop) / 2.0))
        return _hog(cv2.resize(image[o:o + crop, o:o + crop], (64, 64),
                               interpolation=cv2.INTER_AREA))

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        x = np.stack(list(pool.map(features, lists.paths)))
    return x, lists.au


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 400,
                  lr: float = 0.02) -> np.ndarray:
    """One logistic regression per label column, classes balanced, by full-batch Adam.

    Returns (D + 1, K) weights, the last row the biases. Balancing the classes (each weighs half
    the loss) makes the 0.5 threshold meaningful for rare AUs, which F1 then rewards.
    """
    x = np.concatenate([x, np.ones((len(x), 1), x.dtype)], 1)
    rate = y.mean(0)
    sample_weight = np.where(y == 1, 0.5 / rate, 0.5 / (1 - rate)) / len(x)
    w = np.zeros((x.shape[1], y.shape[1]), np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        p = 0.5 + 0.5 * np.tanh(0.5 * (x @ w))  # the sigmoid, without exp overflow
        grad = x.T @ ((p - y) * sample_weight) + l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def _f1(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column F1 of the positive class at logit 0."""
    predicted = (x @ w[:-1] + w[-1]) > 0
    tp = (predicted & (y == 1)).sum(0)
    return 2 * tp / np.maximum(predicted.sum(0) + (y == 1).sum(0), 1)


def domain_shift_check(data_dir) -> dict[str, list[float]]:
    """Per-AU F1 of linear probes (logistic regression on HOG features of the centre crop).

    Returns lists of K F1 values:
      source_test: trained on source_train, tested on source_test (within the source domain);
      target_test: the same probe tested on target_test (across the domain shift);
      target_oracle: trained on target_train with its true labels (which the generator knows
        and the lists hide), tested on target_test: what the target task allows a probe of the
        same kind and training set size, so the gap to it is the domain shift's cost;
      chance: F1 of answering "yes" always on target_test (2 rate / (1 + rate)).
    """
    data_dir = Path(data_dir)
    params = load_params(data_dir)
    if params is None:
        raise FileNotFoundError(f"{data_dir}: no synthau.json; generate the data set first")
    x, y = {}, {}
    for split in ("source_train", "source_test", "target_train", "target_test"):
        x[split], y[split] = _hog_features(data_dir, split)
    y["target_train"] = np.stack([
        occurrence(_plan(params["seed"], "target_train", i, params["image_size"],
                         params.get("target_shift", "full")).intensity)
        for i in range(len(y["target_train"]))])
    # Each probe's inputs are standardised with its own training set's statistics.
    f1 = {}
    for train, test, name in (("source_train", "source_test", "source_test"),
                              ("source_train", "target_test", "target_test"),
                              ("target_train", "target_test", "target_oracle")):
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        w = _fit_logistic((x[train] - mean) / std, y[train])
        f1[name] = _f1((x[test] - mean) / std, w, y[test]).tolist()
    rate = y["target_test"].mean(0)
    f1["chance"] = (2 * rate / (1 + rate)).tolist()
    return f1


def shift_table(f1: dict[str, list[float]]) -> str:
    columns = ("source_test", "target_test", "target_oracle", "chance")
    rows = [f"{'':6}{'source->source':>16}{'source->target':>16}{'target->target':>16}"
            f"{'always yes':>12}"]
    for k, name in enumerate([*AU_NAMES, "mean"]):
        values = [np.mean(f1[c]) if name == "mean" else f1[c][k] for c in columns]
        rows.append(f"{name:6}" + "".join(f"{v:16.3f}" for v in values[:3])
                    + f"{values[3]:12.3f}")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

