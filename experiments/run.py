"""Train or evaluate audjax from the command line.

    python -m experiments.run --flagfile=pretrain.flags     # phase 1, the paper's settings
    python -m experiments.run --flagfile=joint.flags        # phase 2
    python -m experiments.run --flagfile=quickstart.flags   # both phases, small, on SynthAU

A bare flag-file name is also looked up in experiments/. Every field of audjax.config.Config is
a flag with the same name and default; --workdir names the run directory. --model is a preset of
the loss weights and the transplant; such flags given after it (flag files read in place)
override the preset, so `--flagfile=joint.flags --model=A` is model A with A's weights and
`--model=C --lambda_self=3` is model C with ADLD's self-reconstruction term added.

A run that stops on purpose prints one line (no traceback) and exits with the status of
`audjax.errors`: 2 for a wrong flag, file or path (found before any long work), 0 after a stop
signal (the checkpoint is saved; the same command continues), 3 for non-finite training, 1 when
a checkpoint cannot be written.
"""

import dataclasses
import re
import signal
import sys
import typing
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from audjax.config import PRESET_FIELDS, Config
from audjax.errors import RunError
from audjax.tools import malloc as hostmem

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


def _fail(message: str, status: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def resolve_flagfiles(argv):
    """Let `--flagfile=NAME` find experiments/NAME when NAME is not a path from here."""
    out = []
    for arg in argv:
        if arg.startswith("--flagfile="):
            name = arg.split("=", 1)[1]
            if not Path(name).exists() and (HERE / name).exists():
                arg = f"--flagfile={HERE / name}"
            elif not Path(name).exists():
                _fail(f"--flagfile={name}: no such file (looked here and in {HERE})")
        out.append(arg)
    return out


def preset_overrides(args) -> dict[str, str]:
    """The preset fields (loss weights, transplant) given after the last --model in `args`, each
    with the argument that set it last, flag files expanded in place: those override the model's
    preset, earlier ones do not.

    >>> preset_overrides(["--lambda_c=1", "--model=A", "--lambda_self=0", "--notransplant"])
    {'lambda_self': '--lambda_self=0', 'transplant': '--notransplant'}
    """
    given = {}
    for arg in FLAGS.read_flags_from_files(list(args), force_gnu=False):
        if not arg.startswith("-"):
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if name == "model":
            given.clear()
        elif name in PRESET_FIELDS:
            given[name] = arg
        elif name.startswith("no") and name[2:] in PRESET_FIELDS:
            given[name[2:]] = arg
    return given


def _where(name: str, argv) -> str:
    """"FILE:LINE: " of the flag-file line that set --name last (absl lets the last setting
    win), or "" when the command line itself set it last."""
    found = ""
    pattern = re.compile(rf"--(no)?{re.escape(name)}(=|$)")

    def scan(args, file=None):
        nonlocal found
        for line_no, arg in args:
            arg = arg.strip()
            if arg.startswith("--flagfile="):
                path = Path(arg.split("=", 1)[1]).expanduser()
                try:
                    lines = path.read_text().splitlines()
                except OSError:
                    continue
                scan(list(enumerate(lines, 1)), path)
            elif pattern.match(arg):
                found = f"{file}:{line_no}: " if file else ""

    scan([(None, a) for a in argv[1:]])
    return found


def _parse_flags(argv):
    """absl's parser, but its errors are one line naming the flag (and the flag file and line
    it came from) with exit status 2; absl itself prints usage hints and exits with 1."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        message = str(e).splitlines()[0]
        name = getattr(e, "flagname", None)
        if name is None:
            found = re.match(r"flag --(\w+)=", message)
            name = found and found.group(1)
        _fail((_where(name, argv) if name else "") + message)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep library INFO lines off the console
    overrides = preset_overrides(resolve_flagfiles(sys.argv)[1:])
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Config)}
    values.update({name: None for name in PRESET_FIELDS if name not in overrides})
    config = Config(**values)
    if FLAGS.print_config:
        try:
            config.validate()
        except ValueError as e:
            _fail(str(e))
        print(config.to_json())
        return
    # Imported here so that --help and flag errors need no JAX start-up.
    from audjax.train import train_and_evaluate

    try:
        train_and_evaluate(config, FLAGS.workdir)
    except RunError as e:
        if e.status == 0:
            print(e, file=sys.stderr)
            sys.exit(0)
        _fail(str(e), e.status)
    except KeyboardInterrupt:  # Ctrl-C outside training (data generation, evaluation)
        _fail("interrupted", 128 + signal.SIGINT)


if __name__ == "__main__":
    hostmem.tune_malloc()
    app.run(main, argv=resolve_flagfiles(sys.argv), flags_parser=_parse_flags)
