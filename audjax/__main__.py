"""`python -m audjax <verb>`: the same as the `audjax` command."""

import sys

from audjax.cli import main

sys.exit(main())
