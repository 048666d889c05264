"""Losses and landmark metrics of the paper and of ADLD (docs/design.md §2-4), as pure functions.

Shapes: landmarks are (B, L, 2) with (x, y) in crop pixels; landmark maps are (B, s, s, L), NHWC,
with s = crop / 4; a landmark's class index on such a map is `y * s + x`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from audjax.labels import UNKNOWN
from audjax.landmarks import LEFT_EYE, RIGHT_EYE

# ---------------------------------------------------------------------------------------------
# Landmark regression (the landmark net's L_fl) and its metric.
# ---------------------------------------------------------------------------------------------


def inter_ocular(landmarks):
    """(B, L, 2) -> (B,): distance between the two eye centres (each the mean of six points)."""
    left = jnp.mean(landmarks[:, LEFT_EYE], axis=1)
    right = jnp.mean(landmarks[:, RIGHT_EYE], axis=1)
    return jnp.linalg.norm(left - right, axis=-1)


def landmark_regression_loss(pred, target):
    """L_fl (paper eq. 1, without its typo'd minus sign).

    Per image: sum over landmarks of the squared error, divided by 2 d^2 with d the ground truth's
    inter-ocular distance; averaged over the batch.
    """
    d = inter_ocular(target)
    sq = jnp.sum(jnp.square(pred - target), axis=(1, 2))
    return jnp.mean(sq / (2.0 * jnp.square(d)))


def nme(pred, target):
    """(B,) normalised mean error: mean point-to-point error / inter-ocular distance, per image."""
    err = jnp.mean(jnp.linalg.norm(pred - target, axis=-1), axis=1)
    return err / inter_ocular(target)


# ---------------------------------------------------------------------------------------------
# Landmark maps: targets for E_l (L_l) and D_l.
# ---------------------------------------------------------------------------------------------

# ADLD moves some landmark targets towards AU centres (0-based 49-point indices, y only), by a
# multiple of `ruler` = |x[22] - x[25]| (the distance between the inner eye corners).
AU_CENTRE_SHIFTS = (
    ((4, 5, 15, 17), -1 / 2),
    ((1, 8), -1 / 3),
    ((2, 7), 1 / 3),
    ((24, 29), 1.0),
    ((39, 41), 1 / 2),
)


def au_centre_shift(points):
    """ADLD's shift of some landmarks towards AU centres: the y offsets (B, L) of (B, L, 2) points.

    They are multiples of ruler = |x[22] - x[25]| (`AU_CENTRE_SHIFTS`), so they hold in any unit
    (crop or map pixels) and leave points 22 and 25, hence the ruler, where they are.
    """
    ruler = jnp.abs(points[:, 22, 0] - points[:, 25, 0])
    dy = jnp.zeros(points.shape[:2], points.dtype)
    for idx, factor in AU_CENTRE_SHIFTS:
        dy = dy.at[:, list(idx)].set(factor * ruler[:, None])
    return dy


def landmark_targets(landmarks, crop: int, map_size: int, shift_to_au_centres: bool = True):
    """Class indices `y * s + x` of landmarks on the s x s map: (B, L, 2) crop pixels -> (B, L).

    As ADLD: scale to map coordinates, optionally shift the AU-centre points, round (half to
    even, like np.around), clip to the map.
    """
    pts = jnp.asarray(landmarks) * (map_size / crop)
    if shift_to_au_centres:
        pts = pts.at[..., 1].add(au_centre_shift(pts))
    pts = jnp.clip(jnp.round(pts), 0, map_size - 1).astype(jnp.int32)
    return pts[..., 1] * map_size + pts[..., 0]


def _flat_maps(maps):
    """(B, s, s, L) -> (B, L, s*s): one row of positions per landmark."""
    b, h, w, n = maps.shape
    return jnp.transpose(maps.reshape(b, h * w, n), (0, 2, 1))


def landmark_softmax_loss(logits, target_idx):
    """L_l term: softmax cross-entropy of each landmark's map over the s*s positions, mean over
    landmarks and batch. logits (B, s, s, L), target_idx (B, L) int."""
    return jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(_flat_maps(logits), target_idx)
    )


def landmark_discriminator_loss(d_out, target_idx):
    """L_Dl: MSE between D_l's maps (B, s, s, L) and the one-hot landmark maps, mean over all."""
    flat = _flat_maps(d_out)
    one_hot = jax.nn.one_hot(target_idx, flat.shape[-1], dtype=flat.dtype)
    return jnp.mean(jnp.square(flat - one_hot))


def landmark_adversarial_loss(d_out):
    """L_adl term: MSE between D_l's maps and the uniform 1/(s*s): backgrounds carry no landmark."""
    s2 = d_out.shape[1] * d_out.shape[2]
    return jnp.mean(jnp.square(d_out - 1.0 / s2))


# ---------------------------------------------------------------------------------------------
# Domain discriminators (LSGAN) and reconstruction.
# ---------------------------------------------------------------------------------------------


def lsgan_loss(pred, target: float):
    """Least-squares GAN term: MSE between discriminator outputs and a constant (1 real, 0 fake)."""
    return jnp.mean(jnp.square(pred - target))


def l1_loss(x, y):
    """Mean absolute difference over batch, positions and channels (torch.nn.L1Loss)."""
    return jnp.mean(jnp.abs(x - y))


def alignment_loss(pairs: Sequence[tuple[jnp.ndarray, jnp.ndarray]]):
    """L_c (paper eq. 2): sum over pairs of L1(projected reconstruction, stop_gradient(target)).

    The projectors P_i are applied by the caller; the target side never receives a gradient
    (docs/design.md §4: a learnable map on both sides could collapse the loss to zero).
    """
    return sum(l1_loss(recon, jax.lax.stop_gradient(target)) for recon, target in pairs)


# ---------------------------------------------------------------------------------------------
# AU detection.
# ---------------------------------------------------------------------------------------------


def weighted_bce(logits, labels, weights):
    """BCE_w: sigmoid cross-entropy weighted per AU, labels 999 masked out.

    logits (B, K), labels (B, K) in {0, 1, 999}, weights (K,). The mean is over the labelled
    entries, so without unknown labels this equals torch's BCEWithLogitsLoss(weight=weights).
    """
    mask = (labels != UNKNOWN).astype(logits.dtype)
    targets = jnp.where(labels == 1, 1.0, 0.0).astype(logits.dtype)
    per = optax.sigmoid_binary_cross_entropy(logits, targets) * weights * mask
    return jnp.sum(per) / jnp.maximum(jnp.sum(mask), 1.0)
