"""Train or evaluate audjax from the command line.

    python -m experiments.run --flagfile=pretrain.flags     # phase 1, the paper's settings
    python -m experiments.run --flagfile=joint.flags        # phase 2
    python -m experiments.run --flagfile=quickstart.flags   # both phases, small, on SynthAU

A bare flag-file name is also looked up in experiments/. Every field of audjax.config.Config is
a flag with the same name and default; --workdir names the run directory.

A run that stops on purpose prints one line (no traceback) and exits with the status of
`audjax.errors`: 2 for a wrong flag, file or path (found before any long work), 0 after a stop
signal (the checkpoint is saved; the same command continues), 3 for non-finite training, 1 when
a checkpoint cannot be written.
"""

import dataclasses
import re
import signal
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from audjax.config import Config
from audjax.errors import RunError

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


def _fail(message: str, status: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _resolve_flagfiles(argv):
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
    config = Config(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(Config)})
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
    app.run(main, argv=_resolve_flagfiles(sys.argv), flags_parser=_parse_flags)
