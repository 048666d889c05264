"""What can go wrong while training, and what the trainer does about it (`audjax.train`).

- `BadImages`: images the pipeline had to skip (`audjax.data.pipeline`), warned about once,
  counted, and limited by --max_bad_images.
- `Health`: the host's side of `steps.guard_nonfinite`: non-finite steps, limited by
  --skip_nonfinite.
- `StopSignals`: SIGTERM and SIGINT finish the step, save and stop; a second one stops at once.
"""

import multiprocessing
import os
import signal
import sys
import threading

import jax
import numpy as np

from audjax.config import Config
from audjax.data import images
from audjax.data.lists import Lists, check_command, list_file
from audjax.errors import InputError, NonFiniteError


class BadImages:
    """Training images that could not be used, as the batches report them (`bad`,
    `bad_index`, popped here so that the jitted step never sees them). Each is warned about
    once; more than `limit` stop the run. `state()` goes into each checkpoint, so a resumed run
    counts on from where it was."""

    def __init__(self, lists: dict[str, Lists], root: str, crop: int, limit: int):
        self.lists, self.root, self.crop, self.limit = lists, root, crop, limit
        self.seen = {name: set() for name in lists}

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.seen.values())

    def state(self) -> dict:
        return {name: sorted(s) for name, s in self.seen.items()}

    def restore(self, saved: dict):
        for name, indices in saved.items():
            if name in self.seen:
                self.seen[name].update(indices)

    def take(self, name: str, batch: dict, step: int):
        """Pop the batch's report of skipped images; warn about new ones; stop past the limit."""
        skipped, first = batch.pop("bad"), batch.pop("bad_index")
        if not skipped.any():
            return
        lists = self.lists[name]
        for row in np.flatnonzero(skipped):
            for k in range(int(skipped[row])):
                i = (int(first[row]) + k) % len(lists)
                if i in self.seen[name]:
                    continue
                self.seen[name].add(i)
                if self.total > self.limit:
                    raise InputError(
                        f"{self.total} training images cannot be used, more than "
                        f"--max_bad_images={self.limit} (the last: {self._describe(lists, i)}); "
                        f"check the list with {check_command(lists.prefix, self.root, self.crop)}")
                print(f"warning: step {step}: skipped {self._describe(lists, i)}, replaced by "
                      f"the next usable image ({self.total} so far; the run stops past "
                      f"--max_bad_images={self.limit})", file=sys.stderr, flush=True)

    def _describe(self, lists: Lists, i: int) -> str:
        path = os.path.join(self.root, lists.paths[i])
        why = images.read_sample(path, lists.landmarks[i], self.crop)[1] or "unusable"
        return f"{path} ({why}; {list_file(lists.prefix, 'path')}:{i + 1})"


class Health:
    """The host's side of `steps.guard_nonfinite`: reads the device's record of rejected steps
    (with the metrics, and before every save), warns about each new one, and stops the run when
    there are more than --skip_nonfinite."""

    def __init__(self, config: Config, ckpts, state):
        self.limit, self.ckpts = config.skip_nonfinite, ckpts
        # Steps rejected before a resumed run's checkpoint were reported by the run that saved it.
        self.reported = int(state.health["nonfinite_steps"])

    def check(self, state, metric_names, health=None) -> int:
        """Returns the number of rejected steps; raises NonFiniteError past the limit."""
        h = jax.device_get(state.health) if health is None else health
        count = int(h["nonfinite_steps"])
        if count <= self.reported:
            return count
        self.reported = count
        terms = _bit_names(sorted(metric_names), int(h["bad_terms"]))
        nets = _bit_names(sorted(state.params), int(h["bad_nets"]))
        what = (f"step {int(h['last_bad_step'])}: non-finite {', '.join(terms) or 'no loss term'}"
                f"; non-finite update of {', '.join(nets) or 'no network'}")
        if count <= self.limit:
            print(f"warning: {what}; the step was skipped ({count} of --skip_nonfinite="
                  f"{self.limit})", file=sys.stderr, flush=True)
            return count
        latest = self.ckpts.latest.latest_step()
        saved = (f"the latest checkpoint is {self.ckpts.latest.directory / str(latest)}"
                 if latest is not None else "no checkpoint was saved")
        raise NonFiniteError(f"{what} ({count} non-finite step(s), more than --skip_nonfinite="
                             f"{self.limit}); nothing saved after it, {saved}. Lower the "
                             "learning rates, or look at that step's data")


def _bit_names(names: list[str], mask: int) -> list[str]:
    return [n for i, n in enumerate(names) if mask >> i & 1]


class StopSignals:
    """While training, SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) ask the loop
    to finish its step, save and stop (`received` is then the signal's name); a second one ends
    the process at once with status 128 + signal number, without saving (Orbax never reads a
    half-written save). Handlers can only be set in the main thread; elsewhere this does
    nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        # os.write, not print: the handler may interrupt a print in progress.
        if self.received is not None:
            os.write(2, f"{name} again: stopping now, without saving\n".encode())
            for child in multiprocessing.active_children():  # data workers ignore signals
                child.kill()
            os._exit(128 + signum)
        self.received = name
        os.write(2, f"{name}: finishing this step, then saving a checkpoint and stopping "
                    f"(send it again to stop at once)\n".encode())
