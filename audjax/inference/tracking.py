"""Following faces through a video: dlib's detector every few frames, its 68-point fit between.

    tracker = FaceTracker(min_face=40, min_score=0.0, detect_every=10)
    for image in frames:                      # HxWx3 uint8 BGR, in order
        for face in tracker.update(image):    # `TrackedFace`, by face_id
            face.face_id, face.box, face.landmarks

A face found in one frame is followed into the next by fitting its 68 points
(`annotate.fit_landmarks`) in a box derived from its previous landmarks: the box the detector
gave it, moved and scaled with the points (`_BoxModel`), so the fit sees the framing it was
trained on. The detector (`annotate.find_boxes`) runs again every `detect_every` frames and at
once whenever a fit fails its check (`_plausible`): the box leaves the frame, the shape or size
jumps from the previous frame's, or the face's appearance no longer matches (a cut, a blank
frame). A detection overlapping a face's box keeps its face_id; a face no detection overlaps
ends, and a new detection (a new face, or one that left and came back) gets the next id. Ids
start at 0 in each tracker: one tracker per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from audjax.data import align, annotate

# A detection and a tracked face are the same face when their boxes overlap at least this much
# (intersection over union); dlib's boxes of one face in consecutive frames overlap far more.
SAME_FACE_IOU = 0.3
# A tracked box must keep this share of its area inside the frame.
MIN_INSIDE = 0.75
# Between consecutive frames the face's size may change by at most this factor, and its shape,
# after the best similarity transform onto the previous one, by at most this share of its size.
MAX_SCALE_CHANGE = 1.25
MAX_SHAPE_CHANGE = 0.1
# The normalised correlation of the face's appearance (a small aligned grey patch) with the
# previous frame's; the same face a frame later correlates well above it, a cut far below.
MIN_APPEARANCE = 0.5
_PATCH = 24


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame.

    Attributes:
      face_id: the face's number in its video (0, 1, ... in order of first appearance).
      box: (left, top, width, height) in pixels: the detector's box, or in a tracked frame the
        box derived from this frame's landmarks.
      score: the detector's confidence at the face's latest detection.
      landmarks: (68, 2) float32 (x, y) iBUG points in the frame's pixels.
      detected: whether the detector ran on this frame (else the face was tracked).
    """

    face_id: int
    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray
    detected: bool


class _BoxModel:
    """The detector's box relative to a face's landmarks: its side and its centre's offset, in
    units of the points' size (their RMS distance from their centroid), fixed at detection."""

    def __init__(self, box, landmarks):
        left, top, right, bottom = box
        centre, size = _centre_size(landmarks)
        self.side = (right - left + 1) / size
        self.offset = (np.array([(left + right) / 2, (top + bottom) / 2]) - centre) / size

    def box(self, landmarks) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), dlib's inclusive convention."""
        centre, size = _centre_size(landmarks)
        cx, cy = centre + self.offset * size
        half = self.side * size / 2
        return (round(cx - half), round(cy - half), round(cx + half), round(cy + half))


def _centre_size(points):
    centre = points.mean(0)
    return centre, float(np.sqrt(((points - centre) ** 2).sum(1).mean()))


@dataclass
class _Track:
    face_id: int
    score: float
    landmarks: np.ndarray
    model: _BoxModel
    patch: np.ndarray | None


class FaceTracker:
    """Faces of consecutive frames with ids that last (module doc)."""

    def __init__(self, min_face=annotate.MIN_FACE, min_score=0.0, detect_every=10):
        if detect_every < 1:
            raise ValueError(f"detect_every={detect_every}: must be at least 1")
        self.min_face, self.min_score, self.detect_every = min_face, min_score, detect_every
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._since_detection = 0
        self.detections = self.tracked_frames = 0

    def update(self, image_bgr) -> list[TrackedFace]:
        """The faces of the next frame, by face_id."""
        rgb = annotate.as_rgb(image_bgr)
        grey = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if self._tracks and self._since_detection < self.detect_every - 1:
            fitted = self._follow(rgb, grey)
            if fitted is not None:
                self._tracks = fitted
                self._since_detection += 1
                self.tracked_frames += 1
                return self._faces(detected=False)
        self._detect(rgb, grey)
        return self._faces(detected=True)

    def _follow(self, rgb, grey) -> list[_Track] | None:
        """Every track fitted into this frame, or None when one fails its check."""
        out = []
        for track in self._tracks:
            box = track.model.box(track.landmarks)
            if _inside_share(box, rgb.shape) < MIN_INSIDE:
                return None
            points = annotate.fit_landmarks(rgb, box)
            patch = _patch(grey, points)
            if not _plausible(track, points, patch):
                return None
            out.append(_Track(track.face_id, track.score, points, track.model, patch))
        return out

    def _detect(self, rgb, grey):
        self.detections += 1
        self._since_detection = 0
        boxes, scores = annotate.find_boxes(rgb, self.min_face)
        previous = {t.face_id: t.model.box(t.landmarks) for t in self._tracks}
        tracks = []
        for box, score in zip(boxes, scores, strict=True):
            if score < self.min_score:
                continue
            overlaps = {i: _iou(box, b) for i, b in previous.items()}
            match = max(overlaps, key=overlaps.get, default=None)
            if match is not None and overlaps[match] >= SAME_FACE_IOU:
                face_id = match
                del previous[match]
            else:
                face_id, self._next_id = self._next_id, self._next_id + 1
            points = annotate.fit_landmarks(rgb, box)
            tracks.append(_Track(face_id, score, points, _BoxModel(box, points),
                                 _patch(grey, points)))
        self._tracks = sorted(tracks, key=lambda t: t.face_id)

    def _faces(self, detected) -> list[TrackedFace]:
        out = []
        for t in self._tracks:
            left, top, right, bottom = t.model.box(t.landmarks)
            out.append(TrackedFace(t.face_id, (left, top, right - left + 1, bottom - top + 1),
                                   t.score, t.landmarks, detected))
        return out


def _inside_share(box, shape) -> float:
    left, top, right, bottom = box
    height, width = shape[:2]
    inside = (max(0, min(right + 1, width) - max(left, 0))
              * max(0, min(bottom + 1, height) - max(top, 0)))
    return inside / ((right - left + 1) * (bottom - top + 1))


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def _patch(grey, points) -> np.ndarray | None:
    """The face's grey appearance, aligned by its landmarks to a small square, zero-mean and
    unit-norm; None when the landmarks or the patch are degenerate (a flat image)."""
    try:
        matrix = align.alignment_matrix(points, _PATCH)
    except ValueError:
        return None
    # Edges replicated: a constant border would give a face at the frame's edge, and the empty
    # frame after it, a shared structure that correlates.
    patch = cv2.warpAffine(grey, matrix, (_PATCH, _PATCH), flags=cv2.INTER_AREA,
                           borderMode=cv2.BORDER_REPLICATE)
    patch = patch.astype(np.float32) - patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-3 * _PATCH else None


def _plausible(track: _Track, points, patch) -> bool:
    """Whether a tracked fit still looks like the face of the previous frame."""
    if patch is None or track.patch is None:
        return False
    if float((patch * track.patch).sum()) < MIN_APPEARANCE:
        return False
    _, size = _centre_size(points)
    _, previous = _centre_size(track.landmarks)
    if not 1 / MAX_SCALE_CHANGE <= size / previous <= MAX_SCALE_CHANGE:
        return False
    return _shape_change(track.landmarks, points) <= MAX_SHAPE_CHANGE


def _shape_change(a, b) -> float:
    """The RMS distance of `b` from `a` after the least-squares similarity transform of `a`
    onto `b`, over `b`'s size."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    s = np.vdot(za, zb) / np.vdot(za, za)  # the complex scale-rotation that fits best
    return float(np.sqrt(np.mean(np.abs(zb - s * za) ** 2)) / np.sqrt(np.mean(np.abs(zb) ** 2)))
