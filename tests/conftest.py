"""Test setup: several virtual CPU devices, fast compiles, absl flags parsed for grain workers,
and one tiny SynthAU shared by the tests that train."""

import os
import shutil
import tempfile
from pathlib import Path

# Before jax is imported anywhere: four host devices let the tests exercise data parallelism.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# Many tests build the same step afresh (a new jit each time) and the runs in subprocesses compile
# it again: one on-disk compilation cache for the session, its subprocesses included, compiles
# each program once. A fresh directory per session, so nothing outlives it; pytest-xdist's
# workers inherit the one the main process made (and leave its removal to it).
_MADE_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _MADE_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="audjax-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# Tests compile many tiny programs once each; optimisation time would dominate their run time
# (here and in the runs they start in subprocesses).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

# grain's worker processes read an absl flag; under pytest nobody parses flags.
flags.FLAGS.mark_as_parsed()


# Each pytest-xdist worker takes whole groups of tests (`pytest_xdist_make_scheduler`), in the
# order collected. A group is a file, kept together for its module fixtures, or files whose tests
# compile or build the same things, which one worker then does once: test_precision runs
# tests/tiny_joint.py's steps, as test_steps does; test_multihost's one-process reference is the
# step of test_train's model-A runs; test_detector and test_inspect open the `tiny_runs`.
SHARED = {"test_precision": "test_steps", "test_multihost": "test_train",
          "test_inspect": "test_detector"}
# The longest groups first, so that neither worker is left with one of them at the end
# (docs/performance.md, "The test suite"); the rest follow in collection order.
LONGEST_FIRST = ("test_train", "test_steps", "test_reliability", "test_parallel", "test_adld_step",
                 "test_detector", "test_models", "test_checkpoints", "test_cpu_conv")


def _group(nodeid: str) -> str:
    stem = Path(nodeid.split("::")[0]).stem
    return SHARED.get(stem, stem)


def pytest_collection_modifyitems(config, items):
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without xdist, never called
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """pytest-xdist's scheduling by scope, the scope of a test being its group; with
        --no-loadscope-reorder (pyproject.toml) the groups go out in collection order."""

        def _split_scope(self, nodeid):
            return _group(nodeid)

    return GroupScheduling(config, log)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny SynthAU (72x72 images; 32 training images per domain, 16 per evaluation set),
    made once per test session. Tests that damage data copy it first."""
    from audjax.data import synth

    out = tmp_path_factory.mktemp("synthau")
    sizes = {"source_train": 32, "target_train": 32, "source_val": 16, "source_test": 16,
             "target_val": 16, "target_test": 16}
    synth.generate(out, sizes=sizes, image_size=72, seed=0, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Run directories with freshly initialised checkpoints of the kinds a user opens (crop 64,
    width 0.25, aligned size 80): "pretrain" (the landmark net), "joint" (model C), "A" and
    "source_only" (joint phase). Each has best/5 (the first two also checkpoints/3 and
    checkpoints/5), a config.json, metrics.jsonl records and, in the joint phase, a
    results.json, as training leaves them."""
    import json

    import numpy as np

    from audjax import checkpoints
    from audjax import state as state_lib
    from audjax.config import Config

    root = tmp_path_factory.mktemp("runs")
    config = Config(crop=64, width=0.25, aligned_size=80)
    # Initialising every network once, jitted, is much faster than per run and eagerly. The
    # landmark net is parts 1-2 (E_f's class) and the head (the landmark head's class).
    nets = state_lib.build_networks(config, len(config.au_names))
    params, batch_stats = jax.jit(lambda key: state_lib.init_variables(
        config, nets, state_lib.network_names(config, "joint"), key))(jax.random.PRNGKey(1))
    params["landmark_net"] = {"parts12": params["E_f"], "head": params["landmark"]}
    batch_stats["landmark_net"] = {"parts12": batch_stats["E_f"],
                                   "head": batch_stats["landmark"]}
    runs = {}
    for name, phase, model in (("pretrain", "pretrain", "C"), ("joint", "joint", "C"),
                               ("A", "joint", "A"), ("source_only", "joint", "source_only")):
        run_config = config.replace(phase=phase, model=model)
        names = state_lib.network_names(run_config, phase)
        txs = state_lib.make_optimizers(run_config, names, 10, phase)
        state = state_lib.TrainState(
            step=jnp.zeros((), jnp.int32), params={n: params[n] for n in names},
            batch_stats={n: batch_stats[n] for n in names if n in batch_stats}, opt_state={})
        # Adam starts from zeros (moments and count): its shapes are all that is needed.
        opt_state = jax.eval_shape(lambda s, txs=txs: state_lib.fresh_optimizer_state(
            s.params, s.batch_stats, txs).opt_state, state)
        state = state.replace(opt_state=jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                                                     opt_state))
        run = root / name
        ck = checkpoints.RunCheckpoints(run, keep=2, higher_is_better=phase != "pretrain")
        for step in (3, 5) if name in ("pretrain", "joint") else ():
            ck.save_latest(state.replace(step=jnp.asarray(step, jnp.int32)), {},
                           run_config.to_json(), {"step": step})
        val = ({"nme": 7.5, "failure_rate": 10.0, "selection": 7.5} if phase == "pretrain" else
               {"target_val_mean_f1": 31.0, "target_val_mean_acc": 70.0, "selection": 31.0})
        ck.save_best(state.replace(step=jnp.asarray(5, jnp.int32)), run_config.to_json(), val)
        ck.close()
        (run / "config.json").write_text(run_config.to_json())
        train = ({"loss_fl": 0.2, "nme": 0.08} if phase == "pretrain" else
                 {"loss_au": 0.6, "loss_l": 3.0, "loss_c": 1.5, "loss_adl": 0.01,
                  "loss_adf": 1.0, "loss_fl": 0.1, "loss_total": 150.0, "loss_d": 0.02,
                  "d_landmark": 0.01, "d_domain": 0.01})
        records = [{"phase": phase, "split": "train", "step": s, "epoch": s / 5,
                    **{k: v / s for k, v in train.items()}} for s in (1, 2, 3, 4, 5)]
        records += [{"phase": phase, "split": "val", "step": s, "epoch": s / 5, **val}
                    for s in (3, 5)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if phase == "joint":
            f1 = dict(zip(run_config.au_names, (40.0, 35.0, 20.0, 60.0, 70.0, 25.0),
                          strict=True))
            (run / "results.json").write_text(json.dumps({"target_test": {"f1": f1}}))
        runs[name] = run
    return runs


def pytest_sessionfinish(session, exitstatus):
    if _MADE_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
