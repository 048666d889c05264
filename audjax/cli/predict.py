"""audjax predict: AU probabilities and landmarks of every face in photos, videos and folders,
as a CSV (one row per face; `audjax.inference.batch`).

    audjax predict photo.jpg clips/ --run runs/quickstart/joint --out results.csv
    audjax predict clip.mp4 --run RUN --out clip.csv --every 5 --overlay overlays/
    audjax predict --bench --crop 176 --width 1.0    # faces/s: network, dlib, both

--bench times a randomly initialised model (INPUTs: images to time end to end; default
skimage's astronaut; a video: frames/s tracked and with detection in every frame, per stage).
"""

from __future__ import annotations

import sys

from absl import flags

from audjax.cli.common import fail, parse
from audjax.config import MODELS
from audjax.inference.detector import PATHS

USAGE = "INPUT... --run RUN --out FILE.csv [flags]  |  --bench [INPUT...] [flags]"
FLAGS = flags.FlagValues()
flags.DEFINE_string("run", None, "a run directory (its best checkpoint), RUN/checkpoints "
                    "(the latest) or a checkpoint step directory", flag_values=FLAGS)
flags.DEFINE_string("out", None, "the CSV to write", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "faces per network call", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("every", 1, "keep every k-th video frame", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float("threshold", 0.5, "probability at which an AU counts as present (AUxx_c)",
                   lower_bound=0.0, upper_bound=1.0, flag_values=FLAGS)
flags.DEFINE_enum("path", "target", PATHS, "target: in-the-wild faces, "
                  "E_au(G_st(E_l(F), G_b(F))); source: lab-like faces, E_au(F)",
                  flag_values=FLAGS)
flags.DEFINE_string("device", None, "cpu or gpu (default: JAX's default device)",
                    flag_values=FLAGS)
flags.DEFINE_boolean("aligned", False, "inputs are faces already aligned as the training images",
                     flag_values=FLAGS)
flags.DEFINE_float("min_face_score", 0.2, "dlib detections scoring lower are not faces "
                   "(dlib's cut-off: 0)", flag_values=FLAGS)
flags.DEFINE_float("min_face", 40, "the smallest face to find, in pixels (larger: faster on "
                   "large frames)", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_enum("track", "on", ["on", "off"], "on: follow faces through videos (ids that "
                  "last); off: detect in every frame", flag_values=FLAGS)
flags.DEFINE_integer("detect_every", 10, "when tracking, run the face detector at least every "
                     "this many frames", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("workers", 0, "processes for decoding and the face work (0: one per "
                     "core)", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_string("overlay", None, "draw face box, landmarks and AU bars on each image into "
                    "this folder", flag_values=FLAGS)
flags.DEFINE_boolean("overlay_video", False, "with --overlay: one .mp4 per video instead of one "
                     ".jpg a frame", flag_values=FLAGS)
flags.DEFINE_boolean("quiet", False, "no progress line", flag_values=FLAGS)
flags.DEFINE_boolean("bench", False, "time a randomly initialised model instead",
                     flag_values=FLAGS)
flags.DEFINE_integer("crop", 176, "--bench: crop size", flag_values=FLAGS)
flags.DEFINE_float("width", 1.0, "--bench: width multiplier", flag_values=FLAGS)
flags.DEFINE_enum("model", "C", MODELS, "--bench: model", flag_values=FLAGS)
flags.DEFINE_integer("bench_batches", 20, "--bench: network calls timed", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("bench_count", 20, "--bench: images timed end to end (the inputs "
                     "repeated)", lower_bound=1, flag_values=FLAGS)


def front_end_flags(f) -> dict:
    """The Detector's front-end keyword arguments from the flags."""
    from audjax.data.prepare import available_cores

    return {"min_face_score": f.min_face_score, "min_face": f.min_face,
            "track": f.track == "on", "detect_every": f.detect_every,
            "workers": f.workers or available_cores()}


def main(argv) -> int:
    inputs = parse(FLAGS, argv, "predict", USAGE, __doc__, positional=(0, None))
    f = FLAGS
    if f.overlay_video and not f.overlay:
        raise fail("predict", "--overlay_video needs --overlay DIR")
    from audjax.inference import batch

    if f.bench:
        try:
            batch.bench(crop=f.crop, width=f.width, model=f.model, batch_size=f.batch_size,
                        device=f.device, path=f.path, batches=f.bench_batches,
                        count=f.bench_count, inputs=inputs, front_end=front_end_flags(f))
        except (ImportError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if not (inputs and f.run and f.out):
        raise fail("predict", "give INPUT..., --run DIR and --out FILE.csv (or --bench)")
    from audjax.inference.detector import Detector

    try:
        detector = Detector.from_run(f.run, batch_size=f.batch_size, threshold=f.threshold,
                                     path=f.path, device=f.device, **front_end_flags(f))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: --run={f.run}: {e}", file=sys.stderr)
        return 2
    try:
        counts = batch.predict(detector, inputs, f.out, aligned=f.aligned, every=f.every,
                               overlay=f.overlay, overlay_video=f.overlay_video,
                               progress=not f.quiet)
    except ImportError as e:  # dlib missing: the message names the extra
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(counts.closing_line(f.out))
    return 0 if counts.frames or not counts.unreadable else 1
