"""audjax visualize: the paper's Fig. 1 (separation, recombination, cross-cycle reconstruction)
for a source and a target face (`audjax.inference.figure`; needs a joint run of model A, B or C,
matplotlib and, for photos, dlib).
"""

from __future__ import annotations

import sys

from absl import flags

from audjax.cli.common import parse

USAGE = "SOURCE_IMAGE TARGET_IMAGE --run RUN --out FIG.png [flags]"
FLAGS = flags.FlagValues()
flags.DEFINE_string("run", None, "a joint run directory (its best checkpoint) or a checkpoint "
                    "step directory", required=True, flag_values=FLAGS)
flags.DEFINE_string("out", None, "the figure (.png, .pdf, .svg)", required=True,
                    flag_values=FLAGS)
flags.DEFINE_boolean("aligned", False, "the images are faces already aligned as the training "
                     "images", flag_values=FLAGS)
flags.DEFINE_string("device", None, "cpu or gpu (default: JAX's default device)",
                    flag_values=FLAGS)


def main(argv) -> int:
    source, target = parse(FLAGS, argv, "visualize", USAGE, __doc__, positional=(2, 2))
    from audjax.inference import figure
    from audjax.inference.detector import Detector

    try:
        detector = Detector.from_run(FLAGS.run, batch_size=1, device=FLAGS.device)
        images = [figure.read_image(name) for name in (source, target)]
        figure.figure(detector, *images, FLAGS.out, aligned=FLAGS.aligned, names=(source, target))
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {FLAGS.out}")
    return 0
