"""The step benchmark runs and reports its numbers (its timings are not checked here)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_and_reports():
    r = subprocess.run(
        [sys.executable, "-m", "audjax.bench", "--phase=pretrain", "--crop=64", "--width=0.125",
         "--batch=2", "--steps=1", "--matmul=256"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "images/s" in r.stdout and "step / matmul =" in r.stdout
