"""Pure, jittable training steps of both phases (docs/design.md §3).

The joint step reads top to bottom like Fig. 1 of the paper:

1. `separation_forward`: E_f on both domains, the two rounds of separation and recombination
   (`audjax.separation.two_rounds`), and every loss term without a discriminator.
2. `d_update`: the discriminators D_l, D_s, D_t take one step on stop-gradient inputs.
3. `g_update`: task, generators and landmark head take one step on L_all, whose adversarial
   terms use the *updated* discriminators.

The forward pass runs once: `jax.vjp` keeps it, the discriminator step reads its (stopped)
outputs, and the adversarial terms' gradient is pulled back through it afterwards — the same
computation ADLD does with one PyTorch graph and `.detach()`.

`jax.lax.stop_gradient` plays the role of `.detach()` and of ADLD's frozen copy of E_l.
"""

import functools

import jax
import jax.numpy as jnp

from audjax import losses, models, parallel, separation
from audjax.config import Config
from audjax.state import GROUPS, TrainState, apply_group_update, apply_net, group_params

sg = jax.lax.stop_gradient


def weighted_total(config: Config, terms: dict) -> jax.Array:
    """L_all = sum of lambda_k * L_k over the terms present (paper eq. 3)."""
    lambdas = config.lambdas
    return sum((lambdas[k] * v for k, v in terms.items()), jnp.zeros((), jnp.float32))


def landmark_indices(config: Config, landmarks):
    return losses.landmark_targets(landmarks, config.crop, config.map_size,
                                   config.shift_au_centres)


# ---------------------------------------------------------------------------------------------
# Phase 1: the landmark net.
# ---------------------------------------------------------------------------------------------


def pretrain_step(state: TrainState, batch, *, nets, txs):
    """One Adam step of the landmark net on L_fl (source images)."""

    def loss_fn(params):
        pred, bs = apply_net(nets, "landmark_net", params, state.batch_stats, batch["image"],
                             train=True)
        return losses.landmark_regression_loss(pred, batch["landmarks"]), (bs, pred)

    (loss, (bs, pred)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = apply_group_update(state.replace(batch_stats=bs), "landmark",
                               group_params(grads, "landmark"), txs["landmark"])
    metrics = {"loss_fl": loss, "nme": jnp.mean(losses.nme(pred, batch["landmarks"]))}
    return state.replace(step=state.step + 1), metrics


# ---------------------------------------------------------------------------------------------
# Phase 2: separation, reconstruction and the two updates.
# ---------------------------------------------------------------------------------------------


def separation_forward(config: Config, nets, params, batch_stats, src, tgt, idx_s, idx_t,
                       au_weights):
    """Rounds 1 and 2 of docs/design.md §3. Returns (terms, disc_inputs, batch_stats).

    `terms` are the unweighted losses that need no discriminator, each computed only when its
    weight is non-zero (so the compiled step does none of a switched-off term's work);
    `disc_inputs` are the features the discriminators judge. E_f, E_au and the landmark head (the
    modules with batch norm) run on each domain as separate calls, so each call normalises with
    its own batch's statistics.
    """
    bs = batch_stats

    def run(name, *args, p=params):
        nonlocal bs
        out, bs = apply_net(nets, name, p, bs, *args, train=True)
        return out

    # E_f. The landmark head reads the features before E_f's tanh, as in phase 1.
    pre_s, pre_t = run("E_f", src["image"]), run("E_f", tgt["image"])
    F_s, F_t = jnp.tanh(pre_s), jnp.tanh(pre_t)

    # Rounds 1 and 2 of Fig. 1; round 2's E_l runs with stopped parameters (ADLD's frozen copy).
    frozen_E_l = {**params, "E_l": sg(params["E_l"])}

    def apply(name, *args, frozen=False):
        return run(name, *args, p=frozen_E_l if frozen else params)

    r = separation.two_rounds(apply, F_s, F_t)

    terms = {}
    if config.uses("l"):
        ce = losses.landmark_softmax_loss
        terms["l"] = 0.5 * (ce(r.logits_s, idx_s) + ce(r.logits_t, idx_t)
                            + ce(r.logits2_s, idx_s) + ce(r.logits2_t, idx_t))
    if config.uses("au"):
        terms["au"] = au_term(config, run, src["au"], au_weights, F_s, F_t, r.F_sbtl, r.F_sltb)
    if config.uses("fl"):
        terms["fl"] = losses.landmark_regression_loss(run("landmark", pre_s), src["landmarks"])
    if config.uses("c"):
        terms["c"] = alignment_term(config, nets, params, (r.F2_s, F_s), (r.F2_t, F_t),
                                    (r.A2_s, r.A_s), (r.B2_s, r.B_s), (r.A2_t, r.A_t),
                                    (r.B2_t, r.B_t))
    if config.uses("cyc"):
        terms["cyc"] = 0.5 * (losses.l1_loss(r.F2_s, sg(F_s)) + losses.l1_loss(r.F2_t, sg(F_t)))
    if config.uses("self"):
        self_s = separation.recombine(apply, r.A_s, r.B_s)
        self_t = separation.recombine(apply, r.A_t, r.B_t)
        terms["self"] = 0.5 * (losses.l1_loss(self_s, sg(F_s)) + losses.l1_loss(self_t, sg(F_t)))

    disc_inputs = {}
    if config.uses("adl"):
        disc_inputs.update(B_s=r.B_s, B_t=r.B_t)
    if config.uses("adf"):
        disc_inputs.update(F_s=F_s, F_t=F_t, F_sbtl=r.F_sbtl, F_sltb=r.F_sltb)
    return terms, disc_inputs, bs


def au_term(config: Config, run, au_s, au_weights, F_s, F_t, F_sbtl, F_sltb):
    """L_au = ½(BCE_w(E_au(F_s)) + BCE_w(E_au(F_sltb))), both against the source's labels:
    F_sltb carries the source's landmarks (ADLD's "weak" mode).

    ADLD runs E_au in training mode on all four features, in the order F_s, F_t, F_sbtl, F_sltb,
    and scores two of them; the other two calls only move E_au's batch-norm running averages,
    which evaluation uses. With `config.au_bn_all` they run here too, in that order, on stopped
    inputs and with their outputs unused (XLA keeps only the statistics' work).
    """
    bce = losses.weighted_bce
    source = bce(run("E_au", F_s), au_s, au_weights)
    if config.au_bn_all:
        run("E_au", sg(F_t))
        run("E_au", sg(F_sbtl))
    return 0.5 * (source + bce(run("E_au", F_sltb), au_s, au_weights))


def alignment_term(config: Config, nets, params, *pairs):
    """L_c over the six (reconstruction, original) pairs, in the order of `Projectors.names`.

    Attention maps sum to 1 over s*s positions; scaling them by s*s makes them O(1) like the
    features (docs/design.md §4). Projectors, when on, map each reconstruction before the L1.
    """
    names = models.Projectors.names
    s2 = config.map_size**2 if config.scale_attention else 1.0
    recon, target = {}, {}
    for name, (r, t) in zip(names, pairs, strict=True):
        scale = s2 if name.startswith("A") else 1.0
        recon[name], target[name] = r * scale, t * scale
    if config.projectors:
        recon = nets["P"].apply({"params": params["P"]}, recon)
    return losses.alignment_loss([(recon[n], target[n]) for n in names])


def discriminator_loss(nets, disc_params, disc_inputs, idx_s, idx_t):
    """L_D of docs/design.md §3, on stopped inputs: D_l finds landmarks in backgrounds; D_s, D_t
    tell real features (1) from recombined ones (0). Only the discriminators present (those whose
    adversarial weight is non-zero) take part. Returns (L_D, its parts)."""
    x = sg(disc_inputs)

    def d(name, inp):
        return nets[name].apply({"params": disc_params[name]}, inp)

    parts = {}
    if "D_l" in disc_params:
        ld = losses.landmark_discriminator_loss
        parts["d_landmark"] = 0.5 * (ld(d("D_l", x["B_s"]), idx_s) + ld(d("D_l", x["B_t"]), idx_t))
    if "D_s" in disc_params:
        gan = losses.lsgan_loss
        parts["d_domain"] = 0.5 * (
            0.5 * (gan(d("D_s", x["F_s"]), 1.0) + gan(d("D_s", x["F_sbtl"]), 0.0))
            + 0.5 * (gan(d("D_t", x["F_t"]), 1.0) + gan(d("D_t", x["F_sltb"]), 0.0)))
    return sum(parts.values()), parts


def adversarial_terms(nets, disc_params, disc_inputs):
    """L_adl and L_adf (those whose discriminators are present): the generators' side of the two
    games. The discriminators' parameters are stopped, so these terms train the generators only."""
    p = sg(disc_params)

    def d(name, inp):
        return nets[name].apply({"params": p[name]}, inp)

    terms = {}
    if "D_l" in p:
        terms["adl"] = 0.5 * (losses.landmark_adversarial_loss(d("D_l", disc_inputs["B_s"]))
                              + losses.landmark_adversarial_loss(d("D_l", disc_inputs["B_t"])))
    if "D_s" in p:
        terms["adf"] = 0.5 * (losses.lsgan_loss(d("D_s", disc_inputs["F_sbtl"]), 1.0)
                              + losses.lsgan_loss(d("D_t", disc_inputs["F_sltb"]), 1.0))
    return terms


def d_update(state: TrainState, nets, tx, disc_inputs, idx_s, idx_t):
    """One step of the discriminators; nothing else in the state changes."""
    disc_params = group_params(state.params, "discriminators")
    (loss, parts), grads = jax.value_and_grad(discriminator_loss, argnums=1, has_aux=True)(
        nets, disc_params, disc_inputs, idx_s, idx_t)
    state = apply_group_update(state, "discriminators", grads, tx)
    return state, {"loss_d": loss, **parts}


def g_update(state: TrainState, txs, grads):
    """One step of each non-discriminator group on its share of the gradients of L_all."""
    for group in ("task", "generators", "landmark"):
        if group in txs:
            state = apply_group_update(state, group, group_params(grads, group), txs[group])
    return state


def joint_step(state: TrainState, batch, *, config: Config, nets, txs, au_weights):
    """Phase 2 (docs/design.md §3): the discriminator update, then the generators + task + landmark
    update against the updated discriminators. batch = {"source": {...}, "target": {...}}."""
    state, grads, metrics = joint_gradients(state, batch, config=config, nets=nets, txs=txs,
                                            au_weights=au_weights)
    state = g_update(state, txs, grads)
    return state.replace(step=state.step + 1), metrics


def joint_gradients(state: TrainState, batch, *, config: Config, nets, txs, au_weights):
    """The first part of `joint_step`: one forward pass, the discriminator update, and the
    gradients of L_all for every other network. Returns (state with the discriminators updated
    and the new batch statistics, those gradients, metrics)."""
    src, tgt = batch["source"], batch["target"]
    idx_s = landmark_indices(config, src["landmarks"])
    idx_t = landmark_indices(config, tgt["landmarks"])
    discs = GROUPS["discriminators"]
    trainable = {n: p for n, p in state.params.items() if n not in discs}

    def forward(tr):
        terms, disc_inputs, bs = separation_forward(
            config, nets, {**state.params, **tr}, state.batch_stats, src, tgt, idx_s, idx_t,
            au_weights)
        return (weighted_total(config, terms), disc_inputs), (terms, bs)

    (total, disc_inputs), pullback, (terms, batch_stats) = jax.vjp(forward, trainable,
                                                                   has_aux=True)

    d_metrics = {}
    if "discriminators" in txs:
        state, d_metrics = d_update(state, nets, txs["discriminators"], disc_inputs, idx_s,
                                    idx_t)
    new_discs = group_params(state.params, "discriminators")

    def adversarial(x):
        adv = adversarial_terms(nets, new_discs, x)
        return weighted_total(config, adv), adv

    (_, adv), d_inputs_grad = jax.value_and_grad(adversarial, has_aux=True)(disc_inputs)
    (grads,) = pullback((jnp.ones_like(total), d_inputs_grad))

    all_terms = {**terms, **adv}
    metrics = {f"loss_{k}": v for k, v in all_terms.items()}
    metrics["loss_total"] = weighted_total(config, all_terms)
    metrics.update(d_metrics)
    return state.replace(batch_stats=batch_stats), grads, metrics


def source_only_step(state: TrainState, batch, *, config: Config, nets, txs, au_weights):
    """The source-only baseline: E_f + E_au on source AU labels alone (target batch unused)."""
    src = batch["source"]

    def loss_fn(params):
        pre, bs = apply_net(nets, "E_f", params, state.batch_stats, src["image"], train=True)
        logits, bs = apply_net(nets, "E_au", params, bs, jnp.tanh(pre), train=True)
        return losses.weighted_bce(logits, src["au"], au_weights), bs

    (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = apply_group_update(state.replace(batch_stats=bs), "task",
                               group_params(grads, "task"), txs["task"])
    return state.replace(step=state.step + 1), {"loss_au": loss, "loss_total": loss}


def make_train_step(config: Config, phase: str, nets, txs, au_weights=None, mesh=None):
    """The jitted step of a phase, with the state donated: step(state, batch) -> (state, m).
    Non-finite steps are rejected and recorded (`guard_nonfinite`).

    With a `mesh` (audjax.parallel) the batch is split over its data axis and the state and
    metrics are replicated; XLA then computes batch statistics over the global batch."""
    if phase == "pretrain":
        fn = functools.partial(pretrain_step, nets=nets, txs=txs)
    else:
        body = source_only_step if config.model == "source_only" else joint_step
        fn = functools.partial(body, config=config, nets=nets, txs=txs,
                               au_weights=jnp.asarray(au_weights, jnp.float32))
    fn = guard_nonfinite(fn)
    if mesh is None:
        return jax.jit(fn, donate_argnums=0)
    rep, split = parallel.replicated(mesh), parallel.batch_sharded(mesh)
    return jax.jit(fn, donate_argnums=0, in_shardings=(rep, split), out_shardings=(rep, rep))


def guard_nonfinite(step_fn):
    """Wrap any phase's step: when a metric (loss term) or a network's updated weights or batch
    statistics are not all finite, the step keeps the old weights, batch statistics and
    optimizer states (only the step counter moves on, as the data did) and records the step in
    `state.health` (see `state.new_health`): its number, and bit masks of the bad metrics
    (sorted names) and networks (sorted names). A non-finite gradient makes Adam's update
    non-finite, so the networks' weights name where it went without exposing gradients.

    Nothing leaves the device: the trainer reads `health` with the metrics every few steps and
    before each save, and decides whether to stop.
    """

    def guarded(state: TrainState, batch):
        new, metrics = step_fn(state, batch)
        terms, nets = sorted(metrics), sorted(new.params)
        assert len(terms) <= 32 and len(nets) <= 32, "health bit masks hold 32 names"

        def all_finite(tree):
            return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))

        bad_terms = jnp.stack([~jnp.all(jnp.isfinite(metrics[k])) for k in terms])
        bad_nets = jnp.stack([~all_finite((new.params[n], new.batch_stats.get(n, {})))
                              for n in nets])
        bad = jnp.any(bad_terms) | jnp.any(bad_nets)

        def bits(flags):
            return jnp.sum(jnp.where(flags, jnp.uint32(1) << jnp.arange(len(flags),
                                                                     dtype=jnp.uint32), 0))

        h = state.health
        health = {
            "nonfinite_steps": h["nonfinite_steps"] + bad.astype(jnp.int32),
            "last_bad_step": jnp.where(bad, new.step, h["last_bad_step"]),
            "bad_terms": jnp.where(bad, bits(bad_terms), h["bad_terms"]).astype(jnp.uint32),
            "bad_nets": jnp.where(bad, bits(bad_nets), h["bad_nets"]).astype(jnp.uint32),
        }
        # lax.cond rather than a jnp.where per leaf: the same choice, but with the where's
        # XLA's CPU compiler took five times longer (30 s against 6 s, tiny pretrain step).
        kept = jax.lax.cond(bad, lambda: (state.params, state.batch_stats, state.opt_state),
                            lambda: (new.params, new.batch_stats, new.opt_state))
        return new.replace(params=kept[0], batch_stats=kept[1], opt_state=kept[2],
                           health=health), metrics

    return guarded
