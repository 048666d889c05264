"""Landmark annotation with dlib, as in the paper: frontal face detector + 68-point predictor.

dlib and the predictor's model file are an optional extra (`pip install 'audjax[annotate]'`:
`dlib-bin`, prebuilt dlib wheels, and `face-recognition-models`, which ships the model file).
Everything else in audjax works without them.
"""

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MISSING_EXTRA = ("face detection and landmark annotation need the 'annotate' extra: "
                 "pip install 'audjax[annotate]'")

_MODEL_NAME = "shape_predictor_68_face_landmarks.dat"


def shape_predictor_path():
    """The path of dlib's 68-point model file inside the `face_recognition_models` package.

    Found through the package's import spec rather than by importing it: its `__init__` imports
    pkg_resources, which recent setuptools no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or ():
        path = Path(folder) / "models" / _MODEL_NAME
        if path.is_file():
            return path
    raise ImportError(f"{MISSING_EXTRA} (no {_MODEL_NAME} found)")


@functools.cache
def _dlib_models():
    """(detector, predictor), loaded once per process (the model file is about 100 MB)."""
    try:
        import dlib
    except ImportError as e:
        raise ImportError(f"{MISSING_EXTRA} (cannot import dlib: {e})") from e
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(shape_predictor_path()))


@dataclass(frozen=True)
class Face:
    """One face dlib found.

    Attributes:
      box: (left, top, width, height) of the detector's box, in pixels (it may reach outside
        the image).
      score: the detector's confidence (its SVM margin; dlib's own cut-off is 0).
      landmarks: (68, 2) float32 (x, y) iBUG points in the image's pixels (integer = pixel centre).
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray


# dlib's frontal detector slides an 80x80 window over a pyramid of the image (steps of 5/6), so
# at scale 1 it finds faces down to about 80 px wide, upsampled once down to about 40 px
# (measured: docs/performance.md, "Face detection").
SMALLEST_FACE = 80
# The smallest face searched for by default: dlib's reach on the image upsampled once, which is
# what annotation did before `min_face` existed (and still does at this value, exactly).
MIN_FACE = 40
# The side of the detector's boxes at the pyramid level it finds them at (its window less the
# padding), in that level's pixels.
_LEVEL_BOX = 73


def as_rgb(image_bgr) -> np.ndarray:
    """A contiguous RGB (or grey) copy of an HxW / HxWx3 BGR uint8 image, as dlib's models
    were trained on RGB images."""
    image = np.asarray(image_bgr)
    if image.dtype != np.uint8 or image.shape[2:] not in ((), (3,)):
        raise ValueError(f"expected an HxW or HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def find_boxes(rgb, min_face=MIN_FACE):
    """dlib's face boxes in `rgb` (from `as_rgb`), in its pixels, and their scores, most
    confident first.

    At min_face 40 (and below) this is dlib's run on the image upsampled once (twice, ...), as
    annotation always did. Larger faces are searched for on level k of that run's pyramid
    (`_level_image`), the first at a scale of SMALLEST_FACE / min_face or below (its reach is
    min_face to 1.2 min_face: levels are 5/6 apart); the detector scans it and the smaller
    levels as that run does, and each box is mapped back the way that run maps it
    (`_full_box`). For faces of min_face and up that gives the boxes of min_face 40 at a
    fraction of the cost, all but rarely (the level's pixels differ a little from dlib's, which
    can tip a near tie between two windows: docs/performance.md); the scores differ a little.

    Returns:
      [(left, top, right, bottom), ...] (ints, inclusive, as dlib.rectangle) and their scores.
    """
    if min_face <= 0:
        raise ValueError(f"min_face={min_face}: must be positive")
    detector, _ = _dlib_models()
    if min_face > MIN_FACE:
        level = math.ceil(math.log(min_face / MIN_FACE) / math.log(6 / 5) - 1e-9)
        image = _level_image(rgb, level)
        rects, scores, _ = detector.run(image, 0, 0) if image is not None else ([], [], [])
        boxes = [_full_box(rect, level) for rect in rects]
    else:
        scale = SMALLEST_FACE / min_face
        upsample = math.ceil(math.log2(scale) - 1e-9)
        resize = scale / 2 ** upsample  # in (0.5, 1]: only ever a downscale
        height, width = rgb.shape[:2]
        size = (max(1, round(width * resize)), max(1, round(height * resize)))
        if size != (width, height):
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        fx, fy = width / size[0], height / size[1]
        rects, scores, _ = detector.run(rgb, upsample, 0)
        boxes = [(round(r.left() * fx), round(r.top() * fy), round(r.right() * fx),
                  round(r.bottom() * fy)) for r in rects]
    # A stable sort: among equal scores the detector's first box comes first.
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    return [boxes[i] for i in order], [float(scores[i]) for i in order]


def _level_image(rgb, level):
    """Level `level` of the pyramid dlib's detector scans on `rgb` upsampled once, made in one
    step: dlib upsamples to the size pyramid_down<2> maps the image to and then shrinks by 5/6
    (integer sizes) a level at a time, each step a corner-aligned bilinear resize, so the level
    is a corner-aligned resize of `rgb` to its size. Bilinear, like dlib's steps (no
    smoothing; tests/test_annotate.py checks the boxes come out the same). None when the
    level is empty (the image is too small for faces of that size)."""
    import dlib

    height, width = rgb.shape[:2]
    up = dlib.pyramid_down(2).rect_up(dlib.rectangle(0, 0, width - 1, height - 1))
    w, h = up.right() + 1, up.bottom() + 1
    for _ in range(level):
        w, h = 5 * w // 6, 5 * h // 6
    if w < 1 or h < 1:
        return None
    matrix = np.array([[(w - 1) / max(1, width - 1), 0, 0], [0, (h - 1) / max(1, height - 1), 0]])
    return cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _full_box(rect, level):
    """The box (left, top, right, bottom) in the image that dlib's run on the image upsampled
    once reports for the detection it finds where a run on its pyramid level `level` finds
    `rect`. Both runs find the box as a _LEVEL_BOX square on some level and map it up with
    pyramid_down<6>.rect_up (rounding once at the end), the first then down with
    pyramid_down<2>.rect_down: that square is recovered from `rect` and mapped the first run's
    way, as rounding twice would move the box by a pixel."""
    import dlib

    pyramid, upsampled = dlib.pyramid_down(6), dlib.pyramid_down(2)
    above = max(0, round(math.log(rect.width() / _LEVEL_BOX) / math.log(6 / 5)))
    guess = pyramid.rect_down(rect, above)
    for dx, dy in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, -1), (-1, 1), (1, 1)):
        left, top = guess.left() + dx, guess.top() + dy
        square = dlib.rectangle(left, top, left + _LEVEL_BOX - 1, top + _LEVEL_BOX - 1)
        if pyramid.rect_up(square, above) == rect:
            break
    else:  # not expected: map `rect` itself
        square, above = rect, 0
    box = upsampled.rect_down(pyramid.rect_up(square, above + level), 1)
    return box.left(), box.top(), box.right(), box.bottom()


def fit_landmarks(rgb, box) -> np.ndarray:
    """dlib's 68 points fitted in `box` (left, top, right, bottom) of `rgb` (from `as_rgb`):
    (68, 2) float32 (x, y) in its pixels."""
    import dlib

    _, predictor = _dlib_models()
    shape = predictor(rgb, dlib.rectangle(*(int(v) for v in box)))
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def detect_faces(image_bgr, min_score=0.0, min_face=MIN_FACE):
    """Every face dlib's frontal detector finds, with its 68 landmarks, most confident first.

    The detector looks at the image scaled so that faces down to `min_face` px wide are found
    (`find_boxes`); the 68 points are fitted on the full-resolution image, in the box mapped
    back to it.

    Args:
      image_bgr: HxW (grey) or HxWx3 (BGR, as OpenCV reads it) uint8 image.
      min_score: detections scoring below this are dropped (0 keeps all of dlib's own).
      min_face: the smallest face to find, in pixels (default 40: the image upsampled once;
        larger values search a level of that run's pyramid: the same boxes for faces of
        `min_face` and up, much faster on large images).

    Returns:
      A list of `Face`, highest score first (empty when there is none).

    Raises:
      ImportError: when dlib or its model file is not installed.
    """
    rgb = as_rgb(image_bgr)
    faces = []
    for box, score in zip(*find_boxes(rgb, min_face), strict=True):
        if score < min_score:
            continue
        left, top, right, bottom = box
        faces.append(Face(box=(left, top, right - left + 1, bottom - top + 1), score=score,
                          landmarks=fit_landmarks(rgb, box)))
    return faces


def detect_landmarks(image_bgr, min_face=MIN_FACE):
    """The 68 iBUG landmarks of the most confidently detected face, or None if there is none.

    Args:
      image_bgr: HxW (grey) or HxWx3 (BGR, as OpenCV reads it) uint8 image.
      min_face: the smallest face to find, in pixels (`detect_faces`).

    Returns:
      (68, 2) float32 (x, y) points in the image's pixels (integer = pixel centre), or None.

    Raises:
      ImportError: when dlib or its model file is not installed.
    """
    faces = detect_faces(image_bgr, min_face=min_face)
    return faces[0].landmarks if faces else None
