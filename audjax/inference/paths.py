"""The prediction paths: what a trained model computes for a face, in evaluation mode.

Evaluation (`audjax.evaluate`), the `Detector` and the Fig. 1 figure all predict through here
(docs/design.md §3, "Evaluation"):

- source path, for lab-like faces: E_au(F), F = tanh(E_f(I));
- target path, for faces in the wild (ADLD's): E_au(G_st(E_l(F), G_b(F))), the face's own
  landmarks recombined with its own background, as E_au saw F_sltb in training;
- landmarks: the phase-1 landmark net, or E_f + the landmark head in phase 2; a model without a
  head (A) reads them off E_l's attention maps (`attention_landmarks`).

Every function here is pure and jittable; `images` are (B, S, S, 3) crops in [-1, 1].
"""

import jax
import jax.numpy as jnp

from audjax import losses, separation
from audjax.config import Config
from audjax.state import apply_net

PATHS = ("target", "source")


def evaluation_apply(nets, params, batch_stats) -> separation.Apply:
    """`separation.Apply` for networks in evaluation mode (batch norm with its running averages;
    stop-gradients change nothing here)."""

    def apply(name, *args, frozen=False):
        return apply_net(nets, name, params, batch_stats, *args, train=False)[0]

    return apply


def features(apply: separation.Apply, images):
    """F = tanh(E_f(I)), the shared features every path starts from."""
    return jnp.tanh(apply("E_f", images))


def predict_au(config: Config, nets, params, batch_stats, images, domain: str):
    """AU probabilities (B, K) through the source or the target path (module doc). The
    source-only model has no G_st and reads both domains the source way."""
    apply = evaluation_apply(nets, params, batch_stats)
    feats = features(apply, images)
    if domain == "target" and config.model != "source_only":
        attention, _, background = separation.separate(apply, feats)
        feats = separation.recombine(apply, attention, background)
    return jax.nn.sigmoid(apply("E_au", feats))


def predict_landmarks(nets, params, batch_stats, images):
    """(B, L, 2) crop-pixel landmarks from the landmark net (phase 1) or E_f + head (phase 2)."""
    apply = evaluation_apply(nets, params, batch_stats)
    if "landmark_net" in params:
        return apply("landmark_net", images)
    return apply("landmark", apply("E_f", images))  # the head reads E_f before its tanh


def attention_landmarks(attention, crop: int, shift_au_centres: bool):
    """Crop-pixel landmarks (B, L, 2) from E_l's attention maps (B, s, s, L): each map's
    expected position (soft-argmax), cell j standing for crop pixel j * crop / s, with ADLD's
    AU-centre shift undone when training applied it.

    Training taught map cell j to answer for crop pixel p with round(p / 4) = j
    (`losses.landmark_targets`), so cell j stands for pixel 4j, not for its receptive field's
    centre 4j + 1.5."""
    s = attention.shape[1]
    grid = jnp.arange(s, dtype=attention.dtype)
    x = jnp.einsum("bhwl,w->bl", attention, grid)
    y = jnp.einsum("bhwl,h->bl", attention, grid)
    points = jnp.stack([x, y], axis=-1) * (crop / s)
    if shift_au_centres:
        points = points.at[..., 1].add(-losses.au_centre_shift(points))
    return points


def predict_batch(config: Config, nets, networks, path: str, params, batch_stats, images):
    """What the `Detector` computes for a batch of crops: a dict with "probs" (B, K) when the
    model has E_au, "landmarks" (B, L, 2) in crop pixels when it finds them. `networks` are the
    names of the networks the model has."""
    out = {}
    if "E_au" in networks:
        out["probs"] = predict_au(config, nets, params, batch_stats, images, path)
    if "landmark_net" in networks or "landmark" in networks:
        out["landmarks"] = predict_landmarks(nets, params, batch_stats, images)
    elif "E_l" in networks:
        apply = evaluation_apply(nets, params, batch_stats)
        attention, _ = apply("E_l", features(apply, images))
        out["landmarks"] = attention_landmarks(attention, config.crop, config.shift_au_centres)
    return out
