"""audjax inspect: describe a checkpoint from its metadata, without reading its arrays
(`audjax.tools.inspect`).

PATH is a run directory (its best checkpoint), RUN/checkpoints (the latest) or a checkpoint step
directory.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from audjax.cli.common import parse

USAGE = "PATH [--json]"
FLAGS = flags.FlagValues()
flags.DEFINE_boolean("json", False, "print the description as JSON", flag_values=FLAGS)


def main(argv) -> int:
    (path,) = parse(FLAGS, argv, "inspect", USAGE, __doc__, positional=(1, 1))
    from absl import logging as absl_logging

    from audjax.tools import inspect

    absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax warns about optional metadata files
    try:
        description = inspect.describe(path)
    except (OSError, ValueError) as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(description, indent=2) if FLAGS.json else inspect.format_text(description))
    return 0
