"""Every loss against a NumPy reference written from docs/design.md §2-4 (or a hand-worked case)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audjax import labels as labels_lib
from audjax import losses

RNG = np.random.default_rng(0)
B, S, L, K = 3, 8, 49, 6


def np_inter_ocular(lm):
    return np.linalg.norm(lm[:, 19:25].mean(1) - lm[:, 25:31].mean(1), axis=-1)


def test_landmark_regression_loss_and_nme():
    target = RNG.uniform(0, 64, (B, L, 2)).astype(np.float32)
    pred = target + RNG.normal(0, 2, target.shape).astype(np.float32)
    d = np_inter_ocular(target)
    ref = np.mean([((pred[b] - target[b]) ** 2).sum() / (2 * d[b] ** 2) for b in range(B)])
    np.testing.assert_allclose(losses.landmark_regression_loss(pred, target), ref, rtol=1e-5)
    ref_nme = np.array([np.linalg.norm(pred[b] - target[b], axis=1).mean() / d[b]
                        for b in range(B)])
    np.testing.assert_allclose(losses.nme(pred, target), ref_nme, rtol=1e-5)


def test_nme_hand_worked():
    """Eyes 10 px apart, every point off by (3, 4): NME = 5 / 10."""
    target = np.zeros((1, L, 2), np.float32)
    target[0, 25:31, 0] = 10.0
    np.testing.assert_allclose(losses.nme(target + np.array([3.0, 4.0]), target), [0.5],
                               rtol=1e-6)


def np_log_softmax(x, axis):
    x = x - x.max(axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis, keepdims=True))


def test_landmark_softmax_loss():
    logits = RNG.normal(0, 2, (B, S, S, L)).astype(np.float32)
    idx = RNG.integers(0, S * S, (B, L))
    flat = logits.reshape(B, S * S, L)
    logp = np_log_softmax(flat, 1)
    ref = -np.mean([logp[b, idx[b, i], i] for b in range(B) for i in range(L)])
    np.testing.assert_allclose(losses.landmark_softmax_loss(logits, idx), ref, rtol=1e-5)


def test_landmark_discriminator_and_adversarial_loss():
    d_out = RNG.normal(0, 1, (B, S, S, L)).astype(np.float32)
    idx = RNG.integers(0, S * S, (B, L))
    one_hot = np.zeros((B, S * S, L), np.float32)
    for b in range(B):
        for i in range(L):
            one_hot[b, idx[b, i], i] = 1.0
    flat = d_out.reshape(B, S * S, L)
    np.testing.assert_allclose(losses.landmark_discriminator_loss(d_out, idx),
                               np.mean((flat - one_hot) ** 2), rtol=1e-5)
    np.testing.assert_allclose(losses.landmark_adversarial_loss(d_out),
                               np.mean((d_out - 1 / (S * S)) ** 2), rtol=1e-5)


def np_landmark_targets(lm, crop, s, shift):
    """ADLD's land_transform, per image, on (x, y) pairs."""
    out = np.zeros(lm.shape[:2], np.int64)
    for b in range(lm.shape[0]):
        p = lm[b] * s / crop
        if shift:
            ruler = abs(p[22, 0] - p[25, 0])
            for i, f in [(4, -.5), (5, -.5), (1, -1 / 3), (8, -1 / 3), (2, 1 / 3), (7, 1 / 3),
                         (24, 1), (29, 1), (15, -.5), (17, -.5), (39, .5), (41, .5)]:
                p[i, 1] += f * ruler
        p = np.clip(np.around(p), 0, s - 1).astype(int)
        out[b] = p[:, 1] * s + p[:, 0]
    return out


@pytest.mark.parametrize("shift", [True, False])
def test_landmark_targets(shift):
    lm = RNG.uniform(-5, 70, (B, L, 2)).astype(np.float32)
    got = losses.landmark_targets(jnp.asarray(lm), crop=64, map_size=16, shift_to_au_centres=shift)
    np.testing.assert_array_equal(got, np_landmark_targets(lm.astype(np.float64), 64, 16, shift))


def test_landmark_targets_hand_worked():
    """A point at crop pixel (10, 20) on a 64 -> 16 map is cell (2.5 -> 2, 5): index 5*16 + 2."""
    lm = np.full((1, L, 2), 32.0, np.float32)
    lm[0, 0] = (10.0, 20.0)
    got = losses.landmark_targets(lm, 64, 16, shift_to_au_centres=False)
    assert int(got[0, 0]) == 5 * 16 + 2


def test_lsgan_and_l1():
    x = RNG.normal(size=(B, 1)).astype(np.float32)
    np.testing.assert_allclose(losses.lsgan_loss(x, 1.0), np.mean((x - 1) ** 2), rtol=1e-6)
    y = RNG.normal(size=(B, S, S, 4)).astype(np.float32)
    z = RNG.normal(size=(B, S, S, 4)).astype(np.float32)
    np.testing.assert_allclose(losses.l1_loss(y, z), np.abs(y - z).mean(), rtol=1e-6)


def test_alignment_loss_value_and_stop_gradient():
    pairs = [(RNG.normal(size=(B, S, S, c)).astype(np.float32),
              RNG.normal(size=(B, S, S, c)).astype(np.float32)) for c in (4, 4, L, 4, L, 4)]
    ref = sum(np.abs(a - b).mean() for a, b in pairs)
    np.testing.assert_allclose(losses.alignment_loss(pairs), ref, rtol=1e-5)
    grads = jax.grad(lambda ps: losses.alignment_loss(ps))(
        [(jnp.asarray(a), jnp.asarray(b)) for a, b in pairs])
    for g_recon, g_target in grads:
        assert np.abs(g_recon).sum() > 0
        assert np.abs(g_target).sum() == 0


def np_bce(logits, labels, w):
    p = 1 / (1 + np.exp(-logits))
    per = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)) * w
    return per


def test_weighted_bce_masks_999():
    logits = RNG.normal(size=(4, K)).astype(np.float32)
    labels = RNG.integers(0, 2, (4, K))
    labels[1, 2] = labels[3, 0] = 999
    w = RNG.uniform(0.5, 2, K).astype(np.float32)
    mask = labels != 999
    per = np_bce(logits.astype(np.float64), np.where(mask, labels, 0), w)
    ref = per[mask].sum() / mask.sum()
    np.testing.assert_allclose(losses.weighted_bce(logits, labels, w), ref, rtol=1e-5)
    # Without unknown labels it is torch's BCEWithLogitsLoss(weight=w): a plain mean.
    labels2 = np.where(mask, labels, 1)
    ref2 = np_bce(logits.astype(np.float64), labels2, w).mean()
    np.testing.assert_allclose(losses.weighted_bce(logits, labels2, w), ref2, rtol=1e-5)


def test_au_weights_hand_worked_and_999():
    labels = np.array([[1, 1], [0, 0], [1, 999], [0, 999]])  # rates 0.5 and 0.5 -> equal
    np.testing.assert_allclose(labels_lib.au_weights(labels), [1.0, 1.0])
    labels = np.array([[1, 1], [1, 0], [0, 0], [0, 0]])  # rates 0.5, 0.25 -> 2/3, 4/3
    np.testing.assert_allclose(labels_lib.au_weights(labels), [2 / 3, 4 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[1\]"):
        labels_lib.au_weights(np.array([[1, 0], [0, 999]]))
