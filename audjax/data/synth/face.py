"""SynthAU's face model: the mean face, identities, AU displacement fields and AU labels.

Faces. The base geometry is the normalised 68-point mean face of OpenFace (`MEAN_FACE`). Each
identity perturbs it (face width and length, eye spacing and size, nose length and width, mouth
width and height, brow height) and has its own skin, hair, iris and lip colours. Landmarks are in
"face units" (the template's coordinates, inter-ocular distance about 0.38, y down).

AUs (label order `audjax.landmarks.AU_NAMES`). Each has an intensity in [0, 1] that moves the
landmarks (linear displacement fields, `AU_DISPLACEMENT`) and, in the renderer
(`audjax.data.synth.portrait`), draws appearance cues whose contrast grows with it; an AU occurs
when its intensity exceeds `ACTIVE_THRESHOLD`:

    AU1   inner brows up; horizontal wrinkles in the middle of the forehead
    AU2   outer brows up; wrinkles over the outer forehead
    AU4   brows down and together; vertical furrows and a shadow between the brows
    AU6   cheeks and lower lids up, eyes narrower; crow's feet, lid bags, raised cheek highlight
    AU12  lip corners up and out; deeper nasolabial folds, rounder cheeks
    AU17  chin boss and lower lip up; chin dimpling, a deeper furrow under the lower lip

Intensities come from a Gaussian copula: correlated normals (AU1 with AU2, AU6 with AU12, ...)
mapped through per-domain base rates, so the occurrence rates are exactly the table's in
expectation and co-occurrence looks like real faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from audjax.landmarks import AU_NAMES, LEFT_EYE_68, RIGHT_EYE_68

NUM_AUS = len(AU_NAMES)
ACTIVE_THRESHOLD = 0.35  # an AU occurs when its intensity exceeds this

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


def eye_centres(landmarks68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks68[..., LEFT_EYE_68, :].mean(-2), landmarks68[..., RIGHT_EYE_68, :].mean(-2)


def _iod(landmarks68: np.ndarray) -> float:
    left, right = eye_centres(landmarks68)
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

