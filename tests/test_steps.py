"""The joint step's update structure and stop-gradients (docs/design.md §3), on random tiny
batches."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audjax import losses, steps
from audjax import state as state_lib
from tests.tiny_joint import CONFIG, TRACES, K, batch, networks, setup, train_step


def forward_pieces(config, nets, state, b):
    src, tgt = b["source"], b["target"]
    idx_s = steps.landmark_indices(config, src["landmarks"])
    idx_t = steps.landmark_indices(config, tgt["landmarks"])
    return src, tgt, idx_s, idx_t


def tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def tree_all_zero(t):
    return all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(t))


def tree_any_nonzero(t):
    return any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(t))


def test_d_update_changes_only_the_discriminators():
    config, nets, txs, state = setup("C")
    src, tgt, idx_s, idx_t = forward_pieces(config, nets, state, batch(0))
    _, disc_inputs, _ = steps.separation_forward(config, nets, state.params, state.batch_stats,
                                                 src, tgt, idx_s, idx_t, jnp.ones(K))
    new, _ = steps.d_update(state, nets, txs["discriminators"], disc_inputs, idx_s, idx_t)
    for name in state.params:
        same = tree_equal(new.params[name], state.params[name])
        assert same == (name not in ("D_l", "D_s", "D_t")), name
    for group in state.opt_state:
        assert tree_equal(new.opt_state[group], state.opt_state[group]) == (
            group != "discriminators"), group
    assert tree_equal(new.batch_stats, state.batch_stats)


def test_g_update_leaves_discriminators_bit_identical():
    config, nets, txs, state = setup("C")
    grads = jax.tree.map(jnp.ones_like, state.params)
    # Jitted: one program compiles faster than Adam's ops one by one for every leaf shape.
    new = jax.jit(lambda s, g: steps.g_update(s, txs, g))(state, grads)
    for name in ("D_l", "D_s", "D_t"):
        assert tree_equal(new.params[name], state.params[name])
    assert tree_equal(new.opt_state["discriminators"], state.opt_state["discriminators"])
    for name in ("E_f", "G_b", "G_st", "E_au", "landmark", "P"):
        assert not tree_equal(new.params[name], state.params[name]), name


def test_joint_step_updates_discriminators_and_the_rest():
    config, nets, txs, state = setup("C")
    old = jax.tree.map(np.array, state)
    new, metrics = train_step("C")(jax.tree.map(jnp.array, state), batch(1))
    for name in state.params:
        assert not tree_equal(new.params[name], old.params[name]), name
    assert int(new.step) == 1
    assert {"loss_c", "loss_l", "loss_adl", "loss_adf", "loss_au", "loss_fl", "loss_d"} <= set(
        metrics)


def test_discriminator_loss_gives_no_gradient_to_generators_or_task():
    config, nets, txs, state = setup("C")
    src, tgt, idx_s, idx_t = forward_pieces(config, nets, state, batch(2))
    discs = state_lib.group_params(state.params, "discriminators")

    def l_d(params):
        _, disc_inputs, _ = steps.separation_forward(config, nets, {**params, **discs},
                                                     state.batch_stats, src, tgt, idx_s, idx_t,
                                                     jnp.ones(K))
        return steps.discriminator_loss(nets, discs, disc_inputs, idx_s, idx_t)[0]

    others = {n: p for n, p in state.params.items() if n not in discs}
    assert tree_all_zero(jax.grad(l_d)(others))
    # ... while the discriminators do learn from it.
    _, disc_inputs, _ = steps.separation_forward(config, nets, state.params, state.batch_stats,
                                                 src, tgt, idx_s, idx_t, jnp.ones(K))
    g = jax.grad(lambda d: steps.discriminator_loss(nets, d, disc_inputs, idx_s, idx_t)[0])(discs)
    assert all(tree_any_nonzero(g[n]) for n in discs)


def test_adversarial_landmark_loss_reaches_g_b_not_d_l():
    config, nets, txs, state = setup("C")
    src, tgt, idx_s, idx_t = forward_pieces(config, nets, state, batch(3))

    def l_adl(params):
        _, disc_inputs, _ = steps.separation_forward(config, nets, params, state.batch_stats,
                                                     src, tgt, idx_s, idx_t, jnp.ones(K))
        discs = state_lib.group_params(params, "discriminators")
        return steps.adversarial_terms(nets, discs, disc_inputs)["adl"]

    g = jax.grad(l_adl)(state.params)
    assert tree_any_nonzero(g["G_b"])
    assert tree_all_zero(g["D_l"])
    # G_b reads E_f's output under stop-gradient, so L_adl does not reach E_f.
    assert tree_all_zero(g["E_f"])


def test_round_two_gives_e_l_no_gradient():
    """The gradient of L_l w.r.t. E_l equals that of its round-1 half alone."""
    config, nets, txs, state = setup("C")
    src, tgt, idx_s, idx_t = forward_pieces(config, nets, state, batch(4))

    def l_l(e_l):
        params = {**state.params, "E_l": e_l}
        terms, _, _ = steps.separation_forward(config, nets, params, state.batch_stats, src,
                                               tgt, idx_s, idx_t, jnp.ones(K))
        return terms["l"]

    def round_one(e_l):
        total = 0.0
        for d, idx in ((src, idx_s), (tgt, idx_t)):
            pre, _ = state_lib.apply_net(nets, "E_f", state.params, state.batch_stats, d["image"],
                                     train=True)
            _, logits = nets["E_l"].apply({"params": e_l}, jnp.tanh(pre))
            total += losses.landmark_softmax_loss(logits, idx)
        return 0.5 * total

    g_all = jax.grad(l_l)(state.params["E_l"])
    g_one = jax.grad(round_one)(state.params["E_l"])
    for a, b in zip(jax.tree.leaves(g_all), jax.tree.leaves(g_one), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    # Round 2 does train the generators that made its input.
    def round_two_only(g_st):
        params = {**state.params, "G_st": g_st}
        return steps.separation_forward(config, nets, params, state.batch_stats, src, tgt,
                                        idx_s, idx_t, jnp.ones(K))[0]["l"]
    assert tree_any_nonzero(jax.grad(round_two_only)(state.params["G_st"]))


@pytest.mark.parametrize("model", ["C", "A", "source_only"])
def test_step_compiles_once(model):
    """New batches of the same shapes reuse the step's one trace (the model-C step is the one
    the test above ran, so it is still one trace after its first call there)."""
    _, _, _, state = setup(model)
    step = train_step(model)
    s = jax.tree.map(jnp.array, state)
    for i in range(3):
        s, m = step(s, batch(10 + i))
    assert TRACES[model, ()] == 1
    assert int(s.step) == 3
    assert all(np.isfinite(float(v)) for v in m.values())


@pytest.mark.parametrize("model, weights, terms, needed", [
    ("C", {}, {"c", "l", "adl", "adf", "au", "fl"}, {"P", "landmark", "D_l", "D_s", "D_t"}),
    ("C", {"lambda_self": 3.0}, {"c", "self", "l", "adl", "adf", "au", "fl"}, {"P", "landmark"}),
    ("B", {"lambda_c": 100.0}, {"c", "cyc", "self", "l", "adl", "adf", "au", "fl"}, {"P"}),
    ("A", {}, {"cyc", "self", "l", "adl", "adf", "au"}, {"D_l", "D_s", "D_t"}),
    ("A", {"lambda_adf": 0.0, "lambda_cyc": 0.0}, {"self", "l", "adl", "au"}, {"D_l"}),
])
def test_terms_and_networks_follow_the_weights(model, weights, terms, needed):
    """A term is computed exactly when its weight is non-zero, and a network is there exactly
    when a computed term needs it."""
    config, nets, txs, shapes = networks(model, **weights)
    names = set(shapes.params)
    assert needed <= names
    assert ("P" in names) == ("c" in terms) and ("landmark" in names) == ("fl" in terms)
    assert ("D_l" in names) == ("adl" in terms) and ("D_s" in names) == ("adf" in terms)
    # Which terms the step computes is decided while tracing it: its shapes are enough.
    _, _, metrics = jax.eval_shape(functools.partial(
        steps.joint_gradients, config=config, nets=nets, txs=txs, au_weights=jnp.ones(K)),
        shapes, batch(6))
    assert {k.removeprefix("loss_") for k in metrics} - {"total", "d", "d_landmark",
                                                          "d_domain"} == terms
    assert ("d_domain" in metrics) == ("adf" in terms)
    assert ("d_landmark" in metrics) == ("adl" in terms)


def step_flops(model, **weights):
    # Lowered on a state, not on its shapes, the model-C step reuses the trace it ran with.
    state = setup(model, **weights)[3]
    cost = train_step(model, **weights).lower(state, batch(7)).cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_a_switched_off_term_costs_nothing():
    """Adding L_self to C adds its two G_st passes (forward and backward) to the compiled step;
    switching L_cyc off in B removes work; and the cross-cycle pass is shared by L_c and L_cyc."""
    c, c_self = step_flops("C"), step_flops("C", lambda_self=3.0)
    b, b_no_cyc = step_flops("B"), step_flops("B", lambda_cyc=0.0)
    assert c_self > c and b_no_cyc < b
    # Without L_cyc, L_c and L_l's round-two terms nothing reads round two's G_st outputs.
    no_round2 = step_flops("B", lambda_cyc=0.0, lambda_l=0.0)
    assert no_round2 < b_no_cyc


def test_pretrain_step_lowers_the_loss_on_a_fixed_batch():
    config = CONFIG
    nets = state_lib.build_networks(config, K)
    names = state_lib.network_names(config, "pretrain")
    txs = state_lib.make_optimizers(config, names, 10, "pretrain")
    state = state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(0))
    step = steps.make_train_step(config, "pretrain", nets, txs)
    b = batch(5, b=4)["source"]
    first = None
    for _ in range(15):
        state, m = step(state, b)
        first = first if first is not None else float(m["loss_fl"])
    assert float(m["loss_fl"]) < 0.5 * first
    assert set(state.params) == {"landmark_net"} and set(state.opt_state) == {"landmark"}
