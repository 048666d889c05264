"""`python -m experiments.run` with test hooks, for the kill and signal tests of
tests/test_reliability.py (run as `python tests/crash_hooks.py FLAGS...`). The hooks live here,
not in audjax: the library has no test-only code paths.

AUDJAX_TEST_DIE_IN_SAVE=N   SIGKILL this process in the middle of saving checkpoint N: every
                            item is written into N.orbax-checkpoint-tmp..., which is not yet
                            renamed to N (Orbax's commit), so a deterministic half-written save.
AUDJAX_TEST_SLOW_SAVE=S     sleep S seconds before every checkpoint save, so that a second stop
                            signal can arrive while the first one's save is in progress.
"""

import os
import runpy
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _die_in_save(step: str):
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        if self._final_path.name == step and self._final_path.parent.name == "checkpoints":
            os.kill(os.getpid(), signal.SIGKILL)
        return await original(self)

    atomicity.AtomicRenameTemporaryPath.finalize = finalize


def _slow_save(seconds: float):
    from audjax import checkpoints

    original = checkpoints.RunCheckpoints._save

    def save(self, *args, **kwargs):
        time.sleep(seconds)
        return original(self, *args, **kwargs)

    checkpoints.RunCheckpoints._save = save


if __name__ == "__main__":
    if "AUDJAX_TEST_DIE_IN_SAVE" in os.environ:
        _die_in_save(os.environ["AUDJAX_TEST_DIE_IN_SAVE"])
    if "AUDJAX_TEST_SLOW_SAVE" in os.environ:
        _slow_save(float(os.environ["AUDJAX_TEST_SLOW_SAVE"]))
    sys.argv[0] = "experiments/run.py"
    runpy.run_module("experiments.run", run_name="__main__", alter_sys=True)
