"""Checkpoint round trip, the phase-1 -> phase-2 transplant, and reading with Orbax alone."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from audjax import checkpoints
from audjax import state as state_lib
from audjax.config import Config

K = 6
CONFIG = Config(crop=64, width=0.25)


def make_state(phase, seed=0, config=CONFIG):
    nets = state_lib.build_networks(config, K)
    names = state_lib.network_names(config, phase)
    txs = state_lib.make_optimizers(config, names, 10, phase)
    state = state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(seed))
    # Make every leaf distinctive (optimizer moments and batch statistics included).
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [x + jax.random.uniform(k, x.shape).astype(x.dtype) if x.dtype.kind == "f" else x + 7
              for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, leaves)


def test_save_restore_identical(tmp_path):
    state = make_state("joint")
    ck = checkpoints.RunCheckpoints(tmp_path, keep=2, higher_is_better=True)
    ck.save_latest(state, {}, CONFIG.to_json(), {"step": 7})
    ck.close()
    template = make_state("joint", seed=5)
    ck = checkpoints.RunCheckpoints(tmp_path, keep=2, higher_is_better=True)
    restored, metrics = ck.restore_latest(template, {})
    ck.close()
    assert metrics == {"step": 7}
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_best_keeps_the_best_only(tmp_path):
    state = make_state("pretrain")
    ck = checkpoints.RunCheckpoints(tmp_path, keep=2, higher_is_better=False)
    for step, nme in ((1, 9.0), (2, 7.0), (3, 8.0)):
        s = state.replace(step=jnp.asarray(step, jnp.int32))
        if ck.is_better(nme):
            ck.save_best(s, CONFIG.to_json(), {"selection": nme})
    assert ck.best_value() == 7.0
    assert ck.best.all_steps() == [2]
    ck.close()


def test_transplant_copies_exactly_and_orbax_alone_reads_it(tmp_path):
    pre = make_state("pretrain")
    ck = checkpoints.RunCheckpoints(tmp_path / "pretrain", keep=1, higher_is_better=False)
    ck.save_best(pre, CONFIG.replace(phase="pretrain").to_json(), {"selection": 1.0})
    ck.close()
    joint = make_state("joint", seed=3)
    params, bs, copied = checkpoints.transplant(tmp_path / "pretrain", joint.params,
                                                joint.batch_stats)
    # Read the phase-1 checkpoint with Orbax alone and compare leaf by leaf.
    step_dir = checkpoints.resolve_checkpoint(tmp_path / "pretrain")
    raw = ocp.StandardCheckpointer().restore((step_dir / "state").absolute())
    for col, tree in (("params", params), ("batch_stats", bs)):
        for src, dst in (("parts12", "E_f"), ("head", "landmark")):
            want = raw[col]["landmark_net"][src]
            assert jax.tree.structure(want) == jax.tree.structure(tree[dst])
            for a, b in zip(jax.tree.leaves(tree[dst]), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(a, b)
    # Everything else keeps its fresh values.
    for name in ("E_l", "G_b", "G_st", "E_au", "D_l", "D_s", "D_t", "P"):
        for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(joint.params[name]),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    n_leaves = sum(len(jax.tree.leaves(t[n])) for t in (params, bs) for n in ("E_f", "landmark"))
    assert len(copied) == n_leaves
    assert any("params/landmark_net/parts12/conv0/kernel -> params/E_f/conv0/kernel" == c
               for c in copied)


def test_transplant_mismatch_names_the_path(tmp_path):
    pre = make_state("pretrain")
    ck = checkpoints.RunCheckpoints(tmp_path / "pretrain", keep=1, higher_is_better=False)
    ck.save_best(pre, CONFIG.replace(phase="pretrain").to_json(), {"selection": 1.0})
    ck.close()
    wider = make_state("joint", config=CONFIG.replace(width=0.5))
    with pytest.raises(ValueError, match=r"params/landmark_net/parts12/\w+/\w+ has shape"):
        checkpoints.transplant(tmp_path / "pretrain", wider.params, wider.batch_stats)


def test_resolve_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        checkpoints.resolve_checkpoint(tmp_path)
