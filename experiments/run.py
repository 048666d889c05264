"""Train or evaluate audjax from the command line.

    python -m experiments.run --flagfile=pretrain.flags     # phase 1, the paper's settings
    python -m experiments.run --flagfile=joint.flags        # phase 2
    python -m experiments.run --flagfile=quickstart.flags   # both phases, small, on SynthAU

A bare flag-file name is also looked up in experiments/. Every field of audjax.config.Config is
a flag with the same name and default; --workdir names the run directory. --model is a preset of
the loss weights and the transplant; such flags given after it (flag files read in place)
override the preset, so `--flagfile=joint.flags --model=A` is model A with A's weights and
`--model=C --lambda_self=3` is model C with ADLD's self-reconstruction term added.
"""

import dataclasses
import sys
import typing
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from audjax.config import PRESET_FIELDS, Config

HERE = Path(__file__).resolve().parent


def _define_flags():
    for f in dataclasses.fields(Config):
        help_text = f.metadata.get("help", f.name)
        # `float | None` (a preset field) is a float flag whose default None means "the preset".
        kind = next((t for t in typing.get_args(f.type) if t is not type(None)), f.type)
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                  float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
        define(f.name, f.default, help_text)
    flags.DEFINE_string("workdir", "runs/default", "run directory (created if missing)")
    flags.DEFINE_bool("print_config", False, "print the effective configuration (model presets "
                      "filled in) as JSON and exit without running")


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


def preset_overrides(args) -> set[str]:
    """The preset fields (loss weights, transplant) given after the last --model in `args`,
    flag files expanded in place: those override the model's preset, earlier ones do not.

    >>> sorted(preset_overrides(["--lambda_c=1", "--model=A", "--lambda_self=0", "--notransplant"]))
    ['lambda_self', 'transplant']
    """
    given = set()
    for arg in FLAGS.read_flags_from_files(list(args), force_gnu=False):
        if not arg.startswith("-"):
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if name == "model":
            given.clear()
        elif name in PRESET_FIELDS:
            given.add(name)
        elif name.startswith("no") and name[2:] in PRESET_FIELDS:
            given.add(name[2:])
    return given


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep library INFO lines off the console
    overrides = preset_overrides(ARGV[1:])
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Config)}
    values.update({name: None for name in PRESET_FIELDS if name not in overrides})
    config = Config(**values)
    try:
        config.validate()
    except ValueError as e:
        sys.exit(f"error: {e}")
    if FLAGS.print_config:
        print(config.to_json())
        return
    # Imported here so that --help and flag errors need no JAX start-up.
    from audjax.train import train_and_evaluate

    try:
        train_and_evaluate(config, FLAGS.workdir)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f"error: {e}")


ARGV = _resolve_flagfiles(sys.argv)

if __name__ == "__main__":
    app.run(main, argv=ARGV)
