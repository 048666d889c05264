"""The ways a run stops on purpose, each with its exit status.

Library code raises these with a one-line message that names the flag, the file and line, or the
path at fault; `experiments/run.py` prints the message (no traceback) and exits with `status`.
Anything else that escapes is a bug and keeps its traceback.

    status 0  Interrupted    SIGTERM or SIGINT: the run saved a checkpoint; the same command
                             continues it
    status 1  SaveError      a checkpoint could not be written (disk full, read-only); the
                             previous checkpoint is intact
    status 2  InputError     a flag, file or path is wrong (found before any long work), or too
                             many images could not be used (found while training)
    status 3  NonFiniteError a loss term or an update was not finite in more steps than
                             --skip_nonfinite allows
"""


class RunError(Exception):
    """A run stopped with a message for the user; `status` is the process exit status."""

    status = 1


class Interrupted(RunError):
    """A stop signal arrived; the run saved its state and can be continued."""

    status = 0


class SaveError(RunError):
    """Writing a checkpoint failed; the previous one is still complete and readable."""

    status = 1


class InputError(RunError, ValueError):
    """A flag, file, path or data set is at fault (a ValueError, for callers that catch those)."""

    status = 2


class NonFiniteError(RunError, FloatingPointError):
    """Training produced NaN or infinity in more steps than allowed."""

    status = 3
