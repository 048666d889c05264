"""The restart with transparent huge pages (audjax.hostmem)."""

import os
import subprocess
import sys

import pytest

from audjax import hostmem


@pytest.fixture
def huge_pages_would_help(monkeypatch):
    monkeypatch.setattr(hostmem, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "madvise")


def test_restarts_only_where_the_tunable_helps(huge_pages_would_help, monkeypatch):
    assert hostmem.needs_restart({})
    assert hostmem.needs_restart({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert not hostmem.needs_restart({"GLIBC_TUNABLES": hostmem.TUNABLE})
    assert not hostmem.needs_restart({"AUDJAX_HUGE_PAGES": "0"})
    for mode in ("always", "never", None):
        monkeypatch.setattr(hostmem, "_thp_mode", lambda mode=mode: mode)
        assert not hostmem.needs_restart({})
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "madvise")
    for version in ((2, 34), None):
        monkeypatch.setattr(hostmem, "_glibc_version", lambda version=version: version)
        assert not hostmem.needs_restart({})


def test_keeps_the_tunables_already_set():
    env = hostmem.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2",
                                               "HOME": "/h"})
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{hostmem.TUNABLE}", "HOME": "/h"}
    assert hostmem.environment_with_huge_pages({})["GLIBC_TUNABLES"] == hostmem.TUNABLE


def test_the_restarted_command_has_the_tunable_and_its_arguments():
    """A real restart: the child runs the same command line again, now with the tunable (where
    this machine's kernel and glibc call for it; otherwise it runs once, unchanged)."""
    code = ("import os, sys; from audjax import hostmem; print('run', flush=True); "
            "hostmem.use_huge_pages(); print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES",
                                                            "AUDJAX_HUGE_PAGES")}
    restart = hostmem.needs_restart(env)
    out = subprocess.run([sys.executable, "-c", code, "a", "--b=1"], env=env, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    want_tunables = hostmem.TUNABLE if restart else None
    assert out == ["run"] * (2 if restart else 1) + [f"{want_tunables} ['a', '--b=1']"]


def test_describe_says_where_the_huge_pages_come_from(monkeypatch):
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "madvise")
    assert hostmem.describe({}) == "off (kernel: madvise)"
    assert hostmem.describe({"GLIBC_TUNABLES": hostmem.TUNABLE}) == f"on ({hostmem.TUNABLE})"
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: "always")
    assert hostmem.describe({}) == "on (kernel: always)"
    monkeypatch.setattr(hostmem, "_thp_mode", lambda: None)
    assert hostmem.describe({"GLIBC_TUNABLES": hostmem.TUNABLE}) == "off (kernel: unknown)"
