"""The restart with tuned malloc settings (audjax.tools.malloc)."""

import os
import subprocess
import sys

import pytest

from audjax.tools import malloc as hostmem

HUGE, KEEP = hostmem.HUGE_PAGES, hostmem.KEEP_FREED
ON = {"AUDJAX_TUNE_MALLOC": "1"}  # the opt-in


@pytest.fixture
def glibc_236_madvise(monkeypatch):
    monkeypatch.setattr(hostmem, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "madvise")


def test_asks_for_what_glibc_and_the_kernel_support(glibc_236_madvise, monkeypatch):
    assert hostmem.missing(ON) == [HUGE]
    assert hostmem.missing(ON, keep_freed=True) == [*KEEP, HUGE]
    for mode in ("always", "never", None):  # huge pages need no advice, or cannot be had
        monkeypatch.setattr(hostmem, "_thp_mode", lambda mode=mode: mode)
        assert hostmem.missing(ON) == []
        assert hostmem.missing(ON, keep_freed=True) == list(KEEP)
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "madvise")
    monkeypatch.setattr(hostmem, "_glibc_version", lambda: (2, 34))  # no hugetlb tunable
    assert hostmem.missing(ON, keep_freed=True) == list(KEEP)
    for version in ((2, 25), None):  # no tunables at all, or not glibc
        monkeypatch.setattr(hostmem, "_glibc_version", lambda version=version: version)
        assert hostmem.missing(ON, keep_freed=True) == []
        assert not hostmem.needs_restart(ON, keep_freed=True)


def test_restarts_only_for_tunables_not_yet_set(glibc_236_madvise):
    assert hostmem.needs_restart(ON)
    assert not hostmem.needs_restart({**ON, "GLIBC_TUNABLES": HUGE})
    assert hostmem.needs_restart({**ON, "GLIBC_TUNABLES": HUGE}, keep_freed=True)
    assert not hostmem.needs_restart({**ON, "GLIBC_TUNABLES": ":".join((*KEEP, HUGE))},
                                     keep_freed=True)
    for off in ({}, {"AUDJAX_TUNE_MALLOC": "0"}):  # opt-in: unset or 0 restarts nothing
        assert not hostmem.needs_restart(off, keep_freed=True)
        assert hostmem.needs_restart(off, keep_freed=True, force=True)
    # a tunable the user set keeps the user's value, whatever it is
    mine = "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=0"
    assert hostmem.missing({**ON, "GLIBC_TUNABLES": mine}, keep_freed=True) == list(KEEP[:2])
    assert not hostmem.needs_restart({**ON, "GLIBC_TUNABLES": mine})


def test_keeps_the_tunables_already_set(glibc_236_madvise):
    mine = {**ON, "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0", "HOME": "/h"}
    env = hostmem.tuned_environment(mine, keep_freed=True)
    assert env == {**ON, "GLIBC_TUNABLES": ":".join(("glibc.malloc.tcache_count=0", *KEEP, HUGE)),
                   "HOME": "/h", hostmem.RESTARTED: ":".join((*KEEP, HUGE))}
    assert hostmem.tuned_environment(ON)["GLIBC_TUNABLES"] == HUGE
    assert not hostmem.needs_restart(env, keep_freed=True)
    assert hostmem.restart_note(env) == (
        f"restarted this command once with GLIBC_TUNABLES={env['GLIBC_TUNABLES']} "
        '(docs/performance.md "Malloc settings (opt-in)")')
    assert hostmem.restart_note(mine) is None


@pytest.mark.parametrize("keep_freed", [False, True])
@pytest.mark.parametrize("switch", [None, "0", "1"])
def test_the_restarted_command_has_the_tunables_and_its_arguments(keep_freed, switch):
    """A real restart: with AUDJAX_TUNE_MALLOC=1 the child runs the same command line again, now
    with the tunables (those this machine's glibc and kernel call for; where none, it runs once,
    unchanged); unset or 0, it runs once."""
    code = ("import os, sys; from audjax.tools import malloc as hostmem; print('run', flush=True); "
            f"hostmem.tune_malloc(keep_freed={keep_freed}); "
            "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES",
                                                            "AUDJAX_TUNE_MALLOC")}
    if switch is not None:
        env["AUDJAX_TUNE_MALLOC"] = switch
    restart = hostmem.needs_restart(env, keep_freed)
    assert restart == (switch == "1" and bool(hostmem.tunables(keep_freed)))
    out = subprocess.run([sys.executable, "-c", code, "a", "--b=1"], env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    want_tunables = ":".join(hostmem.tunables(keep_freed)) if restart else None
    assert out == ["run"] * (2 if restart else 1) + [f"{want_tunables} ['a', '--b=1']"]


def test_kept_memory_is_reused_without_faults():
    """What the tunables are for, in a child process: 8 buffers of 64 MB, freed and taken
    again, fault their pages in the first time only; without the tunables glibc unmaps them on
    free and every round faults them in again."""
    if hostmem._glibc_version() is None or hostmem._glibc_version() < (2, 26):
        pytest.skip("needs glibc tunables")
    code = """
import resource
import numpy as np
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds = []
for _ in range(3):
    before = faults()
    blocks = [np.ones(2**24, np.float32) for _ in range(8)]  # 8 x 64 MB, written
    del blocks
    rounds.append(faults() - before)
print(*rounds)
"""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}

    def rounds(tunables):
        run_env = {**env, "GLIBC_TUNABLES": tunables} if tunables else env
        out = subprocess.run([sys.executable, "-c", code], env=run_env, check=True,
                             capture_output=True, text=True).stdout
        return [int(n) for n in out.split()]

    kept, plain = rounds(":".join(KEEP)), rounds("")
    # (numpy asks for huge pages for large arrays itself, so a round faults 2 MiB or 4 KiB pages)
    assert kept[0] > 100 and max(kept[1:]) < kept[0] // 10, kept
    assert plain[0] > 100 and min(plain[1:]) > plain[0] // 2, plain


def test_describe_says_what_the_process_has(monkeypatch):
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "madvise")
    assert hostmem.describe({}) == {"huge_pages": "off (kernel: madvise)",
                                    "freed_memory": "returned to the kernel"}
    tuned = {"GLIBC_TUNABLES": ":".join((*KEEP, HUGE))}
    assert hostmem.describe(tuned) == {"huge_pages": f"on ({HUGE})",
                                       "freed_memory": f"kept ({', '.join(KEEP)})"}
    partial = {"GLIBC_TUNABLES": KEEP[0]}
    assert hostmem.describe(partial)["freed_memory"] == "returned to the kernel"
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "always")
    assert hostmem.describe({})["huge_pages"] == "on (kernel: always)"
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: None)
    assert hostmem.describe(tuned)["huge_pages"] == "off (kernel: unknown)"
