"""`audjax bench` runs and reports its numbers (its timings are not checked here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from audjax.tools import malloc as hostmem

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args):
    return subprocess.run([sys.executable, "-m", "audjax", "bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_bench_runs_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    r = _bench("--phase=pretrain", "--crop=64", "--width=0.125", "--batch=2", "--steps=2",
               "--matmul=256", "--workers=0", "--pipeline_steps=2", f"--json={out}")
    assert r.returncode == 0, r.stderr
    assert "pairs/s" in r.stdout and "step / matmul =" in r.stdout and "pipeline" in r.stdout
    figures = json.loads(out.read_text())
    assert len(figures["step_s_each"]) == 2
    assert figures["pairs_per_s"] == 2 / figures["step_s"]  # pretrain: one image a "pair"
    assert figures["fraction_of_matmul"] > 0 and figures["pipeline_over_step"] > 0
    assert figures["config"]["compute_dtype"] == "float32"
    assert "torch_pairs_per_s" not in figures
    if hostmem.needs_restart():  # the command restarted itself with huge pages
        assert figures["machine"]["huge_pages"] == f"on ({hostmem.HUGE_PAGES})"
    # freed memory is kept only when PyTorch's step runs in the same process (--compare=torch)
    assert figures["machine"]["freed_memory"] == "returned to the kernel"


def test_compare_with_torch_needs_adld_shapes():
    r = _bench("--compare=torch", "--width=0.25", "--crop=64")
    assert r.returncode != 0
    assert ("--compare=torch needs --width=1.0" in r.stderr
            or "--compare=torch needs PyTorch" in r.stderr)
    # --compare=torch turns the malloc settings on for itself, and says so
    if hostmem.tunables(keep_freed=True) and "GLIBC_TUNABLES" not in os.environ:
        assert "restarted this command once with GLIBC_TUNABLES=" in r.stdout
        assert '(docs/performance.md "Malloc settings (opt-in)")' in r.stdout
