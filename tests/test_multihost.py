"""Two processes on localhost (CPU collectives over gloo) train as one process does.

Each of two processes, with two CPU devices each, calls `train_and_evaluate` twice with the
multi-host flags: two joint steps, then a run resumed from that checkpoint to step four (Orbax
restores the state onto the 4-device mesh, each process its own grain iterators). One process
reading every batch whole runs the same four steps here. Each of the two processes read only its
half of each batch, so they see the same images only if the data split works.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from audjax import parallel, preflight
from audjax.config import Config
from audjax.data import synth
from audjax.train import load_data, train_phase

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("source_train", "source_val", "source_test", "target_train", "target_val",
          "target_test")

# One process of the two: the same calls as `python -m experiments.run --max_steps=2 ...` and
# then `... --max_steps=4`, without starting Python and JAX twice.
WORKER = """
import json, sys
from audjax.config import Config
from audjax.train import train_and_evaluate
settings, workdir = json.loads(sys.argv[1]), sys.argv[2]
for max_steps in (2, 4):
    train_and_evaluate(Config(**settings, max_steps=max_steps), workdir)
"""


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthau")
    sizes = {"source_train": 32, "target_train": 32, "source_val": 8, "source_test": 8,
             "target_val": 8, "target_test": 8}
    synth.generate(out, sizes=sizes, image_size=72, seed=0, workers=1, progress=False)
    return out


def settings(root):
    """The run (both processes and the reference): model A, two steps an epoch, two epochs."""
    return dict(data_root=str(root), **{s: f"list/{s}" for s in SPLITS}, phase="joint",
                model="A", crop=64, width=0.25, batch_size=8, epochs=2, steps_per_epoch=2,
                workers=0, eval_batch_size=8, log_every=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(root, workdir, cache):
    """Run WORKER in processes 0 and 1; returns their output."""
    port = free_port()
    # Two CPU devices a process; fast compiles as in conftest.py, and compiled programs kept on
    # disk, so that the resumed run does not compile the step again.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "true",
           "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    procs, logs = [], [workdir.parent / f"process{i}.log" for i in range(2)]
    for i, log in enumerate(logs):
        flags = {**settings(root), "coordinator_address": f"127.0.0.1:{port}",
                 "num_processes": 2, "process_id": i}
        with open(log, "w") as out:  # a file, not a pipe that could fill up and block a process
            procs.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, json.dumps(flags), str(workdir)], cwd=ROOT,
                env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        for p in procs:
            p.wait(timeout=400)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outputs = [log.read_text() for log in logs]
    for i, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"process {i} failed ({p.returncode}):\n{out[-4000:]}"
    return outputs


def latest_state(run):
    """The latest checkpoint's state as host arrays, whatever devices wrote it (Orbax needs the
    target's shardings when they differ, here devices of another process)."""
    step_dir = sorted((run / "checkpoints").iterdir(), key=lambda p: int(p.name))[-1]
    ckptr = ocp.StandardCheckpointer()
    path = (step_dir / "state").absolute()
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                          ckptr.metadata(path).item_metadata.tree)
    return int(step_dir.name), jax.device_get(ckptr.restore(path, target))


def test_two_processes_train_like_one(synth_root, tmp_path):
    run = tmp_path / "two"
    outputs = launch_two_processes(synth_root, run, cache=tmp_path / "cache")
    assert "on 4 device(s)" in outputs[0] and "[joint] step 4/4" in outputs[0]
    assert "[joint] step" not in outputs[1]  # process 0 alone prints progress
    assert all("[joint] resumed from" in out and "at step 2" in out for out in outputs)
    for step in (2, 4):  # every process saved its own position in each stream
        for stream in ("source_iter", "target_iter"):
            files = sorted(p.name for p in (run / f"checkpoints/{step}/{stream}").glob("*.json"))
            assert files == ["process_0-of-2.json", "process_1-of-2.json"]

    # The reference: one process reads every batch whole (no final evaluation, to save time).
    config = Config(**settings(synth_root), mesh_data=1)
    train_phase(preflight.PhasePlan(config, "joint", tmp_path / "one"),
                load_data(config, SPLITS), parallel.make_mesh(config))

    # Records come from process 0 alone, one line a step. The losses of every step are those of
    # one process up to float32 rounding, so each step saw the same images, resumed or not. The
    # rounding grows with the steps as the weights drift apart (by as much as the tolerance on
    # the weights below allows), hence 1e-4; another image in a batch moves a loss by far more.
    records = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()
                if '"train"' in x] for r in (run, tmp_path / "one")]
    assert [x["step"] for x in records[0]] == [x["step"] for x in records[1]] == [1, 2, 3, 4]
    for a, b in zip(*records, strict=True):
        for k in ("loss_total", "loss_au", "loss_l", "loss_cyc", "loss_adl", "loss_d"):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, err_msg=f"step {a['step']} {k}")

    (step_two, two), (step_one, one) = latest_state(run), latest_state(tmp_path / "one")
    assert step_two == step_one == 4
    # The weights: sums over devices and processes add up in another order. Adam turns a
    # gradient that is zero up to that rounding (a conv bias before a norm) into +-lr a step,
    # and batch norm's running mean follows such a bias; hence 2 lr a step.
    for col in ("params", "batch_stats"):
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(two[col]),
                                jax.tree.leaves(one[col]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=4 * 2 * 1e-4,
                                       err_msg=f"{col}{jax.tree_util.keystr(path)}")
    assert json.loads((run / "results.json").read_text())["target_test"]["count"]
