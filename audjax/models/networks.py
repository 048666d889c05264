"""The networks of the paper (docs/design.md §1), as Flax Linen modules. NHWC throughout.

Names follow the paper (Fig. 1):

- `FeatureExtractor` is E_f, the shared face feature extractor, and also parts 1-2 of the
  phase-1 landmark net: one class, so that the phase-1 variables copy into E_f one to one.
- `LandmarkHead` is parts 3-5 + CBAM + two dense layers of the landmark net; `LandmarkNet` is the
  whole phase-1 landmark detector (parts 1-2 followed by the head).
- `LandmarkEncoder` is E_l (landmark-related features, as per-landmark attention maps).
- `BackgroundEncoder` is G_b (landmark-free "background" features).
- `FeatureGenerator` is G_st (recombines landmark attention and background into features).
- `LandmarkDiscriminator` is D_l (looks for landmarks in background features).
- `DomainDiscriminator` is D_d (real vs recombined features; one per domain, D_s and D_t).
- `AUDetector` is E_au (one branch per AU, computed as one batched op).
- `Projector` is P_i (feature alignment, §2.4 of the paper).

Widths scale with `width` (1.0 = the paper). `s` = crop / 4 is the feature map size.

Mixed precision: each network computes its convolutions and matmuls in `dtype` (None: the
dtype of its inputs and variables, float32; or bfloat16 with `--compute_dtype`), while its
parameters stay float32 (Flax's `param_dtype`), norm statistics are computed in float32, and its
outputs are float32 (`at_least_f32`), so every loss and every softmax reads float32.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from audjax.landmarks import NUM_LANDMARKS
from audjax.models import cpu_conv
from audjax.models.layers import (
    CBAM,
    PRELU_INIT,
    at_least_f32,
    avg_pool2,
    batch_norm,
    channels,
    conv,
    conv3,
    conv_stack,
    identity_kernel_init,
    instance_norm,
    prelu,
)


def feature_channels(width: float) -> int:
    """Channels of E_f's output, which every later module reads and writes (64 in the paper)."""
    return channels(64, width)


class FeatureExtractor(nn.Module):
    """E_f = parts 1-2 of the landmark net: 2x [C3 BN PReLU, C3 BN PReLU, Pool] -> (B, s, s, 64).

    With `tanh=True` (E_f) the output passes through tanh, as in ADLD's base network; the landmark
    net uses the same class with `tanh=False`. The parameters are identical either way.
    """

    width: float = 1.0
    tanh: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, image, train: bool = False):
        c32, c64 = channels(32, self.width), channels(64, self.width)
        x = image
        for i, f in enumerate((c32, c32, c64, c64)):
            x = conv3(f, f"conv{i}", self.dtype)(x)
            x = batch_norm(train, f"bn{i}", self.dtype)(x)
            x = prelu(f"prelu{i}")(x)
            if i % 2 == 1:
                x = avg_pool2(x)
        x = at_least_f32(x)
        return jnp.tanh(x) if self.tanh else x


class LandmarkHead(nn.Module):
    """Parts 3-5 of the landmark net, CBAM, Dense(512) PReLU, Dense(2L) -> (B, L, 2) crop pixels.

    Reads parts 1-2's output before tanh. The last dense layer predicts each coordinate relative
    to the crop centre in units of half the crop (decision: a fresh head then starts at the centre
    with O(1) outputs); the module returns crop pixels.
    """

    width: float = 1.0
    num_landmarks: int = NUM_LANDMARKS
    dtype: Any = None

    @nn.compact
    def __call__(self, features, train: bool = False):
        crop = 4 * features.shape[1]
        x = features
        layer = 0
        for base in (128, 256, 256):
            for _ in range(2):
                x = conv3(channels(base, self.width), f"conv{layer}", self.dtype)(x)
                x = batch_norm(train, f"bn{layer}", self.dtype)(x)
                x = prelu(f"prelu{layer}")(x)
                layer += 1
            x = avg_pool2(x)
        x = CBAM(dtype=self.dtype, name="cbam")(x, train)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(channels(512, self.width), dtype=self.dtype, name="fc0")(x)
        x = prelu("prelu_fc0")(x)
        x = nn.Dense(2 * self.num_landmarks, dtype=self.dtype, name="fc1")(x)
        x = at_least_f32(x)
        return (crop / 2) * (1.0 + x.reshape(x.shape[0], self.num_landmarks, 2))


class LandmarkNet(nn.Module):
    """The phase-1 landmark detector: parts 1-2 (`parts12`), then `head`: (B,S,S,3) -> (B,L,2)."""

    width: float = 1.0
    num_landmarks: int = NUM_LANDMARKS
    dtype: Any = None

    @nn.compact
    def __call__(self, image, train: bool = False):
        x = FeatureExtractor(self.width, tanh=False, dtype=self.dtype, name="parts12")(image,
                                                                                     train)
        return LandmarkHead(self.width, self.num_landmarks, self.dtype, name="head")(x, train)


def spatial_softmax(logits):
    """Softmax of each landmark's map over the s*s positions: (B,s,s,L) -> (B,s,s,L)."""
    b, h, w, n = logits.shape
    return jax.nn.softmax(logits.reshape(b, h * w, n), axis=1).reshape(b, h, w, n)


class LandmarkEncoder(nn.Module):
    """E_l: 4x [C3 IN PReLU], tanh, C3(64 -> L). Returns (attention, logits), each (B,s,s,L).

    `attention` is each landmark's logits softmaxed over the positions (F_sl / F_tl of the paper).
    """

    width: float = 1.0
    num_landmarks: int = NUM_LANDMARKS
    dtype: Any = None

    @nn.compact
    def __call__(self, features, train: bool = False):
        c = feature_channels(self.width)
        x = conv_stack(features, (c, c, c, c), dtype=self.dtype)
        logits = conv3(self.num_landmarks, "conv4", self.dtype)(jnp.tanh(x))
        logits = at_least_f32(logits)
        return spatial_softmax(logits), logits


class BackgroundEncoder(nn.Module):
    """G_b: 4x [C3 IN PReLU], tanh -> background features (B,s,s,64) (F_sb / F_tb)."""

    width: float = 1.0
    dtype: Any = None

    @nn.compact
    def __call__(self, features, train: bool = False):
        c = feature_channels(self.width)
        x = conv_stack(features, (c, c, c, c), dtype=self.dtype)
        return jnp.tanh(at_least_f32(x))


class FeatureGenerator(nn.Module):
    """G_st: concat(sum of the L attention maps, background) -> 5x [C3 IN PReLU] (128, 128, 64,
    64, 64 channels), tanh -> features (B,s,s,64)."""

    width: float = 1.0
    dtype: Any = None

    @nn.compact
    def __call__(self, attention, background, train: bool = False):
        c64, c128 = feature_channels(self.width), channels(128, self.width)
        x = jnp.concatenate([jnp.sum(attention, axis=-1, keepdims=True), background], axis=-1)
        x = conv_stack(x, (c128, c128, c64, c64, c64), dtype=self.dtype)
        return jnp.tanh(at_least_f32(x))


class LandmarkDiscriminator(nn.Module):
    """D_l: 4x [C3 IN PReLU], C3(64 -> L) -> (B,s,s,L) landmark maps found in a background."""

    width: float = 1.0
    num_landmarks: int = NUM_LANDMARKS
    dtype: Any = None

    @nn.compact
    def __call__(self, background, train: bool = False):
        c = feature_channels(self.width)
        feats = (c, c, c, c, self.num_landmarks)
        x = conv_stack(background, feats, last_plain=True, dtype=self.dtype)
        return at_least_f32(x)


class DomainDiscriminator(nn.Module):
    """D_d (LSGAN): 3x [Conv4x4 s2 p1, IN, PReLU], Conv4x4 s2 p0, PReLU, Conv1x1 -> (B, 1).

    Decision (docs/design.md §1): the fourth conv pads by 1 when its input is under 4x4, and
    whatever positions remain are averaged before the 1x1 conv, so every crop from 64 up works; at
    the paper's s = 44 the map is already 1x1 there and this is ADLD's network exactly.
    """

    width: float = 1.0
    dtype: Any = None

    @nn.compact
    def __call__(self, features, train: bool = False):
        c64, c128 = channels(64, self.width), channels(128, self.width)
        x = features
        for i, f in enumerate((c64, c64, c128)):
            x = conv(f, (4, 4), strides=2, padding=1, dtype=self.dtype, name=f"conv{i}")(x)
            x = prelu(f"prelu{i}")(instance_norm(x))
        pad = 1 if min(x.shape[1], x.shape[2]) < 4 else 0
        x = prelu("prelu3")(conv(c128, (4, 4), strides=2, padding=pad, dtype=self.dtype,
                                 name="conv3")(x))
        x = jnp.mean(at_least_f32(x), axis=(1, 2), keepdims=True)
        x = conv(1, (1, 1), dtype=self.dtype, name="conv4")(x)
        return at_least_f32(x.reshape(x.shape[0], 1))


class GroupedConv3(nn.Module):
    """K independent 3x3 convs (stride 1, padding 1) on K channel groups, as one operation.

    Input (B, H, W, K*C_in) holds group k in channels [k*C_in, (k+1)*C_in); kernel
    (3, 3, C_in, K*C_out) holds group k's kernel in output channels [k*C_out, (k+1)*C_out).
    With `shared_input` the input is (B, H, W, C_in) and every group reads all of it (one plain
    conv with K*C_out outputs). The grouped convolution is `feature_group_count=K`; where
    `cpu_conv` is on, it computes the groups as K plain convolutions, which XLA:CPU runs much
    faster than its grouped one.
    """

    groups: int
    features: int  # per group
    shared_input: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        k = self.groups
        cin = x.shape[-1] if self.shared_input else x.shape[-1] // k
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (3, 3, cin, k * self.features))
        bias = self.param("bias", nn.initializers.zeros, (k * self.features,))
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = cpu_conv.conv_general_dilated(
            x, kernel, window_strides=(1, 1), padding=((1, 1), (1, 1)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=1 if self.shared_input else k)
        return y + bias


class GroupedPReLU(nn.Module):
    """PReLU with one slope per channel group (per AU branch), 0.25 at init."""

    groups: int

    @nn.compact
    def __call__(self, x):
        slope = self.param("negative_slope", nn.initializers.constant(PRELU_INIT),
                           (self.groups,))
        per_channel = jnp.repeat(slope, x.shape[-1] // self.groups).astype(x.dtype)
        return jnp.where(x >= 0, x, per_channel * x)


class AUDetector(nn.Module):
    """E_au: `num_aus` independent branches, each 3x [C3 BN PReLU], C3, global average pool,
    Dense(64 -> 1), run as one network over K channel groups -> logits (B, K).

    Branch k owns channel group k of every layer (see `GroupedConv3`); batch norm is per
    channel, so each branch keeps its own statistics, exactly as six separate modules would.
    The first conv reads the shared input, so it is one plain conv with K*64 outputs. The K
    final Dense(64 -> 1) layers (a few hundred multiply-adds) read the pooled features in
    float32.
    """

    width: float = 1.0
    num_aus: int = 6
    dtype: Any = None

    @nn.compact
    def __call__(self, features, train: bool = False):
        k, c = self.num_aus, feature_channels(self.width)
        x = features
        for i in range(4):
            x = GroupedConv3(k, c, shared_input=i == 0, dtype=self.dtype, name=f"conv{i}")(x)
            if i < 3:
                x = batch_norm(train, f"bn{i}", self.dtype)(x)
                x = GroupedPReLU(k, name=f"prelu{i}")(x)
        pooled = jnp.mean(at_least_f32(x), axis=(1, 2)).reshape(x.shape[0], k, c)
        kernel = self.param("fc_kernel", nn.initializers.lecun_normal(), (c, k))
        bias = self.param("fc_bias", nn.initializers.zeros, (k,))
        return jnp.einsum("bkc,ck->bk", pooled, kernel) + bias


class Projector(nn.Module):
    """P_i: a 1x1 conv, initialised to the identity, applied to a reconstructed feature."""

    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        y = conv(x.shape[-1], (1, 1), kernel_init=identity_kernel_init, dtype=self.dtype,
                 name="conv")(x)
        return at_least_f32(y)


class Projectors(nn.Module):
    """The six P_i of L_c, one per aligned pair (docs/design.md §4), keyed by the target's name."""

    names: tuple[str, ...] = ("F_s", "F_t", "A_s", "B_s", "A_t", "B_t")
    dtype: Any = None

    @nn.compact
    def __call__(self, features: dict, train: bool = False):
        del train  # no batch statistics; the argument keeps the calling convention uniform
        return {n: Projector(self.dtype, name=n)(features[n]) for n in self.names}
