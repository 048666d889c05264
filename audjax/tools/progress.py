"""A progress line on stderr for long command-line jobs (`prepare`, `predict`).

On a terminal the line is redrawn in place, at most 4 times a second; in a log file (stderr not
a terminal) a new line is printed every 30 s, so that logs stay short.
"""

import sys
import time


class StatusLine:
    """    status = StatusLine(enabled=True)
    status.update(lambda: f"{done}/{total}")   # shown when due; the lambda runs only then
    status.close()
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.start = self.last = time.monotonic()
        self.width = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, make_line, force: bool = False):
        """Show `make_line()` when the last line is old enough, or when `force`."""
        now = time.monotonic()
        if not self.enabled or not (force or now - self.last >= (0.25 if self.tty else 30)):
            return
        self.last = now
        line = make_line()
        if self.tty:  # overwrite the previous line, blanking what a shorter line leaves
            self.width = max(self.width, len(line))
            print("\r" + line.ljust(self.width), end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self):
        """End a line being redrawn, so that what follows starts on its own line."""
        if self.tty and self.width:
            print(file=sys.stderr, flush=True)
            self.width = 0
