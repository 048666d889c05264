"""Face alignment: one similarity transform puts every face in the same frame (docs/design.md §6).

The transform, as in the preprocessing of JAA-Net and ADLD (`align_face_49pts`):

1. rotate so that the eye centres (each the mean of its six points) lie on a horizontal line,
   the eye on the image's left staying on the left;
2. take the axis-aligned box, in the rotated frame, around five anchors: the two eye centres,
   the nose tip (49-layout point 13) and the mouth corners (31 and 37);
3. scale so that `box_enlarge` times the box's larger side spans the output, and translate the
   box centre to the output's centre.

Pixel convention: integer coordinates are pixel centres, as in OpenCV and dlib. An image of
side S then spans [-0.5, S - 0.5] and its centre is (S - 1) / 2; like ADLD, the enlarged box is
mapped onto the S - 1 pixel steps between the first and the last pixel centre. Because
cv2.warpAffine uses the same convention, the matrix that resamples the pixels also maps the
landmarks, with no half-pixel correction.
"""

import cv2
import numpy as np

from audjax.landmarks import LEFT_EYE, LEFT_EYE_68, RIGHT_EYE, RIGHT_EYE_68

# For each layout (by point count): the eye on the image's left, the other eye, the nose tip,
# the two mouth corners.
_ANCHORS = {
    49: (LEFT_EYE, RIGHT_EYE, 13, (31, 37)),
    68: (LEFT_EYE_68, RIGHT_EYE_68, 30, (48, 54)),
}

BORDER_VALUE = (128, 128, 128)


def alignment_matrix(landmarks, out_size=200, box_enlarge=2.8):
    """The 2x3 matrix (cv2.warpAffine style) of the alignment of the module doc.

    Args:
      landmarks: (49, 2) or (68, 2) (x, y) points in the source image's pixels.
      out_size: side of the aligned image, in pixels.
      box_enlarge: how many times the anchor box's larger side the output spans.

    Returns:
      (2, 3) float64 M, mapping a source point p to M[:, :2] @ p + M[:, 2].

    Example: eyes at (10, 20) and (30, 20) and mouth corners 20 below them span a 20x20 box;
    with out_size 200 and box_enlarge 2.8 the scale is 199 / 56, so the eyes end up 71.07 px apart.
    """
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] not in _ANCHORS:
        raise ValueError(f"landmarks must be (49, 2) or (68, 2), got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite")
    left_eye, right_eye, nose, (mouth_left, mouth_right) = _ANCHORS[points.shape[0]]

    left = points[left_eye].mean(axis=0)
    right = points[right_eye].mean(axis=0)
    distance = np.hypot(*(right - left))
    if distance == 0:
        raise ValueError("the two eye centres coincide")
    cos, sin = (right - left) / distance
    # Rotation by minus the eye line's angle: it takes right - left to (distance, 0).
    rotation = np.array([[cos, sin], [-sin, cos]])

    anchors = np.stack([left, right, points[nose], points[mouth_left], points[mouth_right]])
    rotated = anchors @ rotation.T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    side = box_enlarge * (high - low).max()
    if side == 0:
        raise ValueError("the eyes, nose and mouth anchors are all at one point")
    scale = (out_size - 1) / side
    centre = (low + high) / 2
    offset = (out_size - 1) / 2 - scale * centre
    return np.concatenate([scale * rotation, offset[:, None]], axis=1)


def transform_points(matrix, points):
    """Applies a 2x3 affine `matrix` to (..., 2) `points`."""
    matrix = np.asarray(matrix, np.float64)
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def align_face(image, landmarks, out_size=200, box_enlarge=2.8):
    """Aligns a face: the image resampled by `alignment_matrix`, and its landmarks mapped.

    Args:
      image: HxW or HxWxC uint8 image (BGR for colour, as OpenCV reads it).
      landmarks: (49, 2) or (68, 2) (x, y) points in `image`'s pixels.
      out_size: side of the aligned image.
      box_enlarge: see `alignment_matrix`.

    Returns:
      (aligned, landmarks): the out_size x out_size image (bilinear interpolation, grey 128
      outside the source) and the (N, 2) float32 landmarks in its pixels, N as given.
    """
    matrix = alignment_matrix(landmarks, out_size, box_enlarge)
    aligned = cv2.warpAffine(image, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_VALUE)
    return aligned, transform_points(matrix, landmarks).astype(np.float32)
