"""`audjax <verb>`: one command for every tool (`python -m audjax <verb>` is the same).

Each verb is a module `audjax.cli.<verb>` with its own absl `FlagValues` and a short `main(argv)`
over library calls; `audjax <verb> --help` lists that verb's flags.
"""

from __future__ import annotations

import importlib
import sys

from absl import flags

VERBS = {
    "predict": "score the AUs of every face in photos, videos and folders (a CSV)",
    "inspect": "describe a checkpoint from its metadata, without reading its arrays",
    "plot": "training curves and per-AU F1 of runs",
    "visualize": "the paper's Fig. 1 for a source and a target face",
    "bench": "time the training step (--what=step) or the input pipeline (--what=pipeline)",
    "prepare": "raw face images -> aligned images + ADLD list files",
    "synth": "generate the SynthAU data set (kept if already there)",
    "check": "validate a list prefix and decode every image",
}
# Verbs whose compiled programs run many times in one process: with AUDJAX_TUNE_MALLOC=1 the
# command restarts with the malloc tunables (audjax.tools.malloc). bench decides for itself.
TUNED = ("predict",)


def usage() -> str:
    """`audjax --help`: the verbs, one line each."""
    width = max(map(len, VERBS))
    lines = ["usage: audjax <verb> [flags]   (audjax <verb> --help: that verb's flags)", "",
             "verbs:"]
    lines += [f"  {verb:<{width}}  {text}" for verb, text in VERBS.items()]
    lines += ["", "Training: python -m experiments.run --flagfile=quickstart.flags (README.md)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Run the verb `argv[1]` (default `sys.argv`: the command line, which a verb of `TUNED`
    may restart with the malloc tunables) on the arguments after it."""
    command_line = argv is None
    argv = sys.argv if argv is None else argv
    args = list(argv[1:])
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    verb = args[0]
    if verb not in VERBS:
        print(f"audjax: unknown verb {verb!r}; the verbs are {', '.join(VERBS)} "
              "(audjax --help)", file=sys.stderr)
        return 2
    if command_line and verb in TUNED:
        from audjax.tools import malloc

        malloc.tune_malloc()
    # grain's worker processes and absl logging read absl's global flags, which no verb
    # parses (each has its own FlagValues).
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return importlib.import_module(f"audjax.cli.{verb}").main(args[1:])
