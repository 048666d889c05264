"""Building blocks shared by the networks: the 3x3 conv, norms, PReLU, pooling and CBAM.

Every network in docs/design.md §1 is a stack of `C3 -> norm -> PReLU` steps. The helpers here give
each layer an explicit, numbered name (`conv0`, `bn0`, `prelu0`, ...) so that parameter paths are
stable and readable: the ADLD importer and the phase-1 -> phase-2 transplant address layers by these
names.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# PyTorch's defaults, which ADLD and the paper train with (docs/design.md §1 notation).
BN_MOMENTUM = 0.9  # Flax convention: new = momentum * old + (1 - momentum) * batch
NORM_EPS = 1e-5
PRELU_INIT = 0.25


def channels(base: int, width: float) -> int:
    """Channel count of a layer that has `base` channels at the paper's size, scaled by `width`."""
    return max(1, int(round(base * width)))


# ---------------------------------------------------------------------------------------------
# Convolution: Winograd for the large 3x3 layers, the kernel gradient as one matmul for others.
# ---------------------------------------------------------------------------------------------


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
    """`lax.conv_general_dilated` for NHWC inputs and HWIO kernels (what `nn.Conv` passes, via
    its `conv_general_dilated` field), with faster forms of the large convolutions on CPU.

    Large float32 3x3 convolutions (stride 1, padding 1: every C3 of the paper's size) run as
    Winograd F(2x2, 3x3) or F(4x4, 3x3) (`winograd_conv3x3`), whose forward pass and both
    gradients are matmuls with 2.25x or 4x fewer multiplications than the direct convolution.

    XLA:CPU lowers a convolution's kernel gradient to a convolution whose window is the whole
    output map, and runs it 2-4x slower than the forward convolution once the map and the
    channel counts are large: at the paper's size such convolutions took 57% of the joint step.
    The kernel gradient is a contraction of the input's patches with the output's gradient over
    batch and positions, so for those layers it is computed as that: the patches (im2col, pure
    data movement) and one matmul, which XLA runs near the machine's matmul rate. The forward
    convolution and the input gradient stay XLA's. Small layers (crop 64 at width 0.25, the
    strided 4x4 convolutions of D_s and D_t) keep XLA's kernel gradient, which is faster there
    (`_matmul_pays`), and so do other backends (cuDNN's is fast; im2col would cost memory).
    """
    plain = (all(d == 1 for d in (lhs_dilation or (1,))) and all(d == 1 for d in (rhs_dilation
             or (1,))) and feature_group_count == 1 and not isinstance(padding, str))
    if not (plain and _matmul_pays(lhs.shape, rhs.shape, window_strides, padding)):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision)
    if dimension_numbers is not None:
        dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        if dn != nhwc:
            raise ValueError(f"conv_general_dilated: NHWC / HWIO only, got {dimension_numbers}")
    padding = tuple(tuple(p) for p in padding)
    if _winograd_pays(lhs, rhs, padding):
        return winograd_conv3x3(lhs, rhs)
    return _conv(lhs, rhs, tuple(window_strides), padding)


# A stride-1 convolution gets the matmul kernel gradient on CPU when output positions x C_in x
# C_out reaches this. Measured per layer (forward + both gradients, batch 16, 2-core EPYC):
# 44^2 x 64 -> 64 (7.9M) 0.56x XLA's time, 88^2 x 32 -> 64 (16M) 0.44x, 176^2 x 32 -> 32 (32M)
# 0.76x, 22^2 x 128 -> 256 (16M) 0.60x, 176^2 x 3 -> 32 (3M) 0.84x; but 32^2 x 32 -> 32 (1M)
# 1.2x, 16^2 x 33 -> 32 (0.27M) 2.5x, 64^2 x 8 -> 8 (0.26M) 3.5x; strided 4x4 convs 1.3-1.6x.
_MATMUL_KERNEL_GRAD_MIN = 2**21


def _matmul_pays(lhs_shape, rhs_shape, strides, padding) -> bool:
    if jax.default_backend() != "cpu" or any(s != 1 for s in strides):
        return False
    (kh, kw, cin, cout), (_, h, w, _) = rhs_shape, lhs_shape
    positions = ((h + sum(padding[0]) - kh + 1) * (w + sum(padding[1]) - kw + 1))
    return positions * cin * cout >= _MATMUL_KERNEL_GRAD_MIN


# Winograd needs a few input channels to pay for its transforms. Forward + both gradients,
# batch 16, 2-core EPYC, against the path below: 176^2 x 32 -> 32 0.50x the time, 88^2 x
# 64 -> 64 0.88x, 44^2 x 64 -> 384 0.52x, 44^2 x 128 -> 128 0.52x, 176^2 x 8 -> 32 0.82x; but
# 176^2 x 3 -> 32 (E_f's first layer) 1.5x.
_WINOGRAD_MIN_CIN = 8


def _winograd_pays(lhs, rhs, padding) -> bool:
    """On CPU (`_matmul_pays` holds), float32 3x3 stride-1 convolutions with padding 1 and at
    least `_WINOGRAD_MIN_CIN` input channels. bfloat16 keeps the direct convolution: the
    transforms' sums would round in bfloat16."""
    return (rhs.shape[:2] == (3, 3) and padding == ((1, 1), (1, 1))
            and rhs.shape[2] >= _WINOGRAD_MIN_CIN
            and lhs.dtype == rhs.dtype == jnp.float32)


_NHWC = ("NHWC", "HWIO", "NHWC")


class WinogradTiles(NamedTuple):
    """Winograd F(m x m, 3 x 3) (Lavin & Gray, "Fast algorithms for convolutional neural
    networks", CVPR 2016): an m x m output tile of a 3x3 correlation is A^T [(G g G^T) *
    (B^T d B)] A, where d is the (m + 2) x (m + 2) input tile under it and g the 3x3 kernel."""

    m: int
    bt: tuple  # B^T, (m + 2) x (m + 2)
    g: tuple  # G, (m + 2) x 3
    at: tuple  # A^T, m x (m + 2)


F2 = WinogradTiles(2, bt=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
                   g=((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
                   at=((1, 1, 1, 0), (0, 1, -1, -1)))
# Interpolation points 0, +-1, +-2 and infinity (Lavin & Gray's F(4x4, 3x3)).
F4 = WinogradTiles(4, bt=((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
                          (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
                   g=((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
                      (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
                   at=((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0),
                       (0, 1, -1, 8, -8, 1)))

# F(4x4) for layers with at least this many input channels and at most twice as many outputs;
# F(2x2) for the rest. Forward and both gradients, batch 16, 2-core EPYC, F(4x4)'s time over
# F(2x2)'s: 44^2 x 64 -> 64 0.91, 64 -> 49 0.83, 65 -> 128 0.92, 128 -> 128 0.86, 88^2 x 64 -> 64
# 0.93; but 44^2 x 64 -> 384 (E_au's first layer) 1.23, where F(4x4)'s input gradient, a
# convolution of the 384-channel output gradient, costs more than F(2x2)'s, which reuses dM;
# and 176^2 x 32 -> 32 1.20. Compiling a layer takes 2-4x longer with F(4x4) (36 transform
# fusions, each a larger expression than F(2x2)'s 16).
_WINOGRAD_F4_MIN_CIN = 64


def _winograd_tiles(kernel_shape) -> WinogradTiles:
    cin, cout = kernel_shape[2:]
    return F4 if _WINOGRAD_F4_MIN_CIN <= cin and cout <= 2 * cin else F2


def _combine(coefs, terms):
    """sum_i coefs[i] * terms[i], skipping zeros: the transforms are sums of a few terms with
    small coefficients, which XLA fuses into the slicing around them."""
    out = None
    for c, t in zip(coefs, terms, strict=True):
        if c != 0:
            t = t if c == 1 else -t if c == -1 else c * t
            out = t if out is None else out + t
    return out


def winograd_conv3x3(x, kernel):
    """3x3 convolution, stride 1, zero padding 1, NHWC x HWIO -> NHWC, by Winograd: F(4x4, 3x3)
    or F(2x2, 3x3), whichever is faster for the layer's channel counts (`_winograd_tiles`).

    The map is cut into m x m output tiles (sizes that m does not divide padded and cropped
    back). Each of the (m + 2)^2 positions of the transformed input tiles is one matmul
    (tiles x C_in) @ (C_in x C_out): per output position 2.25 (F(4x4)) or 4 (F(2x2))
    multiplications per input and output channel instead of the direct convolution's 9. The
    kernel gradient runs the algorithm backwards from the output gradient's transform
    dM = A dY A^T: the same matmuls V^T dM, contracted over tiles. F(2x2)'s input gradient is
    dM U^T taken back through the transposed input transform (`_winograd_input_transpose`);
    F(4x4)'s is a second F(4x4) convolution, of the output gradient with the kernel turned by
    180 degrees, because XLA:CPU fuses F(4x4)'s transposed transform, whose tiles overlap
    less regularly, into one slow loop (54 of 71 ms at 44^2 x 64 -> 64). The positions stay
    separate arrays (stacking them would cost XLA:CPU a copy of the transformed input).
    Rounding differs from the direct convolution's: in float32 by about 3e-7 of the largest
    output for F(2x2) and 8e-6 for F(4x4), whose transforms have larger coefficients.
    """
    if _winograd_tiles(kernel.shape) is F4:
        return _winograd_conv_f4(x, kernel)
    return _winograd_conv(x, kernel)


def _tiles(h, w, m):
    return -(-h // m), -(-w // m)


def _winograd_input(x, t=F2):
    """B^T d B for every input tile d: (m + 2)^2 arrays (tiles, C), one per transformed
    position. Tile (i, j) is xp[m i : m i + m + 2, m j : m j + m + 2] of the zero-padded map;
    rows first, then columns."""
    n, h, w, c = x.shape
    m, a = t.m, t.m + 2
    th, tw = _tiles(h, w, m)
    xp = jnp.pad(x, ((0, 0), (1, 1 + m * th - h), (1, 1 + m * tw - w), (0, 0)))
    rows = [xp[:, r:r + m * th:m] for r in range(a)]
    v = []
    for bt_row in t.bt:
        combined = _combine(bt_row, rows)
        cols = [combined[:, :, s:s + m * tw:m] for s in range(a)]
        v += [_combine(bt_col, cols).reshape(n * th * tw, c) for bt_col in t.bt]
    return v


def _winograd_kernel(kernel, t=F2):
    """G g G^T for the 3x3 kernel g: ((m + 2)^2, C_in, C_out)."""
    g = jnp.asarray(t.g, kernel.dtype)
    return jnp.einsum("ar,rsio,bs->abio", g, kernel, g).reshape(-1, *kernel.shape[2:])


def _winograd_output(m, shape, t=F2):
    """A^T M A for every tile from the (m + 2)^2 products (tiles, C_out), each tile's m x m
    outputs put back in place: (n, h, w, C_out)."""
    n, h, w = shape
    a = t.m + 2
    th, tw = _tiles(h, w, t.m)
    m = [p.reshape(n, th, tw, -1) for p in m]
    m_rows = [[_combine(at_row, m[b::a]) for b in range(a)] for at_row in t.at]
    y = jnp.stack([jnp.stack([_combine(at_col, mr) for at_col in t.at], axis=-2)
                   for mr in m_rows], axis=2)  # (n, th, m, tw, m, C_out)
    return y.reshape(n, t.m * th, t.m * tw, -1)[:, :h, :w]


def _winograd_output_transpose(dy, t=F2):
    """The transpose of `_winograd_output`: A dY A^T for every m x m tile of dy, (m + 2)^2
    arrays (tiles, C). Reads dy through a reshape, where the input transform needs strided
    slices."""
    n, h, w, c = dy.shape
    m = t.m
    th, tw = _tiles(h, w, m)
    dy = jnp.pad(dy, ((0, 0), (0, m * th - h), (0, m * tw - w), (0, 0)))
    dy = dy.reshape(n, th, m, tw, m, c)
    at_cols = list(zip(*t.at, strict=True))
    d_rows = [_combine(col, [dy[:, :, r] for r in range(m)]) for col in at_cols]
    return [_combine(col, [dr[:, :, :, r] for r in range(m)]).reshape(-1, c)
            for dr in d_rows for col in at_cols]


def _winograd_forward(x, kernel, t):
    v, u = _winograd_input(x, t), _winograd_kernel(kernel, t)
    return _winograd_output([vi @ u[i] for i, vi in enumerate(v)], x.shape[:3], t), v, u


def _winograd_kernel_grad(v, dm, t):
    """The kernel gradient from the transformed input and output gradient: G^T (V^T dM) G."""
    over_tiles = (((0,), (0,)), ((), ()))
    du = jnp.stack([lax.dot_general(vi, di, over_tiles) for vi, di in zip(v, dm, strict=True)])
    g = jnp.asarray(t.g, du.dtype)
    a = t.m + 2
    return jnp.einsum("ar,abio,bs->rsio", g, du.reshape(a, a, *du.shape[1:]), g)


@jax.custom_vjp
def _winograd_conv(x, kernel):
    return _winograd_forward(x, kernel, F2)[0]


def _winograd_fwd(x, kernel):
    y, v, u = _winograd_forward(x, kernel, F2)
    return y, (v, u)


def _winograd_input_transpose(dv, shape):
    """The transpose of F(2x2)'s `_winograd_input`: B dV B^T for every tile from the 16 arrays
    (tiles, C), each 4x4 result added into the map where its input tile lay. Tiles overlap by 2
    rows and columns, so the map is built as 2x2 blocks: block (i, j), entry (p, q) sums entry
    (p + 2a, q + 2b) of tile (i - a, j - b) for a, b in {0, 1}, shifted into place by padding;
    then the zero padding of the forward pass is cut off. One pass that writes the map, where
    the autodiff transpose of the strided slices wrote a padded map per slice."""
    n, h, w = shape
    th, tw = _tiles(h, w, 2)
    c = dv[0].shape[-1]
    dv = [d.reshape(n, th, tw, c) for d in dv]
    bt_cols = list(zip(*F2.bt, strict=True))
    rows = [[_combine(bt_cols[r], dv[col::4]) for col in range(4)] for r in range(4)]
    tiles = [[_combine(bt_cols[s], rows[r]) for s in range(4)] for r in range(4)]  # (n,th,tw,c)

    def block(p, q):  # entry (p, q) of every 2x2 block: (n, th + 1, tw + 1, c)
        return _combine((1, 1, 1, 1), [
            jnp.pad(tiles[p + 2 * a][q + 2 * b], ((0, 0), (a, 1 - a), (b, 1 - b), (0, 0)))
            for a in (0, 1) for b in (0, 1)])

    x = jnp.stack([jnp.stack([block(p, q) for q in (0, 1)], axis=-2) for p in (0, 1)], axis=2)
    return x.reshape(n, 2 * th + 2, 2 * tw + 2, c)[:, 1:1 + h, 1:1 + w]


def _winograd_bwd(residuals, dy):
    v, u = residuals  # the transformed input and kernel of the forward pass
    dm = _winograd_output_transpose(dy, F2)
    dv = [di @ u[i].T for i, di in enumerate(dm)]
    return _winograd_input_transpose(dv, dy.shape[:3]), _winograd_kernel_grad(v, dm, F2)


_winograd_conv.defvjp(_winograd_fwd, _winograd_bwd)


@jax.custom_vjp
def _winograd_conv_f4(x, kernel):
    return _winograd_forward(x, kernel, F4)[0]


def _winograd_f4_fwd(x, kernel):
    y, v, _ = _winograd_forward(x, kernel, F4)
    return y, (v, kernel)


def _winograd_f4_bwd(residuals, dy):
    v, kernel = residuals
    dk = _winograd_kernel_grad(v, _winograd_output_transpose(dy, F4), F4)
    # The input gradient of a correlation is the correlation of dy with the kernel turned by
    # 180 degrees and its channel axes swapped.
    dx = _winograd_conv_f4(dy, jnp.swapaxes(kernel[::-1, ::-1], 2, 3))
    return dx, dk


_winograd_conv_f4.defvjp(_winograd_f4_fwd, _winograd_f4_bwd)


def _xla_conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, padding):
    return _xla_conv(x, kernel, strides, padding)


def _conv_fwd(x, kernel, strides, padding):
    return _xla_conv(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, residuals, dy):
    x, kernel = residuals
    (dx,) = jax.linear_transpose(lambda v: _xla_conv(v, kernel, strides, padding), x)(dy)
    cols = patches(x, kernel.shape[:2], strides, padding)  # (B, H', W', kh * kw * C_in)
    # Accumulate in at least float32 (the sum runs over batch and positions).
    dk = lax.dot_general(cols, dy.astype(cols.dtype), (((0, 1, 2), (0, 1, 2)), ((), ())),
                         preferred_element_type=jnp.promote_types(cols.dtype, jnp.float32))
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def patches(x, window, strides, padding):
    """im2col: (B, H, W, C) -> (B, H', W', kh * kw * C), the input under each output position,
    ordered (kernel row, kernel column, channel) like a flattened HWIO kernel's first three
    axes, so that `patches(x, ...) @ kernel.reshape(-1, C_out)` is the convolution."""
    (kh, kw), (sh, sw) = window, strides
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    return jnp.concatenate([x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                            for i in range(kh) for j in range(kw)], axis=-1)


def conv(features: int, kernel_size, strides=1, padding=0, name=None, **kwargs) -> nn.Conv:
    """`nn.Conv` with the kernel gradient of `conv_general_dilated` (same variables)."""
    return nn.Conv(features, kernel_size, strides=strides, padding=padding, name=name,
                   conv_general_dilated=conv_general_dilated, **kwargs)


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


def conv_stack(x, features, norm, train=False, last_plain=False, dtype=None):
    """`len(features)` steps of C3 -> norm -> PReLU, layers named conv{i}, bn{i}, prelu{i}.

    Called inside a compact method, so the layers belong to the calling module (flat names).
    norm: "batch", "instance" or None. With `last_plain=True` the final conv has neither norm
    nor PReLU (E_au's branches and D_l end that way). Convolutions compute in `dtype`.
    """
    n = len(features)
    for i, f in enumerate(features):
        x = conv3(f, f"conv{i}", dtype)(x)
        if last_plain and i == n - 1:
            break
        if norm == "batch":
            x = batch_norm(train, f"bn{i}", dtype)(x)
        elif norm == "instance":
            x = instance_norm(x)
        x = prelu(f"prelu{i}")(x)
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

