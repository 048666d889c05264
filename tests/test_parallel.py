"""Data parallelism on the 4 virtual CPU devices of conftest.py: the steps and the evaluation on
several devices compute what one device computes (docs/design.md §3's batch statistics included)."""

import cv2
import jax
import numpy as np
import optax
import pytest

from audjax import parallel, steps
from audjax import state as state_lib
from audjax.config import Config
from audjax.data.lists import Lists
from audjax.evaluate import Evaluator
from tests.tiny_joint import batch as random_batch

K = 6
CONFIG = Config(crop=64, width=0.25, batch_size=8, pretrain_batch_size=8, model="C")


def mesh_of(n):
    return parallel.make_mesh(CONFIG.replace(mesh_data=n))


def assert_leaves_close(got, want, rtol, atol, what):
    """Each leaf of `got` against the same leaf of `want`, named by its path on failure."""
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want),
                            strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol,
                                   err_msg=f"{what}{jax.tree_util.keystr(path)}")


def largest(tree) -> float:
    return max(float(np.max(np.abs(x))) for x in jax.tree.leaves(tree))


def assert_trees_close(got, want, what):
    """float32 agreement, leaf by leaf: a sum over a batch split over devices adds up in another
    order than on one device, an error of about 1e-6 of the sum's terms. The absolute tolerance
    is relative to the largest value of the whole tree, because a gradient that is zero up to
    rounding (of a conv bias before batch norm) is that rounding error alone."""
    assert_leaves_close(got, want, 1e-4, 1e-5 * largest(want), what)


LR, EPS, B1, B2 = 1e-3, 0.1, 0.9, 0.999
# Gradients on 4 devices sum their batch in another order than on one, a rounding of about 1e-7
# of the terms. Two things amplify it, so agreement is measured against each network's largest
# gradient: terms of that size that cancel (the adversarial terms weigh 400), and batch norm over
# a channel whose batch variance is near zero at init, which divides the rounding of its mean by
# sqrt(var + eps); and the L1 reconstruction terms, whose gradients sum the signs of residuals
# that are zero up to rounding. With JAX_DISABLE_MOST_OPTIMIZATIONS (conftest.py) E_l's gradient
# moved by up to 1e-2 of its largest on one host. Batch norm with per-device statistics moves
# E_f's gradient by about its largest value and those of E_l, E_au and the landmark head by 0.07-0.2
# of theirs, so the test still sees it.
GRAD_TOL = 2e-2


def assert_first_step_agrees(four, one):
    """After one Adam step, mu = (1 - b1) g and nu = (1 - b2) g^2 hold each network's gradient.
    Each update lr * g / (|g| + eps) moves by at most lr / eps per unit change of g, so the new
    weights agree to lr / eps times the gradients' tolerance."""
    for group, (adam, *_) in one.opt_state.items():
        adam4 = four.opt_state[group][0]
        for net in adam.mu:
            g, g4 = (jax.tree.map(lambda m: np.asarray(m) / (1 - B1), a.mu[net])
                     for a in (adam, adam4))
            scale = largest(g)
            tol = GRAD_TOL * scale
            assert_leaves_close(g4, g, 1e-4, tol, f"gradient {net}")
            assert_leaves_close(adam4.nu[net], adam.nu[net], 1e-4, (1 - B2) * 2 * tol * scale,
                                f"nu {net}")
            assert_leaves_close(four.params[net], one.params[net], 1e-5, LR / EPS * tol + 1e-7,
                                f"params {net}")


@pytest.mark.parametrize("phase", ["pretrain", "joint"])
def test_step_on_4_devices_matches_1_device(phase):
    """Gradients, optimizer states, updated weights and batch statistics agree. Batch norm on 4
    devices with per-device statistics would normalise each quarter batch by its own variance
    and give other gradients and other running variances, so this also checks the statistics
    are global."""
    config = CONFIG
    nets = state_lib.build_networks(config, K)
    names = state_lib.network_names(config, phase)
    # Adam's first step moves a weight by about +-lr whatever the size of its gradient, so a
    # weight whose gradient is zero up to rounding (a conv bias before batch norm) would move by
    # +-lr at random on either side. A large eps makes the update a smooth function of the
    # gradient (lr * g / 0.1 for small g); the optimizer states are still Adam's.
    txs = {group: optax.adam(LR, b1=B1, b2=B2, eps=EPS)
           for group in state_lib.make_optimizers(config, names, 10, phase)}
    state = state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(0))
    batch = random_batch(1, b=8)
    if phase == "pretrain":
        batch = batch["source"]
    weights = np.linspace(0.5, 2.0, K).astype(np.float32)

    host = jax.device_get(state)
    one, m1 = steps.make_train_step(config, phase, nets, txs, weights)(
        jax.device_put(host), batch)

    mesh = mesh_of(4)
    step4 = steps.make_train_step(config, phase, nets, txs, weights, mesh)
    global_batch = parallel.global_batch(mesh, batch)
    image = jax.tree.leaves(global_batch)[0]
    assert [s.data.shape[0] for s in image.addressable_shards] == [2, 2, 2, 2]
    four, m4 = step4(parallel.replicate(mesh, host), global_batch)
    assert len(jax.tree.leaves(four)[0].sharding.device_set) == 4

    assert int(four.step) == int(one.step) == 1
    one, four = jax.device_get((one, four))
    assert_first_step_agrees(four, one)
    assert_trees_close(four.batch_stats, one.batch_stats, "batch_stats")
    assert set(m4) == set(m1)
    for k in m1:
        np.testing.assert_allclose(float(m4[k]), float(m1[k]), rtol=1e-4, err_msg=k)
    # The step did move the statistics and the weights (a no-op would also "agree").
    assert not np.allclose(jax.tree.leaves(four.batch_stats)[0],
                           jax.tree.leaves(host.batch_stats)[0])
    for net in four.params:
        assert not all(np.allclose(a, b) for a, b in zip(
            jax.tree.leaves(four.params[net]), jax.tree.leaves(host.params[net]), strict=True)), net


def test_batch_sizes_must_split_over_the_devices():
    with pytest.raises(ValueError, match=r"--batch_size=6 does not split over the 4 devices.*"
                                         r"--mesh_data=0"):
        parallel.check_batch_sizes(CONFIG.replace(batch_size=6), mesh_of(0))
    with pytest.raises(ValueError, match=r"--pretrain_batch_size=5 .* 2 devices"):
        parallel.check_batch_sizes(CONFIG.replace(phase="all", pretrain_batch_size=5,
                                                  mesh_data=2), mesh_of(2))
    parallel.check_batch_sizes(CONFIG.replace(batch_size=6, mesh_data=2), mesh_of(2))
    with pytest.raises(ValueError, match="--mesh_data=8: there are only 4 devices"):
        mesh_of(8)
    assert mesh_of(0).size == 4 and mesh_of(3).size == 3
    for bad, flag in (({"mesh_data": -1}, "--mesh_data=-1"),
                      ({"num_processes": 2}, "--coordinator_address"),
                      ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"},
                       "--process_id=2"),
                      ({"coordinator_address": "no-port"}, "HOST:PORT")):
        with pytest.raises(ValueError, match=flag):
            CONFIG.replace(**bad).validate()


def test_evaluation_on_4_devices_matches_1_device(tmp_path):
    """10 images in batches of 6, rounded up to 8 on 4 devices: the same predictions, in list
    order, padding rows dropped."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        paths.append(f"{i}.png")
        cv2.imwrite(str(tmp_path / paths[-1]), rng.integers(0, 256, (70, 68, 3), np.uint8))
    lists = Lists(paths=tuple(paths), landmarks=rng.uniform(10, 60, (10, 49, 2)).astype(
        np.float32), au=rng.integers(0, 2, (10, K)).astype(np.int32), weights=None,
                  prefix=str(tmp_path / "list"))
    config = CONFIG.replace(eval_batch_size=6)
    nets = state_lib.build_networks(config, K)
    names = ("E_f", "E_l", "G_b", "G_st", "E_au", "landmark")  # what prediction needs
    params, bs = state_lib.init_variables(config, nets, names, jax.random.PRNGKey(1))

    want = Evaluator(config, nets, names).predict(params, bs, lists, tmp_path, "target")
    mesh = mesh_of(4)
    evaluator = Evaluator(config, nets, names, mesh)
    assert evaluator.batch_size == 8
    params4, bs4 = parallel.replicate(mesh, (params, bs))
    got = evaluator.predict(params4, bs4, lists, tmp_path, "target")
    assert set(got) == set(want) == {"au", "probs", "landmarks", "target_landmarks", "skipped"}
    assert got.pop("skipped") == want.pop("skipped") == []
    for k in want:
        assert got[k].shape[0] == 10
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
