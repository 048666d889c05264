"""Score the AUs of every face in photos, videos and folders with a trained run.

    python -m audjax.cli.predict photo.jpg clips/ --run runs/quickstart/joint --out results.csv
    python -m audjax.cli.predict clip.mp4 --run RUN --out clip.csv --every 5 --overlay overlays/
    python -m audjax.cli.predict --bench --crop 176 --width 1.0    # faces/s: network, dlib, both

The CSV has one row per face, with `audjax.inference.detector`'s columns (OpenFace / py-feat names:
`input, frame, timestamp, face_id, face_x, ..., success, AU01, ..., AU01_c, ..., x_0, ...,
y_48`); an image or frame without a face gives a row with success 0 and empty values. It is
written to a temporary file and renamed when complete. A file that cannot be read is reported
on stderr, counted in the closing line and skipped.

`--overlay DIR` draws the face box, the 49 landmarks and a bar per AU
(`audjax.inference.overlay`) on a
copy of each image, saved as DIR/<its path under the input folder, as .jpg>; a video's frames go
to DIR/<video name>/<frame>.jpg, or into one DIR/<video name>.mp4 with `--overlay_video`.
"""

from __future__ import annotations

import argparse
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

from audjax.config import MODELS
from audjax.files import atomic_path, atomic_write
from audjax.inference import media
from audjax.inference.detector import PATHS
from audjax.tools import malloc as hostmem
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


def bench(args) -> None:
    """faces/s of the network part alone, of dlib alone, and end to end (module doc)."""
    import jax

    from audjax import state as state_lib
    from audjax.config import Config
    from audjax.data import annotate
    from audjax.inference.detector import Detector, prediction_networks

    # Faces aligned to the paper's 200 for crop 176, in proportion for other crops.
    config = Config(crop=args.crop, width=args.width, model=args.model,
                    aligned_size=max(args.crop, round(args.crop * 200 / 176)))
    nets = state_lib.build_networks(config, len(config.au_names))
    params, batch_stats = state_lib.init_variables(
        config, nets, prediction_networks(config, "joint"), jax.random.PRNGKey(0))
    detector = Detector(config, "joint", params, batch_stats, batch_size=args.batch_size,
                        device=args.device, path=args.path)
    device = detector.device
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, JAX device "
          f"{device.platform}:{device.device_kind}; model {config.model}, crop {config.crop}, "
          f"width {config.width}, aligned {detector.aligned_size}, batch {args.batch_size}, "
          f"{args.path} path (randomly initialised weights: speed only)")

    crops = np.random.default_rng(0).uniform(
        -1, 1, (args.batch_size, config.crop, config.crop, 3)).astype(np.float32)
    detector.predict_crops(crops)  # compile
    start = time.perf_counter()
    for _ in range(args.bench_batches):
        detector.predict_crops(crops)
    seconds = time.perf_counter() - start
    print(f"network part: {args.bench_batches * args.batch_size / seconds:.1f} faces/s "
          f"({args.bench_batches} batches of {args.batch_size}, "
          f"{1000 * seconds / args.bench_batches:.1f} ms a batch)")

    images = _bench_images(args)
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


def _bench_images(args) -> list[np.ndarray]:
    """BGR images for the end-to-end benchmark: --bench_images, else skimage's astronaut."""
    if args.inputs:
        frames = [f for f in media.iter_frames(args.inputs) if f.error is None]
        if not frames:
            sys.exit("error: no readable image among the benchmark inputs")
        images = [f.image for f in frames]
    else:
        try:
            from skimage import data
        except ImportError:
            sys.exit("error: --bench without images needs scikit-image (skimage.data.astronaut)")
        images = [np.ascontiguousarray(data.astronaut()[..., ::-1])]
    return [images[i % len(images)] for i in range(max(args.bench_count, len(images)))]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m audjax.cli.predict",
        description="AU probabilities and landmarks of every face in photos, videos and "
                    "folders, as a CSV (one row per face).")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="images, videos or folders (searched recursively)")
    parser.add_argument("--run", help="a run directory (its best checkpoint), RUN/checkpoints "
                                      "(the latest) or a checkpoint step directory")
    parser.add_argument("--out", help="the CSV to write")
    parser.add_argument("--batch_size", type=int, default=32, help="faces per network call")
    parser.add_argument("--every", type=int, default=1, help="keep every k-th video frame")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability at which an AU counts as present (AUxx_c)")
    parser.add_argument("--path", choices=PATHS, default="target",
                        help="target: in-the-wild faces, E_au(G_st(E_l(F), G_b(F))); source: "
                             "lab-like faces, E_au(F)")
    parser.add_argument("--device", help="cpu or gpu (default: JAX's default device)")
    parser.add_argument("--aligned", action="store_true",
                        help="inputs are faces already aligned as the training images")
    parser.add_argument("--min_face_score", type=float, default=0.5,
                        help="dlib detections scoring lower are not faces (dlib's cut-off: 0)")
    parser.add_argument("--overlay", metavar="DIR",
                        help="draw face box, landmarks and AU bars on each image into DIR")
    parser.add_argument("--overlay_video", action="store_true",
                        help="with --overlay: one .mp4 per video instead of one .jpg a frame")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    bench_args = parser.add_argument_group(
        "benchmark", "--bench times a randomly initialised model (INPUTs: images to time "
                     "end to end; default skimage's astronaut)")
    bench_args.add_argument("--bench", action="store_true")
    bench_args.add_argument("--crop", type=int, default=176)
    bench_args.add_argument("--width", type=float, default=1.0)
    bench_args.add_argument("--model", choices=MODELS, default="C")
    bench_args.add_argument("--bench_batches", type=int, default=20)
    bench_args.add_argument("--bench_count", type=int, default=20,
                            help="images timed end to end (the inputs repeated)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.every < 1:
        parser.error("--batch_size and --every must be at least 1")
    if not 0 <= args.threshold <= 1:
        parser.error(f"--threshold={args.threshold}: must be in [0, 1]")
    if args.overlay_video and not args.overlay:
        parser.error("--overlay_video needs --overlay DIR")
    if not args.bench and not (args.inputs and args.run and args.out):
        parser.error("give INPUT..., --run DIR and --out FILE.csv (or --bench)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bench:
        bench(args)
        return 0
    from audjax.inference.detector import Detector

    try:
        detector = Detector.from_run(args.run, batch_size=args.batch_size,
                                     threshold=args.threshold, path=args.path,
                                     device=args.device, min_face_score=args.min_face_score)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: --run={args.run}: {e}", file=sys.stderr)
        return 2
    try:
        counts = predict(detector, args.inputs, args.out, aligned=args.aligned, every=args.every,
                         overlay=args.overlay, overlay_video=args.overlay_video,
                         progress=not args.quiet)
    except ImportError as e:  # dlib missing: the message names the extra
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(counts.closing_line(args.out))
    return 0 if counts.frames or not counts.unreadable else 1


if __name__ == "__main__":
    hostmem.tune_malloc()
    sys.exit(main())
