"""Scoring photos, videos and folders with a `Detector` into a CSV, overlays and a benchmark.

The library of `audjax predict` (`audjax.cli.predict`). The CSV has one row per face, with
`audjax.inference.detector`'s columns (OpenFace / py-feat names: `input, frame, timestamp,
face_id, face_x, ..., success, AU01, ..., AU01_c, ..., x_0, ..., y_48`); an image or frame
without a face gives a row with success 0 and empty values. It is written to a temporary file
and renamed when complete. A file that cannot be read is reported on stderr, counted in the
closing line and skipped.

Overlays (`OverlayWriter`) draw the face box, the 49 landmarks and a bar per AU
(`audjax.inference.overlay`) on a copy of each image, saved as DIR/<its path under the input
folder, as .jpg>; a video's frames go to DIR/<video name>/<frame>.jpg, or into one
DIR/<video name>.mp4.

`bench` times a randomly initialised model: faces/s of the network part alone, of dlib alone,
and end to end.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from audjax.files import atomic_path, atomic_write
from audjax.inference import media
from audjax.tools.progress import StatusLine

# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def format_value(value) -> str:
    """A CSV cell: NaN as empty (as pandas reads it back), floats to 6 significant digits.

    >>> [format_value(v) for v in (3, 0.123456789, 191.66173, float("nan"), "a.jpg")]
    ['3', '0.123457', '191.662', '', 'a.jpg']
    """
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def csv_lines(columns, rows) -> str:
    """`rows` (dicts) as CSV text in `columns` order, without a header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow([format_value(row[c]) for c in columns])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Overlays
# ---------------------------------------------------------------------------------------------


class OverlayWriter:
    """Writes overlays of images and video frames under one folder (see the module doc)."""

    def __init__(self, out_dir, inputs, as_video: bool, every: int = 1):
        self.out_dir, self.as_video, self.every = Path(out_dir), as_video, every
        self.folders = [Path(p) for p in inputs if Path(p).is_dir()]
        self.names: dict[str, str] = {}  # input -> overlay name (without suffix)
        self.taken: set[str] = set()
        self.video = None  # (input, cv2.VideoWriter, the atomic_path context)

    def _name(self, input_path: str) -> str:
        """The overlay's name for an input: its path under the folder it was found in (else
        its file name), without suffix; a second input with the same name gets "_2" ..."""
        if input_path not in self.names:
            path = Path(input_path)
            relative = Path(path.name)
            for folder in self.folders:
                if path.is_relative_to(folder):
                    relative = path.relative_to(folder)
                    break
            base = name = relative.with_suffix("").as_posix()
            n = 1
            while name in self.taken:
                n += 1
                name = f"{base}_{n}"
            self.taken.add(name)
            self.names[input_path] = name
        return self.names[input_path]

    def write(self, frame: media.Frame, image: np.ndarray):
        name = self._name(frame.input)
        if Path(frame.input).suffix.lower() not in media.VIDEO_SUFFIXES:
            path = self.out_dir / f"{name}.jpg"
            if path.resolve() == Path(frame.input).resolve():  # --overlay is the input folder
                path = path.with_name(f"{path.stem}_overlay.jpg")
            _write_jpeg(path, image)
        elif not self.as_video:
            _write_jpeg(self.out_dir / name / f"{frame.frame:06d}.jpg", image)
        else:
            if self.video is None or self.video[0] != frame.input:
                self.close()
                self.video = (frame.input, *self._open_video(name, frame, image))
            self.video[1].write(image)

    def _open_video(self, name, frame, image):
        # One video spans many calls, so atomic_path's context is entered here and left in
        # `close` (renamed into place, or deleted after an error).
        target = atomic_path(self.out_dir / f"{name}.mp4")
        tmp = target.__enter__()
        # Every k-th frame kept: played at the source's rate / k, the video keeps real time.
        fps = (frame.fps if math.isfinite(frame.fps) else 25.0) / self.every
        height, width = image.shape[:2]
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            target.__exit__(OSError, None, None)
            raise OSError(f"OpenCV cannot write {self.out_dir / name}.mp4")
        return writer, target

    def close(self, error: BaseException | None = None):
        """Finish the open overlay video (renamed into place; deleted after an error)."""
        if self.video is not None:
            _, writer, target = self.video
            writer.release()
            self.video = None
            target.__exit__(type(error) if error else None, error, None)


def _write_jpeg(path: Path, image: np.ndarray):
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"OpenCV cannot encode {path}")
    atomic_write(path, encoded.tobytes())


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


class Progress:
    """The counts of a prediction, shown as a `StatusLine` while it runs."""

    def __init__(self, enabled: bool):
        self.status = StatusLine(enabled)
        self.files = self.unreadable = self.frames = self.faces = self.rows = 0
        self._input = None

    def add(self, result):
        if result.frame.input != self._input:
            self._input = result.frame.input
            self.files += 1
        if result.frame.error is not None:
            self.unreadable += 1
            # The message goes on its own line, after the progress line.
            self.status.close()
            print(f"{result.frame.input}: {result.frame.error} (skipped)", file=sys.stderr,
                  flush=True)
            return
        self.frames += 1
        self.faces += sum(r["success"] for r in result.rows)
        self.rows += len(result.rows)
        self.status.update(self.line)

    def rate(self) -> float:
        return self.faces / max(self.status.elapsed(), 1e-9)

    def line(self) -> str:
        seconds = int(self.status.elapsed())
        return (f"predict: {self.files} files, {self.frames} images/frames, {self.faces} faces, "
                f"{self.rate():.1f} faces/s, {seconds // 60}:{seconds % 60:02d}")

    def closing_line(self, out) -> str:
        return (f"{self.files} files, {self.unreadable} unreadable (skipped), "
                f"{self.frames} images/frames, {self.faces} faces, {self.rows} rows -> {out} "
                f"({self.status.elapsed():.1f} s, {self.rate():.1f} faces/s)")


# ---------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------


def predict(detector, inputs, out, *, aligned=False, every=1, overlay=None,
            overlay_video=False, progress=True) -> Progress:
    """Stream `inputs` through `detector` into the CSV `out` (and overlays); returns the counts.

    The CSV goes through a temporary file, renamed into place only when every input is done.
    """
    from audjax.inference import overlay as overlay_lib

    counts = Progress(progress)
    overlays = OverlayWriter(overlay, inputs, overlay_video, every) if overlay else None
    columns = detector.columns
    error = None
    try:
        with atomic_path(out) as tmp, open(tmp, "x", encoding="utf-8", newline="") as f:
            f.write(",".join(columns) + "\n")
            for result in detector.stream(inputs, aligned=aligned, every=every):
                counts.add(result)
                if result.frame.error is not None:
                    continue
                f.write(csv_lines(columns, result.rows))
                if overlays is not None:
                    overlays.write(result.frame, overlay_lib.draw(
                        result.frame.image, result.rows, detector.au_columns,
                        detector.num_landmarks, detector.threshold))
    except BaseException as e:
        error = e
        raise
    finally:
        if overlays is not None:
            overlays.close(error)
        counts.status.close()
    return counts


# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------


def bench(*, crop=176, width=1.0, model="C", batch_size=32, device=None, path="target",
          batches=20, count=20, inputs=(), front_end=None) -> None:
    """Print faces/s of the network part alone, of dlib alone, and end to end (module doc):
    `batches` network calls of `batch_size` crops, and `count` images end to end (`inputs`
    repeated; default skimage's astronaut). With videos among `inputs`, the videos instead:
    `bench_video`. `front_end`: the Detector's front-end keyword arguments."""
    import jax

    from audjax import state as state_lib
    from audjax.config import Config
    from audjax.data import annotate
    from audjax.inference.detector import Detector, prediction_networks

    # Faces aligned to the paper's 200 for crop 176, in proportion for other crops.
    config = Config(crop=crop, width=width, model=model,
                    aligned_size=max(crop, round(crop * 200 / 176)))
    nets = state_lib.build_networks(config, len(config.au_names))
    params, batch_stats = state_lib.init_variables(
        config, nets, prediction_networks(config, "joint"), jax.random.PRNGKey(0))
    detector = Detector(config, "joint", params, batch_stats, batch_size=batch_size,
                        device=device, path=path, **(front_end or {}))
    device = detector.device
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, JAX device "
          f"{device.platform}:{device.device_kind}; model {config.model}, crop {config.crop}, "
          f"width {config.width}, aligned {detector.aligned_size}, batch {batch_size}, "
          f"{path} path (randomly initialised weights: speed only)")

    crops = np.random.default_rng(0).uniform(
        -1, 1, (batch_size, config.crop, config.crop, 3)).astype(np.float32)
    detector.predict_crops(crops)  # compile
    start = time.perf_counter()
    for _ in range(batches):
        detector.predict_crops(crops)
    seconds = time.perf_counter() - start
    network_rate = batches * batch_size / seconds
    print(f"network part: {network_rate:.1f} faces/s "
          f"({batches} batches of {batch_size}, "
          f"{1000 * seconds / batches:.1f} ms a batch)")
    videos = [p for p in inputs if media.is_video(media.Source(str(p), Path(p)))]
    if videos:
        bench_video(detector, videos, network_rate)
        return

    images = _bench_images(inputs, count)
    annotate.detect_faces(images[0])  # load dlib's models
    start = time.perf_counter()
    found = sum(len(annotate.detect_faces(image, detector.min_face_score)) for image in images)
    seconds = time.perf_counter() - start
    height, width = images[0].shape[:2]
    print(f"dlib alone (detection + 68 points, {width}x{height}): {found / seconds:.1f} faces/s "
          f"({len(images)} images, {found} faces)")

    rgb = [image[..., ::-1] for image in images]
    detector.detect(rgb[:1])
    start = time.perf_counter()
    rows = detector.detect(rgb)
    seconds = time.perf_counter() - start
    faces = sum(r["success"] for r in rows)
    print(f"end to end (dlib, alignment, network): {faces / seconds:.1f} faces/s "
          f"({len(images)} images, {faces} faces, {seconds:.1f} s)")


def _bench_images(inputs, count) -> list[np.ndarray]:
    """`count` BGR images for the end-to-end benchmark: `inputs` repeated, else skimage's
    astronaut."""
    if inputs:
        frames = [f for f in media.iter_frames(inputs) if f.error is None]
        if not frames:
            raise ValueError("no readable image among the benchmark inputs")
        images = [f.image for f in frames]
    else:
        try:
            from skimage import data
        except ImportError:
            raise ImportError("the benchmark without images needs scikit-image "
                              "(skimage.data.astronaut)") from None
        images = [np.ascontiguousarray(data.astronaut()[..., ::-1])]
    return [images[i % len(images)] for i in range(max(count, len(images)))]


def bench_video(detector, videos, network_rate) -> None:
    """Frames/s of `videos` end to end, tracked (the detector's settings) and with detection
    in every frame, in one run: the front end's time per stage (in its workers), the network's
    share (from `network_rate`), and how far the tracked landmarks (% of the eye distance) and
    AU probabilities are from the per-frame ones."""
    from audjax.inference.frontend import STAGES

    runs = {}
    for label, track in (("tracked", detector.track), ("per-frame detection", False)):
        detector.track = track
        start = time.perf_counter()
        frames, totals, rows = 0, dict.fromkeys(STAGES, 0.0), {}
        for result in detector.stream(videos):
            frames += 1
            for stage, seconds in result.seconds.items():
                totals[stage] += seconds
            rows[(result.frame.input, result.frame.frame)] = result.rows
        seconds = time.perf_counter() - start
        runs[label] = rows
        faces = sum(r["success"] for rs in rows.values() for r in rs)
        found = sum(any(r["success"] for r in rs) for rs in rows.values())
        stages = ", ".join(f"{stage} {1000 * t / frames:.1f}" for stage, t in totals.items())
        print(f"{label}: {frames / seconds:.1f} frames/s end to end ({frames} frames, {found} "
              f"with a face, {faces} faces, {seconds:.1f} s, {detector.workers} workers); "
              f"ms a frame: {stages}, network {1000 * faces / frames / network_rate:.1f}")
    tracked, reference = runs.values()
    if detector.au_columns:
        _compare(tracked, reference, detector)


def _compare(tracked, reference, detector) -> None:
    """AU probability differences of the faces both runs found (each per-frame face against
    the tracked face of its frame whose box centre is nearest). The landmark columns are the
    network's, meaningless for random weights: tests/test_tracking.py checks dlib's points."""

    def centre(row):
        return np.array([row["face_x"] + row["face_width"] / 2,
                         row["face_y"] + row["face_height"] / 2])

    prob = []
    for key, rows in reference.items():
        found = [r for r in tracked.get(key, []) if r["success"]]
        for b in (r for r in rows if r["success"] and found):
            a = min(found, key=lambda r, b=b: np.linalg.norm(centre(r) - centre(b)))
            if np.linalg.norm(centre(a) - centre(b)) < b["face_width"] / 2:
                prob.append(np.mean([abs(a[c] - b[c]) for c in detector.au_columns]))
    print(f"tracked vs per-frame ({len(prob)} faces): AU probabilities {np.mean(prob):.2g} "
          f"apart on average (random weights)")
