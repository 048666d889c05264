"""audjax plot: training curves and per-AU F1 of runs, as one figure (`audjax.tools.plot`;
needs matplotlib, the extra `plot`).
"""

from __future__ import annotations

import sys

from absl import flags

from audjax.cli.common import parse

USAGE = "RUN... --out FIG.png [--split SPLIT]"
FLAGS = flags.FlagValues()
flags.DEFINE_string("out", None, "the figure (.png, .pdf, .svg)", required=True,
                    flag_values=FLAGS)
flags.DEFINE_string("split", "target_test", "results.json split of the per-AU F1 bars",
                    flag_values=FLAGS)


def main(argv) -> int:
    paths = parse(FLAGS, argv, "plot", USAGE, __doc__, positional=(1, None))
    from audjax.tools import plot

    try:
        runs = plot.plot_runs(paths, FLAGS.out, FLAGS.split)
    except (FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{FLAGS.out}: {len(runs)} runs ({', '.join(map(str, runs))})")
    return 0
