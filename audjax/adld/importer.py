"""Import ADLD PyTorch checkpoints (docs/design.md §7) into audjax variables, without torch.

ADLD saves one state dict per network. The user loads them with torch and converts each tensor
to numpy (`{k: v.numpy() for k, v in torch.load(path).items()}`); `import_state_dicts` maps
the keys onto audjax's modules:

    >>> nets = import_state_dicts({"base_net": sd_base, "land_enc": sd_land})
    >>> module, variables = nets["base_net"]
    >>> features = module.apply(variables, images, train=False)   # (B, s, s, 64)

Every key of every given state dict must be consumed and every audjax variable filled; anything
else is an error that names the key.
"""

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from audjax.models import (
    AUDetector,
    BackgroundEncoder,
    DomainDiscriminator,
    FeatureExtractor,
    FeatureGenerator,
    LandmarkDiscriminator,
    LandmarkEncoder,
)

# Per network: module factory, key prefix, and the Sequential indices of its layers, in the
# order of audjax's numbered layers (conv0, conv1, ...). Instance norms, pools and tanh have
# no entries in a state dict.
_LAYOUT = {
    "base_net": ("align_attention_features.", {"conv": (0, 3, 7, 10), "bn": (1, 4, 8, 11),
                                               "prelu": (2, 5, 9, 12)}),
    "land_enc": ("align_attention_features.", {"conv": (0, 3, 6, 9, 13), "prelu": (2, 5, 8, 11)}),
    "invar_shape_enc": ("irrele_shape_encoder.", {"conv": (0, 3, 6, 9), "prelu": (2, 5, 8, 11)}),
    "feat_gen": ("feat_generator.", {"conv": (0, 3, 6, 9, 12), "prelu": (2, 5, 8, 11, 14)}),
    "invar_shape_disc": ("align_attention_features.", {"conv": (0, 3, 6, 9, 12),
                                                       "prelu": (2, 5, 8, 11)}),
    "feat_gen_disc_src": ("layer.", {"conv": (0, 3, 6, 9, 11), "prelu": (2, 5, 8, 10)}),
    "feat_gen_disc_tgt": ("layer.", {"conv": (0, 3, 6, 9, 11), "prelu": (2, 5, 8, 10)}),
    # One branch of au_enc, under "aus_feat.{k}."; its Linear is "aus_fc.{k}.".
    "au_enc": ("aus_feat.", {"conv": (0, 3, 6, 9), "bn": (1, 4, 7), "prelu": (2, 5, 8)}),
}

ADLD_NAMES = tuple(_LAYOUT)


def _module(name: str, num_landmarks: int, num_aus: int) -> nn.Module:
    return {
        "base_net": lambda: FeatureExtractor(),
        "land_enc": lambda: LandmarkEncoder(num_landmarks=num_landmarks),
        "au_enc": lambda: AUDetector(num_aus=num_aus),
        "invar_shape_enc": lambda: BackgroundEncoder(),
        "feat_gen": lambda: FeatureGenerator(),
        "invar_shape_disc": lambda: LandmarkDiscriminator(num_landmarks=num_landmarks),
        "feat_gen_disc_src": lambda: DomainDiscriminator(),
        "feat_gen_disc_tgt": lambda: DomainDiscriminator(),
    }[name]()


def _init_shapes(name: str, module: nn.Module, num_landmarks: int):
    """The variable shapes audjax expects, from an abstract init at a small size."""
    s = 16
    feats = jnp.zeros((1, s, s, 64))
    args = {
        "base_net": (jnp.zeros((1, 4 * s, 4 * s, 3)),),
        "feat_gen": (jnp.zeros((1, s, s, num_landmarks)), feats),
    }.get(name, (feats,))
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args))


def _torch_to_flax(kind: str, field: str, value: np.ndarray) -> np.ndarray:
    if kind == "conv" and field == "kernel":
        return np.transpose(value, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)
    if kind == "fc" and field == "fc_kernel":
        return np.transpose(value)  # (out, in) -> (in, out)
    if kind == "prelu":
        return value.reshape(())  # torch keeps a (1,) slope; Flax a scalar
    return value


# (torch field, flax collection, flax field) for each layer kind.
_FIELDS = {
    "conv": (("weight", "params", "kernel"), ("bias", "params", "bias")),
    "fc": (("weight", "params", "kernel"), ("bias", "params", "bias")),
    "prelu": (("weight", "params", "negative_slope"),),
    "bn": (("weight", "params", "scale"), ("bias", "params", "bias"),
           ("running_mean", "batch_stats", "mean"), ("running_var", "batch_stats", "var")),
}


def _layer_entries(name: str, num_aus: int):
    """Yield (torch key, kind, flax collection, flax path, branch index or None)."""
    prefix, kinds = _LAYOUT[name]
    branches = range(num_aus) if name == "au_enc" else (None,)
    for k in branches:
        base = prefix if k is None else f"{prefix}{k}."
        layers = [(kind, i, idx) for kind, idxs in kinds.items() for i, idx in enumerate(idxs)]
        if k is not None:
            layers.append(("fc", None, None))
        for kind, i, idx in layers:
            layer_prefix = f"aus_fc.{k}." if kind == "fc" else f"{base}{idx}."
            flax_layer = "fc" if kind == "fc" else f"{kind}{i}"
            for torch_field, collection, flax_field in _FIELDS[kind]:
                path = ((f"fc_{flax_field}",) if kind == "fc" else (flax_layer, flax_field))
                yield layer_prefix + torch_field, kind, collection, path, k
            if kind == "bn":
                # A counter torch keeps for momentum=None; audjax has no use for it.
                yield layer_prefix + "num_batches_tracked", kind, None, None, k


def _import_one(name, state_dict, num_landmarks, num_aus, dtype):
    module = _module(name, num_landmarks, num_aus)
    expected = _init_shapes(name, module, num_landmarks)
    out = _empty_like(expected)
    stacks: dict[tuple, dict[int, np.ndarray]] = {}  # au_enc: per variable, per branch
    consumed = set()
    for key, kind, collection, path, k in _layer_entries(name, num_aus):
        if key not in state_dict:
            raise KeyError(f"{name}: missing key {key!r} in the ADLD state dict")
        consumed.add(key)
        if collection is None:
            continue
        value = _torch_to_flax(kind, path[-1], np.asarray(state_dict[key], dtype=dtype))
        want = _leaf(expected, collection, path).shape
        if k is not None:  # au_enc: one branch's share of the variable (see _combine_branches)
            want = () if kind == "prelu" else want[:-1] + (want[-1] // num_aus,)
        if value.shape != tuple(want):
            raise ValueError(f"{name}: key {key!r} has shape {value.shape} after conversion, "
                             f"audjax expects {tuple(want)}")
        if k is None:
            _leaf_parent(out, collection, path)[path[-1]] = value
        else:
            stacks.setdefault((collection, path), {})[k] = value
    for (collection, path), per_branch in stacks.items():
        _leaf_parent(out, collection, path)[path[-1]] = _combine_branches(
            [per_branch[k] for k in range(num_aus)])
    unexpected = sorted(set(state_dict) - consumed)
    if unexpected:
        raise KeyError(f"{name}: unexpected key {unexpected[0]!r} in the ADLD state dict"
                       + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    return module, _as_arrays(out, name)


def _combine_branches(values):
    """E_au keeps branch k in channel group k of each variable's last axis (see
    `audjax.models.networks.GroupedConv3`): concatenate there; scalars (PReLU slopes) stack."""
    if values[0].ndim == 0:
        return np.stack(values)
    return np.concatenate(values, axis=-1)


def _empty_like(tree):
    return {k: _empty_like(v) if isinstance(v, Mapping) else None for k, v in tree.items()}


def _as_arrays(tree, name, path=()):
    """Convert the filled tree to jax arrays, checking that no audjax variable was left empty."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out[k] = _as_arrays(v, name, path + (k,))
        elif v is None:
            raise KeyError(f"{name}: nothing in the ADLD layout fills {'/'.join(path + (k,))}")
        else:
            out[k] = jnp.asarray(v)
    return out


def _leaf_parent(tree, collection, path):
    node = tree[collection]
    for p in path[:-1]:
        node = node[p]
    return node


def _leaf(tree, collection, path):
    return _leaf_parent(tree, collection, path)[path[-1]]


def import_state_dicts(
    state_dicts: Mapping[str, Mapping[str, np.ndarray]], num_landmarks: int = 49, num_aus: int = 6,
    dtype=np.float32,
) -> dict[str, tuple[nn.Module, dict]]:
    """Map ADLD state dicts (numpy arrays) to `{name: (module, variables)}` for the given names.

    Names are ADLD's: base_net (E_f), land_enc (E_l), au_enc (E_au), invar_shape_enc (G_b),
    feat_gen (G_st), invar_shape_disc (D_l), feat_gen_disc_src / feat_gen_disc_tgt (D_s / D_t).
    Modules are at the paper's width; call them `module.apply(variables, *inputs, train=False)`.
    The variables have `dtype` (float64 needs `jax.enable_x64`, for exact comparisons).
    """
    unknown = sorted(set(state_dicts) - set(ADLD_NAMES))
    if unknown:
        raise KeyError(f"unknown ADLD network {unknown[0]!r}; expected some of {ADLD_NAMES}")
    return {
        name: _import_one(name, sd, num_landmarks, num_aus, dtype)
        for name, sd in state_dicts.items()
    }
