"""Training state, the networks of each phase, and one optimizer per parameter group.

The state holds only arrays (so a checkpoint is a plain pytree): per network its params and
batch-norm statistics, per parameter group its optax state, and the step. The optax transforms
and the Flax modules live outside, built from the config.

Parameter groups (docs/design.md §3), each with its own Adam and its own schedule:

    task            E_f, E_l, E_au
    generators      G_b, G_st, P (the projectors of L_c)
    discriminators  D_l, D_s, D_t
    landmark        the landmark head (joint phase) or the whole landmark net (pretrain)

Separate optax states matter: the discriminators and the rest update in different sub-steps, and
a single partitioned optimizer would still advance Adam's moments on the idle group's zeros.
"""

import functools
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from audjax import models, seeds
from audjax.config import Config

GROUPS = {
    "task": ("E_f", "E_l", "E_au"),
    "generators": ("G_b", "G_st", "P"),
    "discriminators": ("D_l", "D_s", "D_t"),
    "landmark": ("landmark", "landmark_net"),
}


def new_health() -> dict[str, jax.Array]:
    """The record of non-finite steps that `steps.guard_nonfinite` keeps in the state: how many
    steps were rejected, the last one, and bit masks of its non-finite loss terms (sorted metric
    names) and networks (sorted network names)."""
    return {"nonfinite_steps": jnp.zeros((), jnp.int32), "last_bad_step": jnp.zeros((), jnp.int32),
            "bad_terms": jnp.zeros((), jnp.uint32), "bad_nets": jnp.zeros((), jnp.uint32)}


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: dict[str, Any]
    batch_stats: dict[str, Any]
    opt_state: dict[str, Any]
    health: dict[str, jax.Array] = flax.struct.field(default_factory=new_health)


def network_names(config: Config, phase: str) -> tuple[str, ...]:
    """Which networks a phase trains. In the joint phase a network is there exactly when a loss
    term with a non-zero weight needs it: D_l for L_adl, D_s and D_t for L_adf, the landmark head
    for L_fl, the projectors for L_c."""
    if phase == "pretrain":
        return ("landmark_net",)
    if config.model == "source_only":
        return ("E_f", "E_au")
    names = ["E_f", "E_l", "E_au", "G_b", "G_st"]
    if config.uses("adl"):
        names.append("D_l")
    if config.uses("adf"):
        names += ["D_s", "D_t"]
    if config.uses("fl"):
        names.append("landmark")  # L_fl through the landmark head on top of E_f
    if config.uses("c") and config.projectors:
        names.append("P")
    return tuple(names)


def build_networks(config: Config, num_aus: int) -> dict[str, nn.Module]:
    """Every module audjax may use, by name; a phase uses the subset `network_names` gives.
    They compute in `config.compute_dtype`; their variables and outputs are float32."""
    w, nl = config.width, config.num_landmarks
    # None: compute in the dtype of the inputs and variables (float32).
    dt = None if config.compute_dtype == "float32" else jnp.dtype(config.compute_dtype)
    return {
        "landmark_net": models.LandmarkNet(w, nl, dtype=dt),
        # tanh applied by the caller, see steps
        "E_f": models.FeatureExtractor(w, tanh=False, dtype=dt),
        "landmark": models.LandmarkHead(w, nl, dtype=dt),
        "E_l": models.LandmarkEncoder(w, nl, dtype=dt),
        "G_b": models.BackgroundEncoder(w, dtype=dt),
        "G_st": models.FeatureGenerator(w, dtype=dt),
        "D_l": models.LandmarkDiscriminator(w, nl, dtype=dt),
        "D_s": models.DomainDiscriminator(w, dtype=dt),
        "D_t": models.DomainDiscriminator(w, dtype=dt),
        "E_au": models.AUDetector(w, num_aus, dtype=dt),
        "P": models.Projectors(dtype=dt),
    }


def apply_net(nets, name, params, batch_stats, *args, train: bool):
    """Run network `name`; returns (output, batch_stats with its statistics updated if train)."""
    variables = {"params": params[name]}
    if name not in batch_stats:
        return nets[name].apply(variables, *args, train=train), batch_stats
    variables["batch_stats"] = batch_stats[name]
    if not train:
        return nets[name].apply(variables, *args, train=False), batch_stats
    out, updated = nets[name].apply(variables, *args, train=True, mutable=["batch_stats"])
    return out, {**batch_stats, name: updated["batch_stats"]}


def _dummy_inputs(config: Config, name: str):
    s, c, nl = config.map_size, models.feature_channels(config.width), config.num_landmarks
    image = jnp.zeros((1, config.crop, config.crop, 3))
    feats = jnp.zeros((1, s, s, c))
    attention = jnp.zeros((1, s, s, nl))
    return {
        "landmark_net": (image,),
        "E_f": (image,),
        "G_st": (attention, feats),
        # Attention maps (A_*) have one channel per landmark, features (F_*, B_*) c channels.
        "P": ({n: attention if n.startswith("A") else feats for n in models.Projectors.names},),
    }.get(name, (feats,))


def init_variables(config: Config, nets, names, key):
    """Fresh params and batch_stats for `names`; each network's key is folded from its name.

    With `config.init == "torch"` every conv and dense layer starts as PyTorch's defaults (as
    ADLD's networks do); the projectors keep their identity start either way (docs/design.md §4).
    """
    params, batch_stats = {}, {}
    for name in names:
        init = _initialiser(nets[name], config.init == "torch" and name != "P")
        v = init(jax.random.fold_in(key, seeds.name_id(name)), *_dummy_inputs(config, name))
        params[name] = v["params"]
        if "batch_stats" in v:
            batch_stats[name] = v["batch_stats"]
    return params, batch_stats


@functools.cache
def _initialiser(net: nn.Module, torch_init: bool):
    """A network's initialisation as one jitted function of its key and dummy inputs, kept for
    the process: modules with equal fields share it (Flax modules hash by their fields).

    Compiled, the initialisers give the values they give op by op in a fraction of the time: op
    by op, every initialiser of every shape is compiled on its own, and the forward pass that
    Flax traces to find the shapes is computed."""
    def init(key, *inputs):
        v = net.init(key, *inputs)
        if torch_init:
            v = {**v, "params": models.torch_default_init(v["params"], jax.random.fold_in(key, 1))}
        return v

    return jax.jit(init)


def lr_factors(config: Config) -> list[float]:
    """The schedule's factor per epoch: 1 for `lr_decay_start` epochs, then lowered linearly in
    steps of `lr_decay_every` epochs towards 0 (12 epochs from 4 every 4: 1, 2/3, 1/3)."""
    start, every, n = config.lr_decay_start, config.lr_decay_every, config.epochs
    stages = max(0, math.ceil((n - start) / every))
    out = []
    for epoch in range(n):
        j = 0 if epoch < start else (epoch - start) // every + 1
        out.append(1.0 - j / (stages + 1))
    return out


def schedule(config: Config, base_lr: float, steps_per_epoch: int, phase: str):
    if phase == "pretrain":
        return optax.constant_schedule(base_lr)  # the paper: lr 1e-4 for all 20 epochs
    factors = lr_factors(config)
    values = [base_lr * f for f in factors]
    boundaries = [e * steps_per_epoch for e in range(1, len(values))]
    return optax.join_schedules([optax.constant_schedule(v) for v in values], boundaries)


def make_optimizers(config: Config, names, steps_per_epoch: int, phase: str):
    """One Adam per parameter group that has networks in this phase."""
    hyper = {
        "task": (config.lr_task, config.b1_task, config.b2_task),
        "generators": (config.lr_gen, config.b1_gen, config.b2_gen),
        "discriminators": (config.lr_disc, config.b1_disc, config.b2_disc),
        "landmark": (config.lr_landmark, config.b1_landmark, config.b2_landmark),
    }
    txs = {}
    for group, members in GROUPS.items():
        if any(m in names for m in members):
            lr, b1, b2 = hyper[group]
            txs[group] = optax.adam(schedule(config, lr, steps_per_epoch, phase), b1=b1, b2=b2)
    return txs


def group_params(params, group: str):
    return {n: params[n] for n in GROUPS[group] if n in params}


def create_state(config: Config, nets, names, txs, key) -> TrainState:
    params, batch_stats = init_variables(config, nets, names, key)
    return fresh_optimizer_state(params, batch_stats, txs)


def fresh_optimizer_state(params, batch_stats, txs) -> TrainState:
    """A state at step 0 with new optimizer states for the given weights."""
    opt_state = {g: tx.init(group_params(params, g)) for g, tx in txs.items()}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=opt_state)


def apply_group_update(state: TrainState, group: str, grads, tx) -> TrainState:
    """One optimizer step of one group; every other group's params and state stay untouched."""
    sub = group_params(state.params, group)
    updates, new_opt = tx.update(grads, state.opt_state[group], sub)
    new_sub = optax.apply_updates(sub, updates)
    return state.replace(params={**state.params, **new_sub},
                         opt_state={**state.opt_state, group: new_opt})
