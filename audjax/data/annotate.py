"""Landmark annotation with dlib, as in the paper: frontal face detector + 68-point predictor.

dlib and the predictor's model file are an optional extra (`pip install 'audjax[annotate]'`:
`dlib-bin`, prebuilt dlib wheels, and `face-recognition-models`, which ships the model file).
Everything else in audjax works without them.
"""

import functools
import importlib.util
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


def detect_faces(image_bgr, min_score=0.0):
    """Every face dlib's frontal detector finds, with its 68 landmarks, most confident first.

    The detector looks at the image upsampled once (as in the paper's setup), so faces down to
    about 40 px wide are found.

    Args:
      image_bgr: HxW (grey) or HxWx3 (BGR, as OpenCV reads it) uint8 image.
      min_score: detections scoring below this are dropped (0 keeps all of dlib's own).

    Returns:
      A list of `Face`, highest score first (empty when there is none).

    Raises:
      ImportError: when dlib or its model file is not installed.
    """
    image = np.asarray(image_bgr)
    if image.dtype != np.uint8 or image.shape[2:] not in ((), (3,)):
        raise ValueError(f"expected an HxW or HxWx3 uint8 image, got {image.dtype} {image.shape}")
    detector, predictor = _dlib_models()
    # dlib's models were trained on RGB images; cvtColor also makes the array contiguous.
    if image.ndim == 3:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        rgb = np.ascontiguousarray(image)
    boxes, scores, _ = detector.run(rgb, 1, 0)
    faces = []
    # A stable sort: among equal scores the detector's first box comes first.
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if scores[i] < min_score:
            continue
        box = boxes[i]
        shape = predictor(rgb, box)
        faces.append(Face(box=(box.left(), box.top(), box.width(), box.height()),
                          score=float(scores[i]),
                          landmarks=np.array([(p.x, p.y) for p in shape.parts()], np.float32)))
    return faces


def detect_landmarks(image_bgr):
    """The 68 iBUG landmarks of the most confidently detected face, or None if there is none.

    Args:
      image_bgr: HxW (grey) or HxWx3 (BGR, as OpenCV reads it) uint8 image.

    Returns:
      (68, 2) float32 (x, y) points in the image's pixels (integer = pixel centre), or None.

    Raises:
      ImportError: when dlib or its model file is not installed.
    """
    faces = detect_faces(image_bgr)
    return faces[0].landmarks if faces else None
