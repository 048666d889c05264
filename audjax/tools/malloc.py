"""How malloc serves the buffers of XLA:CPU's compiled steps (Linux with glibc).

XLA:CPU takes every buffer of a compiled step (activations, gradients, Winograd tiles) from
malloc when the step runs and frees it when the step ends: 4.8 GB a step for the paper-size
joint step. glibc serves blocks that large as fresh memory maps and unmaps them on free, so every
step the kernel maps, zeroes and faults them in again. Two sets of glibc tunables help:

- `HUGE_PAGES` (glibc 2.35+, the kernel's transparent huge pages on `madvise`): those maps in
  2 MiB pages, 512x fewer faults and fewer TLB misses.
- `KEEP_FREED`: `mmap_max=0` serves large blocks from the heap instead of maps, a high
  `trim_threshold` keeps freed memory in the heap instead of returning it to the kernel, and
  `arena_max=1` puts every thread's blocks in that one heap (glibc unmaps the other arenas'
  heaps once they are free). From the second step on, a step reuses the previous step's memory:
  no faults. This matters when another workload churns memory between steps, as PyTorch's step
  does in the side-by-side benchmark: there the kernel work took 9-11 of the 28-30 CPU-seconds
  of a 13-16 s model-A step, and with `KEEP_FREED` 0.1 of 9.5-11 s, the time the step takes in
  training. Training alone gains nothing from it, and its one arena makes threads wait for each
  other's malloc calls: the quick start's joint step took 1.2-1.5x as long with `arena_max=1`.
  So only `audjax bench --compare=torch` asks for it.

Both are opt-in (docs/performance.md "Malloc settings (opt-in)"). A tunable is read when the
process starts, so `tune_malloc` restarts the command (same interpreter, arguments and
environment, plus the tunables) once, before any work, but only with `AUDJAX_TUNE_MALLOC=1` in
the environment or when its caller forces it (`audjax bench --compare=torch`); unset or 0, nothing
restarts. It leaves alone a tunable the environment already sets, and does nothing where glibc is
absent or older than 2.26 (no tunables). The restarted process can tell that it was restarted
(`restart_note`).
"""

import os
import sys

KEEP_FREED = ("glibc.malloc.mmap_max=0", f"glibc.malloc.trim_threshold={2**40}",
              "glibc.malloc.arena_max=1")
HUGE_PAGES = "glibc.malloc.hugetlb=1"
SWITCH = "AUDJAX_TUNE_MALLOC"
# Set in the restarted process to the tunables the restart added.
RESTARTED = "AUDJAX_MALLOC_RESTARTED"
DOC = 'docs/performance.md "Malloc settings (opt-in)"'
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _glibc_version() -> tuple[int, ...] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    return tuple(int(p) for p in version.split(".")[:2]) if name == "glibc" else None


def _thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode: the bracketed word of `_THP_MODE`."""
    try:
        with open(_THP_MODE) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def _name(tunable: str) -> str:
    return tunable.split("=", 1)[0]


def _set(environ) -> dict[str, str]:
    """The tunables `GLIBC_TUNABLES` sets: name -> value."""
    pairs = (t.split("=", 1) for t in environ.get("GLIBC_TUNABLES", "").split(":") if "=" in t)
    return dict(pairs)


def tunables(keep_freed: bool = False) -> tuple[str, ...]:
    """The tunables this machine calls for: `HUGE_PAGES` where glibc is 2.35+ and the kernel
    gives huge pages on request only; with `keep_freed`, `KEEP_FREED` too wherever glibc has
    tunables (2.26+)."""
    version = _glibc_version()
    if version is None or version < (2, 26):
        return ()
    huge = version >= (2, 35) and _thp_mode() == "madvise"
    return (KEEP_FREED if keep_freed else ()) + ((HUGE_PAGES,) if huge else ())


def enabled(environ=None) -> bool:
    """Whether the environment opts in: `AUDJAX_TUNE_MALLOC=1`."""
    environ = os.environ if environ is None else environ
    return environ.get(SWITCH) == "1"


def missing(environ=None, keep_freed: bool = False, force: bool = False) -> list[str]:
    """`tunables()` whose names the environment does not set (a value it sets is kept); none
    unless the environment opts in (`enabled`) or `force`."""
    environ = os.environ if environ is None else environ
    if not (force or enabled(environ)):
        return []
    have = _set(environ)
    return [t for t in tunables(keep_freed) if _name(t) not in have]


def needs_restart(environ=None, keep_freed: bool = False, force: bool = False) -> bool:
    return bool(missing(environ, keep_freed, force))


def tuned_environment(environ=None, keep_freed: bool = False, force: bool = False) -> dict:
    """A copy of the environment with the `missing` tunables added to any already set, and
    `RESTARTED` naming them."""
    env = dict(os.environ if environ is None else environ)
    added = missing(env, keep_freed, force)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), *added) if t)
    env[RESTARTED] = ":".join(added)
    return env


def tune_malloc(keep_freed: bool = False, force: bool = False) -> None:
    """Restart this command with the tunables if `needs_restart` (opted in, or `force`); call it
    first thing in a command-line entry point (it replaces the process, so nothing before it is
    kept)."""
    if needs_restart(keep_freed=keep_freed, force=force):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv,
                  tuned_environment(keep_freed=keep_freed, force=force))


def restart_note(environ=None) -> str | None:
    """A line saying that `tune_malloc` restarted this process, and with what; None if not."""
    environ = os.environ if environ is None else environ
    if not environ.get(RESTARTED):
        return None
    return (f"restarted this command once with GLIBC_TUNABLES={environ.get('GLIBC_TUNABLES')} "
            f"({DOC})")


def describe(environ=None) -> dict[str, str]:
    """This process's malloc settings in words (for benchmark records): whether its large
    buffers get huge pages, and whether freed memory stays in the process."""
    environ = os.environ if environ is None else environ
    have, mode, hugetlb = _set(environ), _thp_mode(), _name(HUGE_PAGES)
    if mode == "always":
        huge = "on (kernel: always)"
    elif mode == "madvise" and have.get(hugetlb) in ("1", "2"):
        huge = f"on ({hugetlb}={have[hugetlb]})"
    else:
        huge = f"off (kernel: {mode or 'unknown'})"
    names = [_name(t) for t in KEEP_FREED]
    kept = [f"{n}={have[n]}" for n in names if n in have]
    freed = f"kept ({', '.join(kept)})" if len(kept) == len(names) else "returned to the kernel"
    return {"huge_pages": huge, "freed_memory": freed}
