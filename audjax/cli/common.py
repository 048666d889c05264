"""What every verb shares: parsing its own absl `FlagValues` with clear errors and `--help`."""

from __future__ import annotations

import sys

from absl import flags

HELP = ("-h", "--help", "-help", "--helpshort", "--helpfull")


def _prog(verb: str) -> str:
    """A verb's command: `audjax VERB`; a program given whole (`python -m ...`) as it is."""
    return verb if " " in verb else f"audjax {verb}"


def help_text(values: flags.FlagValues, verb: str, usage: str, doc: str) -> str:
    """`audjax VERB --help`: the usage line, the verb's summary and exactly its flags."""
    return (f"usage: {_prog(verb)} {usage}\n\n{doc.strip()}\n\nflags:\n"
            f"{values.get_help(prefix='  ', include_special_flags=False)}\n")


def fail(verb: str, message: str) -> SystemExit:
    """Print `message` as the verb's error and return the SystemExit (status 2) to raise."""
    print(f"{_prog(verb)}: error: {message}\n({_prog(verb)} --help lists its flags)",
          file=sys.stderr)
    return SystemExit(2)


def parse(values: flags.FlagValues, argv, verb: str, usage: str, doc: str,
          positional: tuple[int, int | None] = (0, 0), known_only: bool = False) -> list[str]:
    """Parse `argv` (the arguments after the verb) into `values`; returns the positional
    arguments, `positional` = (fewest, most; None: no limit), and with `known_only` the flags
    `values` does not define. `--help` prints `help_text` and
    exits 0; a bad flag, a missing required one or a wrong number of arguments exits 2 with a
    message naming it."""
    argv = list(argv)
    options = argv[:argv.index("--")] if "--" in argv else argv
    if any(a in HELP for a in options):
        print(help_text(values, verb, usage, doc), end="")
        raise SystemExit(0)
    values.unparse_flags()  # a verb called twice in one process starts from its defaults
    try:
        rest = values([_prog(verb), *argv], known_only=known_only)[1:]
    except flags.Error as e:
        raise fail(verb, str(e)) from None
    fewest, most = positional
    if len(rest) < fewest or (most is not None and len(rest) > most):
        what = f"unexpected arguments {rest}" if most is not None and len(rest) > most else (
            f"missing arguments: {usage}")
        raise fail(verb, what)
    return rest
