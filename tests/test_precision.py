"""--compute_dtype=bfloat16: convolutions and matmuls in bf16, everything kept in float32."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.tiny_joint import batch, setup, train_step

BF16 = {"compute_dtype": "bfloat16"}
STEPS = 20  # at the quick start's learning rates the loss halves in about 14


def _fresh(**weights):
    """A copy of model C's fresh state (the steps donate theirs)."""
    return jax.tree.map(jnp.array, setup("C", **weights)[3])


def _dtypes(tree):
    return {x.dtype for x in jax.tree.leaves(tree)}


def test_bfloat16_losses_at_init_within_2_percent_and_state_stays_float32():
    """The first step's loss terms (the losses at the initial weights, after the
    discriminators' own update) in bf16 against float32 from the same weights and batch; the
    weights, batch statistics and optimizer states after the step are float32, and the bf16
    run computes its convolutions in bf16 (visible in the lowered step)."""
    b = batch(0)
    state32, state16 = _fresh(), _fresh(**BF16)
    for a, c in zip(jax.tree.leaves(state32.params), jax.tree.leaves(state16.params),
                    strict=True):
        np.testing.assert_array_equal(a, c)  # the same weights: only the arithmetic differs
    # Lowered on the states themselves, the steps called next reuse these traces.
    hlo32 = train_step("C").lower(state32, b).as_text()
    hlo16 = train_step("C", **BF16).lower(state16, b).as_text()
    assert "bf16" in hlo16 and "bf16" not in hlo32
    new32, m32 = train_step("C")(state32, b)
    new16, m16 = train_step("C", **BF16)(state16, b)
    terms = [k for k in m32 if k.startswith("loss_")]
    assert {"loss_c", "loss_adf", "loss_au", "loss_fl", "loss_l", "loss_adl"} <= set(terms)
    for k in terms:
        want, got = float(m32[k]), float(m16[k])
        assert m16[k].dtype == jnp.float32, k
        assert abs(got - want) <= 0.02 * abs(want), (k, got, want)
    for part in (new16.params, new16.batch_stats, new16.opt_state):
        assert _dtypes(part) <= {jnp.dtype(jnp.float32), jnp.dtype(jnp.int32)}


def test_bfloat16_joint_training_still_learns():
    """20 bf16 steps of model C on one fixed batch: the AU loss falls to less than half (the task
    fits its batch), and every weight stays finite."""
    b = batch(1)
    step, state = train_step("C", **BF16), _fresh(**BF16)
    first = None
    for _ in range(STEPS):
        state, metrics = step(state, b)
        first = float(metrics["loss_au"]) if first is None else first
    last = float(metrics["loss_au"])
    assert last < 0.5 * first, (first, last)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
