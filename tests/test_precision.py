"""--compute_dtype=bfloat16: convolutions and matmuls in bf16, everything kept in float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from audjax import state as state_lib
from audjax import steps
from tests.test_steps import CONFIG, K, batch


@functools.cache
def _joint(compute_dtype):
    """(a function giving the initial state, the compiled model-C step, its HLO text); the
    quick start's learning rates."""
    config = CONFIG.replace(model="C", batch_size=4, compute_dtype=compute_dtype, lr_task=1e-3,
                            lr_landmark=1e-3, lr_gen=5e-4, lr_disc=5e-4)
    nets = state_lib.build_networks(config, K)
    names = state_lib.network_names(config, "joint")
    txs = state_lib.make_optimizers(config, names, 100, "joint")

    def init():
        return state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(0))

    lowered = steps.make_train_step(config, "joint", nets, txs, np.ones(K)).lower(
        init(), batch(0, b=4))
    return init, lowered.compile(), lowered.as_text()


def _dtypes(tree):
    return {x.dtype for x in jax.tree.leaves(tree)}


def test_bfloat16_losses_at_init_within_2_percent_and_state_stays_float32():
    """The first step's loss terms (the losses at the initial weights, after the
    discriminators' own update) in bf16 against float32 from the same weights and batch; the
    weights, batch statistics and optimizer states after the step are float32, and the bf16
    run computes its convolutions in bf16 (visible in the compiled step)."""
    b = batch(0, b=4)
    (init32, step32, hlo32), (init16, step16, hlo16) = _joint("float32"), _joint("bfloat16")
    state32, state16 = init32(), init16()
    for a, c in zip(jax.tree.leaves(state32.params), jax.tree.leaves(state16.params),
                    strict=True):
        np.testing.assert_array_equal(a, c)  # the same weights: only the arithmetic differs
    assert "bf16" in hlo16 and "bf16" not in hlo32
    new32, m32 = step32(state32, b)
    new16, m16 = step16(state16, b)
    terms = [k for k in m32 if k.startswith("loss_")]
    assert {"loss_c", "loss_adf", "loss_au", "loss_fl", "loss_l", "loss_adl"} <= set(terms)
    for k in terms:
        want, got = float(m32[k]), float(m16[k])
        assert m16[k].dtype == jnp.float32, k
        assert abs(got - want) <= 0.02 * abs(want), (k, got, want)
    for part in (new16.params, new16.batch_stats, new16.opt_state):
        assert _dtypes(part) <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}


def test_bfloat16_joint_training_still_learns():
    """40 bf16 steps of model C on one fixed batch: the AU loss falls to less than half (the
    task fits its batch), and every weight stays finite."""
    b = batch(1, b=4)
    init, step, _ = _joint("bfloat16")
    state = init()
    first = None
    for _ in range(40):
        state, metrics = step(state, b)
        first = float(metrics["loss_au"]) if first is None else first
    last = float(metrics["loss_au"])
    assert last < 0.5 * first, (first, last)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(state.params))
