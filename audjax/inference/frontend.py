"""The host side of prediction: frames decoded, faces found or tracked, aligned and cropped.

    front = FrontEnd(crop=64, aligned_size=80)
    for frame, faces, seconds in stream(front, ["clip.mp4", "photos/"], workers=2):
        ...  # faces: `FaceCrop`s ready for the networks; seconds: time per stage

`FrontEnd.faces` handles one image: every face dlib finds (`annotate.detect_faces`, searching
for faces of `min_face` px and up), aligned to the run's aligned size (`align.align_face`) and
centre-cropped as evaluation crops. In videos, with `track`, faces are followed from frame to
frame (`audjax.inference.tracking`) and keep their face_id.

`stream` does this for every input in `workers` processes while the caller (the networks) works
on what came before: each input (a photo, a video) goes to one worker, in turn, and the caller
reads the inputs' frames back in input order; a worker runs ahead by at most `AHEAD` frames, so
memory stays bounded. A video is one worker's (tracking is sequential), so a single video is a
pipeline: decoding and the face work in a worker, the networks in the caller.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from audjax.data import align, annotate, pipeline
from audjax.inference import media
from audjax.inference.tracking import FaceTracker

# Frames a worker may have finished that the caller has not read yet.
AHEAD = 64
STAGES = ("decode", "detect", "track", "align")


@dataclass
class FaceCrop:
    """A face ready for the networks.

    Attributes:
      box: (x, y, width, height) in the input's pixels.
      score: the face detector's confidence (NaN for an aligned input); for a tracked face, at
        its latest detection.
      crop: (S, S, 3) float32 in [-1, 1], RGB; None when the face could not be aligned.
      to_image: (2, 3) affine map from crop pixels to the input's pixels.
      face_id: 0 = the most confident face of a photo; in a tracked video, the face's number.
    """

    box: tuple[float, float, float, float]
    score: float
    crop: np.ndarray | None
    to_image: np.ndarray | None
    face_id: int = 0


@dataclass(frozen=True)
class FrontEnd:
    """What the front end needs to know (picklable, for the workers).

    Attributes:
      crop, aligned_size: the run's crop and aligned image side.
      min_face: the smallest face to find, in pixels.
      min_score: detections scoring lower are not faces.
      track: follow faces through videos (else detect in every frame).
      detect_every: with `track`, run the detector at least every this many frames.
      aligned: every input is one face already aligned (no detection).
    """

    crop: int
    aligned_size: int
    min_face: float = annotate.MIN_FACE
    min_score: float = 0.0
    track: bool = True
    detect_every: int = 10
    aligned: bool = False

    def faces(self, image_bgr) -> list[FaceCrop]:
        """The faces of one HxWx3 uint8 BGR image (module doc). Raises ValueError for an
        aligned input smaller than the crop."""
        if self.aligned:
            s = self.crop
            height, width = image_bgr.shape[:2]
            if height < s or width < s:
                raise ValueError(f"an aligned input must be at least {s}x{s} (the crop), got "
                                 f"{width}x{height}")
            return [self._crop(image_bgr, np.eye(2, 3), (0, 0, width, height), math.nan, 0)]
        found = annotate.detect_faces(image_bgr, self.min_score, self.min_face)
        return [self.align(image_bgr, f.landmarks, f.box, f.score, i)
                for i, f in enumerate(found)]

    def align(self, image_bgr, landmarks, box, score, face_id) -> FaceCrop:
        """One face's crop from its 68 landmarks (no crop when they are degenerate)."""
        try:
            matrix = align.alignment_matrix(landmarks, self.aligned_size)
        except ValueError:
            return FaceCrop(tuple(float(v) for v in box), score, None, None, face_id)
        aligned_image, _ = align.align_face(image_bgr, landmarks, self.aligned_size)
        return self._crop(aligned_image, cv2.invertAffineTransform(matrix), box, score, face_id)

    def _crop(self, aligned_bgr, aligned_to_image, box, score, face_id) -> FaceCrop:
        """Evaluation's centre crop of an aligned face, and the map from crop pixels back to
        the input image's pixels (the crop's offset, then `aligned_to_image`)."""
        s = self.crop
        height, width = aligned_bgr.shape[:2]
        y, x = pipeline.centre_offset(height, s), pipeline.centre_offset(width, s)
        crop = pipeline.normalize(aligned_bgr[y:y + s, x:x + s, ::-1])
        to_image = np.array(aligned_to_image, np.float64)
        to_image[:, 2] += to_image[:, :2] @ np.array([x, y], np.float64)
        return FaceCrop(tuple(float(v) for v in box), score, crop, to_image, face_id)

    def source_faces(self, source: media.Source, every: int = 1):
        """(frame, faces, seconds per stage) for each frame of one input; a frame that cannot
        be used (an aligned input too small) gets its `error` set and no faces."""
        tracker = (FaceTracker(self.min_face, self.min_score, self.detect_every)
                   if self.track and not self.aligned and media.is_video(source) else None)
        frames = media.source_frames(source, every)
        while True:
            start = time.perf_counter()
            frame = next(frames, None)
            seconds = dict.fromkeys(STAGES, 0.0)
            seconds["decode"] = time.perf_counter() - start
            if frame is None:
                return
            faces = []
            if frame.error is None:
                try:
                    faces = (self._tracked(tracker, frame.image, seconds) if tracker
                             else self._timed(frame.image, seconds))
                except ValueError as e:
                    frame.error = str(e)
            yield frame, faces, seconds

    def _timed(self, image, seconds) -> list[FaceCrop]:
        start = time.perf_counter()
        faces = self.faces(image)
        # Alignment is a small part; per-image detection is counted as detection.
        seconds["detect"] = time.perf_counter() - start
        return faces

    def _tracked(self, tracker, image, seconds) -> list[FaceCrop]:
        start = time.perf_counter()
        found = tracker.update(image)
        middle = time.perf_counter()
        seconds["detect" if not found or found[0].detected else "track"] = middle - start
        faces = [self.align(image, f.landmarks, f.box, f.score, f.face_id) for f in found]
        seconds["align"] = time.perf_counter() - middle
        return faces


def stream(front: FrontEnd, inputs, *, every: int = 1, workers: int = 1) -> Iterator:
    """`FrontEnd.source_faces` over every input, in input order, in `workers` processes
    (module doc; 1: in this process). Several are started with multiprocessing's "spawn":
    a script using them must run under `if __name__ == "__main__":`."""
    if every < 1:
        raise ValueError(f"every={every}: must be at least 1")
    sources = list(media.sources(inputs))
    workers = min(workers, len(sources))
    if workers <= 1:
        for source in sources:
            yield from front.source_faces(source, every)
        return
    # spawn, not fork: the caller runs JAX, and forking a multithreaded process can deadlock
    # the child.
    context = multiprocessing.get_context("spawn")
    tasks = [context.Queue() for _ in range(workers)]
    results = [context.Queue(AHEAD) for _ in range(workers)]
    processes = [context.Process(target=_work, args=(front, every, tasks[k], results[k]),
                                 daemon=True) for k in range(workers)]
    for process in processes:
        process.start()
    try:
        for j, source in enumerate(sources):
            tasks[j % workers].put(source)
        for task in tasks:
            task.put(None)
        for j in range(len(sources)):
            k = j % workers
            while (item := _get(results[k], processes[k])) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        for process in processes:
            process.kill()
            process.join()


def _get(results, process):
    """The next item of a worker, noticing when it died without a word (killed, crashed)."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(f"a front-end worker stopped (exit code "
                                   f"{process.exitcode})") from None


def _work(front, every, tasks, results):
    """A worker: the inputs of `tasks`, one after another, each ending with None."""
    # One process per core already; OpenCV's own threads would only compete with the others.
    cv2.setNumThreads(1)
    while (source := tasks.get()) is not None:
        try:
            for item in front.source_faces(source, every):
                results.put(item)
        except Exception as e:  # noqa: BLE001 -- handed to the caller, who raises it
            results.put(e)
        results.put(None)
