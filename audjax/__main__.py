"""`python -m audjax <verb>`: the same as the `audjax` command."""

import sys

from audjax.cli import main

# Worker processes started with "spawn" (audjax prepare, audjax synth) import this module again
# as __mp_main__: they must not run the command.
if __name__ == "__main__":
    sys.exit(main())
