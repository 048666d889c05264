"""Train or evaluate audjax from the command line.

    python -m experiments.run --flagfile=pretrain.flags     # phase 1, the paper's settings
    python -m experiments.run --flagfile=joint.flags        # phase 2
    python -m experiments.run --flagfile=quickstart.flags   # both phases, small, on SynthAU

A bare flag-file name is also looked up in experiments/. Every field of audjax.config.Config is
a flag with the same name and default; --workdir names the run directory.
"""

import dataclasses
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from audjax.config import Config

HERE = Path(__file__).resolve().parent


def _define_flags():
    for f in dataclasses.fields(Config):
        help_text = f.metadata.get("help", f.name)
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                  float: flags.DEFINE_float, str: flags.DEFINE_string}[f.type]
        define(f.name, f.default, help_text)
    flags.DEFINE_string("workdir", "runs/default", "run directory (created if missing)")


_define_flags()
FLAGS = flags.FLAGS


def _resolve_flagfiles(argv):
    """Let `--flagfile=NAME` find experiments/NAME when NAME is not a path from here."""
    out = []
    for arg in argv:
        if arg.startswith("--flagfile="):
            name = arg.split("=", 1)[1]
            if not Path(name).exists() and (HERE / name).exists():
                arg = f"--flagfile={HERE / name}"
            elif not Path(name).exists():
                sys.exit(f"--flagfile={name}: no such file (looked here and in {HERE})")
        out.append(arg)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep library INFO lines off the console
    config = Config(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Config)})
    try:
        config.validate()
    except ValueError as e:
        sys.exit(f"error: {e}")
    # Imported here so that --help and flag errors need no JAX start-up.
    from audjax.train import train_and_evaluate

    try:
        train_and_evaluate(config, FLAGS.workdir)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, argv=_resolve_flagfiles(sys.argv))
