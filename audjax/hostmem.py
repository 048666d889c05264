"""Transparent huge pages for the buffers of XLA:CPU's compiled steps (Linux with glibc).

XLA:CPU takes every buffer of a compiled step (activations, gradients, im2col and Winograd
tiles) fresh from malloc, which hands large blocks out as new memory maps: the kernel then
faults each 4 KiB page in, every step. At the paper's size a joint step writes gigabytes this way,
and on the 2-core development machine writing a fresh 254 MB buffer took 110 ms against 15 ms
for the same write into a reused one. glibc's `glibc.malloc.hugetlb=1` tunable (glibc 2.35+)
makes malloc ask for transparent huge pages on those maps (`madvise(MADV_HUGEPAGE)`): 2 MiB per
fault, 530 faults instead of 62,000 for that buffer (28 ms).

A tunable is read when the process starts, so `use_huge_pages` restarts the command (same
interpreter, arguments and environment, plus the tunable) once, before any work. It does
nothing where it cannot help: not Linux/glibc, glibc older than 2.35, the kernel's transparent
huge pages `never` (or `always`, which needs no advice), the tunable already set, or
`AUDJAX_HUGE_PAGES=0` in the environment.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
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


def needs_restart(environ=None) -> bool:
    """Whether restarting with `TUNABLE` would give this process huge pages it lacks."""
    environ = os.environ if environ is None else environ
    if environ.get("AUDJAX_HUGE_PAGES") == "0" or TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return False
    version = _glibc_version()
    return version is not None and version >= (2, 35) and _thp_mode() == "madvise"


def environment_with_huge_pages(environ=None) -> dict:
    """A copy of the environment with `TUNABLE` added to any tunables already set."""
    env = dict(os.environ if environ is None else environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), TUNABLE) if t)
    return env


def use_huge_pages() -> None:
    """Restart this command with huge pages if `needs_restart`; call it first thing in a
    command-line entry point (it replaces the process, so nothing before it is kept)."""
    if needs_restart():
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environment_with_huge_pages())


def describe(environ=None) -> str:
    """Whether this process's large buffers get huge pages, in words (for benchmark records)."""
    environ = os.environ if environ is None else environ
    mode = _thp_mode()
    if mode == "always":
        return "on (kernel: always)"
    if mode == "madvise" and TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return f"on ({TUNABLE})"
    return f"off (kernel: {mode or 'unknown'})"
