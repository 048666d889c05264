"""audjax synth: generate SynthAU, the synthetic two-domain AU data set (`audjax.data.synth`);
kept if already there with the same parameters.

    audjax synth --out DIR                                  # 10,000 images at 200x200
    audjax synth --out DIR --image_size 72 --n_train 500
    audjax synth --out DIR --domain_shift_check             # and measure the domain shift
"""

from __future__ import annotations

import sys
import time

from absl import flags

from audjax.cli.common import parse
from audjax.data import synth
from audjax.landmarks import AU_NAMES

USAGE = "--out DIR [flags]"
FLAGS = flags.FlagValues()
flags.DEFINE_string("out", None, "data root to write", required=True, flag_values=FLAGS)
flags.DEFINE_integer("image_size", 200, "aligned image side", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("n_train", synth.DEFAULT_SIZES["source_train"],
                     "images in source_train and in target_train", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_integer("n_val", synth.DEFAULT_SIZES["source_val"],
                     "images in source_val and in target_val", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("n_test", synth.DEFAULT_SIZES["source_test"],
                     "images in source_test and in target_test", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "generation seed", flag_values=FLAGS)
flags.DEFINE_enum("target_shift", "full", synth.TARGET_SHIFTS,
                  "what sets the target domain apart (see audjax.data.synth.TARGET_SHIFTS)",
                  flag_values=FLAGS)
flags.DEFINE_integer("workers", None, "processes (default: cores)", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_boolean("force", False, "regenerate even if up to date", flag_values=FLAGS)
flags.DEFINE_boolean("domain_shift_check", False, "then train a linear probe per AU on the "
                     "source and report F1", flag_values=FLAGS)


def main(argv) -> int:
    parse(FLAGS, argv, "synth", USAGE, __doc__)
    f = FLAGS
    sizes = {f"{d}_{s}": n for d in ("source", "target")
             for s, n in (("train", f.n_train), ("val", f.n_val), ("test", f.n_test))}
    make = synth.generate if f.force else synth.ensure
    start = time.monotonic()
    try:
        info = make(f.out, sizes=sizes, image_size=f.image_size, seed=f.seed,
                    target_shift=f.target_shift, workers=f.workers)
    except ValueError as e:  # e.g. too few training images to weight every AU
        print(f"error: --out={f.out}: {e}", file=sys.stderr)
        return 2
    print(f"SynthAU in {f.out}: {sum(info['sizes'].values())} images at "
          f"{info['image_size']}x{info['image_size']} ({time.monotonic() - start:.1f} s)")
    for split, rates in info["label_rates"].items():
        print(f"  {split:13} AU rates " + " ".join(
            f"{name}={r:.2f}" for name, r in zip(AU_NAMES, rates, strict=True)))
    if f.domain_shift_check:
        print("Linear probe (HOG + logistic regression) F1 per AU, train->test domain:")
        print(synth.shift_table(synth.domain_shift_check(f.out)))
    return 0
