"""Building blocks shared by the networks: the 3x3 conv, norms, PReLU, pooling and CBAM.

Every network in docs/design.md §1 is a stack of `C3 -> norm -> PReLU` steps. The helpers here give
each layer an explicit, numbered name (`conv0`, `bn0`, `prelu0`, ...) so that parameter paths are
stable and readable: the ADLD importer and the phase-1 -> phase-2 transplant address layers by these
names.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from audjax.models import cpu_conv

# PyTorch's defaults, which ADLD and the paper train with (docs/design.md §1 notation).
BN_MOMENTUM = 0.9  # Flax convention: new = momentum * old + (1 - momentum) * batch
NORM_EPS = 1e-5
PRELU_INIT = 0.25


def channels(base: int, width: float) -> int:
    """Channel count of a layer that has `base` channels at the paper's size, scaled by `width`."""
    return max(1, int(round(base * width)))


def conv(features: int, kernel_size, strides=1, padding=0, name=None, **kwargs) -> nn.Conv:
    """`nn.Conv` computed by `cpu_conv.conv_general_dilated`: the CPU kernels where they are
    switched on and pay, XLA's convolution otherwise (the same variables either way)."""
    return nn.Conv(features, kernel_size, strides=strides, padding=padding, name=name,
                   conv_general_dilated=cpu_conv.conv_general_dilated, **kwargs)


def conv3(features: int, name: str, dtype=None) -> nn.Conv:
    """C3: 3x3 conv, stride 1, padding 1, with bias, computed in `dtype`."""
    return conv(features, (3, 3), strides=1, padding=1, name=name, dtype=dtype)


def prelu(name: str) -> nn.PReLU:
    """PReLU with one learnable slope for the whole layer, 0.25 at init (as torch.nn.PReLU())."""
    return nn.PReLU(negative_slope_init=PRELU_INIT, name=name)


def batch_norm(train: bool, name: str, dtype=None) -> nn.BatchNorm:
    """BN with PyTorch's constants. Flax computes the statistics in float32 whatever `dtype`
    (the output's) is, and keeps the running averages in float32."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=NORM_EPS, dtype=dtype,
        name=name
    )


def at_least_f32(x: jnp.ndarray) -> jnp.ndarray:
    """x in float32 if it is in a narrower float type (bfloat16), else unchanged: what every
    network returns, and what norm statistics are computed in."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def instance_norm(x: jnp.ndarray) -> jnp.ndarray:
    """IN without scale or bias (torch.nn.InstanceNorm2d defaults): per image and channel.
    Statistics in float32 (also for bfloat16 inputs); the result has x's dtype."""
    x32 = at_least_f32(x)
    mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jnp.reciprocal(jnp.sqrt(var + NORM_EPS))).astype(x.dtype)


def avg_pool2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 average pooling, stride 2 (odd sizes are floored, as in PyTorch)."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


def conv_stack(x, features, last_plain=False, dtype=None):
    """`len(features)` steps of C3 -> IN -> PReLU, layers named conv{i} and prelu{i}.

    Called inside a compact method, so the layers belong to the calling module (flat names).
    With `last_plain=True` the final conv has neither norm nor PReLU (D_l ends that way).
    Convolutions compute in `dtype`.
    """
    n = len(features)
    for i, f in enumerate(features):
        x = conv3(f, f"conv{i}", dtype)(x)
        if last_plain and i == n - 1:
            break
        x = prelu(f"prelu{i}")(instance_norm(x))
    return x


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018), as in its official code.

    Channel gate: a shared MLP (C -> C/16, ReLU, -> C) on the spatially average- and max-pooled
    vectors, summed, sigmoid. Spatial gate: concat(max over channels, mean over channels) ->
    7x7 conv without bias -> BN -> sigmoid.
    """

    reduction: int = 16
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        hidden = max(1, c // self.reduction)
        mlp_in = nn.Dense(hidden, dtype=self.dtype, name="mlp0")
        mlp_out = nn.Dense(c, dtype=self.dtype, name="mlp1")

        def mlp(v):
            return mlp_out(nn.relu(mlp_in(v)))

        gate = mlp(jnp.mean(x, axis=(1, 2))) + mlp(jnp.max(x, axis=(1, 2)))
        x = x * nn.sigmoid(gate)[:, None, None, :]

        pooled = jnp.concatenate(
            [jnp.max(x, axis=-1, keepdims=True), jnp.mean(x, axis=-1, keepdims=True)], axis=-1
        )
        s = conv(1, (7, 7), padding=3, use_bias=False, dtype=self.dtype,
                 name="spatial_conv")(pooled)
        s = batch_norm(train, "spatial_bn", self.dtype)(s)
        return x * nn.sigmoid(s)


def identity_kernel_init(key, shape, dtype=jnp.float32) -> jnp.ndarray:
    """Init for a 1x1 conv (1, 1, C_in, C_out) that starts as the identity map (C_in == C_out)."""
    del key
    if shape[0] != 1 or shape[1] != 1 or shape[2] != shape[3]:
        raise ValueError(f"identity init needs a square 1x1 kernel, got {shape}")
    return jnp.eye(shape[2], dtype=dtype)[None, None]

