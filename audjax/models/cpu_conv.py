"""CPU convolution kernels: Winograd F(2x2, 3x3) and F(4x4, 3x3), an im2col kernel gradient,
and grouped convolutions as one convolution per group.

XLA:CPU's own convolutions are slow for the paper's layers: large 3x3 maps with 32-128 channels.
Their kernel gradient is lowered to a convolution whose window is the whole output map, several
times slower than the forward convolution, and a grouped convolution is lowered far slower than
its groups computed one by one. The kernels here do the same arithmetic as matmuls, which XLA:CPU
runs near the machine's matmul rate. What each bought, and what was tried instead, is in
docs/performance.md ("How the CPU step is made fast").

Every convolution of the networks goes through `conv_general_dilated`, which has
`lax.conv_general_dilated`'s signature (what `nn.Conv` takes as its `conv_general_dilated`
field). One switch, `ENABLED`, decides whether it uses these kernels: None (the default) means
"when JAX's default backend is the CPU", read when a convolution is traced; True or False forces
it (tests compare both forms on one backend). Off, every convolution is
`lax.conv_general_dilated` unchanged; on, small layers keep XLA's convolution too, so the quick
start's shapes (crop 64, width 0.25) compile to the same program either way. Variables and
results are the same either way, up to rounding.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# The switch: None = on when the default backend is the CPU; True / False = forced.
ENABLED: bool | None = None


def enabled() -> bool:
    """Whether convolutions traced now use the CPU kernels (`ENABLED`)."""
    return jax.default_backend() == "cpu" if ENABLED is None else ENABLED


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None):
    """`lax.conv_general_dilated`, through the CPU kernels where they pay and `enabled()`.

    With the kernels on, for NHWC inputs and HWIO kernels:

    - a grouped convolution runs as one convolution per group, results concatenated;
    - a float32 3x3 convolution, stride 1, padding 1, with at least `_WINOGRAD_MIN_CIN` inputs
      and large enough (`_matmul_pays`) runs by Winograd (`winograd_conv3x3`);
    - another large stride-1 convolution keeps XLA's forward pass and input gradient but gets
      its kernel gradient as im2col and one matmul (`_conv`);
    - everything else (small or strided layers, dilations, string padding) is XLA's.
    """
    def xla(lhs, rhs, feature_group_count=feature_group_count):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                        rhs_dilation, dimension_numbers, feature_group_count,
                                        precision=precision)

    dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
    if not enabled() or dilated or isinstance(padding, str):
        return xla(lhs, rhs)
    if dimension_numbers is None or (  # None is lax's NCHW
            lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)):
        return xla(lhs, rhs)
    if feature_group_count > 1:
        # jnp.split, not slices: the gradient of a slice pads it back to all input channels and
        # sums the padded gradients, which XLA:CPU fuses into the Winograd input-gradient
        # transforms; split's gradient is a concatenation.
        return jnp.concatenate([conv_general_dilated(
            xg, kg, window_strides, padding, dimension_numbers=_NHWC, precision=precision)
            for xg, kg in zip(jnp.split(lhs, feature_group_count, axis=-1),
                              jnp.split(rhs, feature_group_count, axis=-1), strict=True)],
            axis=-1)
    padding = tuple(tuple(p) for p in padding)
    if not _matmul_pays(lhs.shape, rhs.shape, window_strides, padding):
        return xla(lhs, rhs)
    if _winograd_pays(lhs, rhs, padding):
        return winograd_conv3x3(lhs, rhs)
    return _conv(lhs, rhs, tuple(window_strides), padding)


# A stride-1 convolution gets the matmul kernel gradient when output positions x C_in x C_out
# reaches this; below it XLA's own kernel gradient is faster (measurements in
# docs/performance.md, "The kernel gradient as a matmul").
_MATMUL_KERNEL_GRAD_MIN = 2**21


def _matmul_pays(lhs_shape, rhs_shape, strides, padding) -> bool:
    if any(s != 1 for s in strides):
        return False
    (kh, kw, cin, cout), (_, h, w, _) = rhs_shape, lhs_shape
    positions = ((h + sum(padding[0]) - kh + 1) * (w + sum(padding[1]) - kw + 1))
    return positions * cin * cout >= _MATMUL_KERNEL_GRAD_MIN


# Winograd needs a few input channels to pay for its transforms: E_f's first layer (3 inputs)
# is faster on the im2col path.
_WINOGRAD_MIN_CIN = 8


def _winograd_pays(lhs, rhs, padding) -> bool:
    """Float32 3x3 convolutions with padding 1 and at least `_WINOGRAD_MIN_CIN` input channels
    (stride 1 and size checked by `_matmul_pays`). bfloat16 keeps the direct convolution: the
    transforms' sums would round in bfloat16."""
    return (rhs.shape[:2] == (3, 3) and padding == ((1, 1), (1, 1))
            and rhs.shape[2] >= _WINOGRAD_MIN_CIN
            and lhs.dtype == rhs.dtype == jnp.float32)


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
# F(2x2) for the rest. With many more outputs than inputs (E_au's 64 -> 384) F(4x4)'s input
# gradient, a convolution of the wide output gradient, costs more than F(2x2)'s, which reuses
# the output gradient's transform; with fewer inputs the transforms dominate.
_WINOGRAD_F4_MIN_CIN = 64


def _winograd_tiles(kernel_shape) -> WinogradTiles:
    cin, cout = kernel_shape[2:]
    return F4 if _WINOGRAD_F4_MIN_CIN <= cin and cout <= 2 * cin else F2


def _combine(coefs, terms):
    """sum_i coefs[i] * terms[i], skipping zeros: a row of a transform matrix applied to terms."""
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
    back). The input transform B^T d B is applied to the rows and then to the columns of every
    (m + 2) x (m + 2) input tile d, each pass one XLA:CPU kernel (`_winograd_input`); the output
    transform is one matmul with the Kronecker product A^T (x) A^T. A layer is thus a handful of
    kernels: with a kernel per transformed position, the paper-size step took minutes to compile
    (docs/performance.md). The products are one batched matmul over the (m + 2)^2 positions,
    (tiles x C_in) @ (C_in x C_out): per output position 2.25 (F(4x4)) or 4 (F(2x2))
    multiplications per input and output channel instead of the direct convolution's 9. The
    kernel gradient runs the algorithm backwards from the output gradient's transform dM = A dY
    A^T: the same matmuls V^T dM, contracted over tiles. F(2x2)'s input gradient is dM U^T taken
    back through the transposed input transform (`_winograd_input_transpose`); F(4x4)'s is a
    second F(4x4) convolution, of the output gradient with the kernel turned by 180 degrees,
    because XLA:CPU runs F(4x4)'s transposed transform, whose tiles overlap less regularly,
    slowly. Rounding differs from the direct convolution's, more for F(4x4), whose transforms
    have larger coefficients.
    """
    if _winograd_tiles(kernel.shape) is F4:
        return _winograd_conv_f4(x, kernel)
    return _winograd_conv(x, kernel)


def _tiles(h, w, m):
    return -(-h // m), -(-w // m)


def _kron(rows) -> np.ndarray:
    """M (x) M for a transform matrix M given as rows: the matrix that applies M to both axes
    of a flattened tile."""
    m = np.asarray(rows, np.float64)
    return np.kron(m, m)


def _winograd_input(x, t=F2):
    """B^T d B for every input tile d: ((m + 2)^2, tiles, C), rows of the tile first.

    Tile (i, j) is xp[m i : m i + m + 2, m j : m j + m + 2] of the zero-padded map xp. B^T is
    applied to the rows of all tiles at once, as m + 2 sums of row-strided slices of xp stacked
    into one array (one XLA:CPU kernel), and then to the columns of the result the same way:
    two passes over the data and no transpose."""
    n, h, w, c = x.shape
    m, a = t.m, t.m + 2
    th, tw = _tiles(h, w, m)
    xp = jnp.pad(x, ((0, 0), (1, m * (th + 1) - h - 1), (1, m * (tw + 1) - w - 1), (0, 0)))
    rows = [xp[:, r:r + m * (th - 1) + 1:m] for r in range(a)]  # row r of every tile
    xr = jnp.stack([_combine(t.bt[p], rows) for p in range(a)])  # (a, n, th, W, c)
    cols = [xr[:, :, :, s:s + m * (tw - 1) + 1:m] for s in range(a)]  # (a, n, th, tw, c)
    return jnp.stack([_combine(t.bt[q], cols) for q in range(a)], axis=1).reshape(
        a * a, n * th * tw, c)


def _winograd_kernel(kernel, t=F2):
    """G g G^T for the 3x3 kernel g: ((m + 2)^2, C_in, C_out)."""
    g = jnp.asarray(t.g, kernel.dtype)
    return jnp.einsum("ar,rsio,bs->abio", g, kernel, g).reshape(-1, *kernel.shape[2:])


def _winograd_output(products, shape, t=F2):
    """A^T M A for every tile from the products M, ((m + 2)^2, tiles, C_out), each tile's m x m
    outputs put back in place: (n, h, w, C_out)."""
    n, h, w = shape
    m = t.m
    th, tw = _tiles(h, w, m)
    y = (jnp.asarray(_kron(t.at), products.dtype) @ products.reshape(len(products), -1))
    y = y.reshape(m, m, n, th, tw, -1).transpose(2, 3, 0, 4, 1, 5)  # (n, th, m, tw, m, C_out)
    return y.reshape(n, m * th, m * tw, -1)[:, :h, :w]


def _winograd_output_transpose(dy, t=F2):
    """The transpose of `_winograd_output`: A dY A^T for every m x m tile of dy,
    ((m + 2)^2, tiles, C)."""
    n, h, w, c = dy.shape
    m = t.m
    th, tw = _tiles(h, w, m)
    dy = jnp.pad(dy, ((0, 0), (0, m * th - h), (0, m * tw - w), (0, 0)))
    dy = dy.reshape(n, th, m, tw, m, c).transpose(2, 4, 0, 1, 3, 5).reshape(m * m, -1)
    return (jnp.asarray(_kron(t.at).T, dy.dtype) @ dy).reshape(-1, n * th * tw, c)


# The products of every transformed position at once: batch over positions, contract channels.
_OVER_POSITIONS = (((2,), (1,)), ((0,), (0,)))


def _winograd_forward(x, kernel, t):
    v, u = _winograd_input(x, t), _winograd_kernel(kernel, t)
    return _winograd_output(lax.dot_general(v, u, _OVER_POSITIONS), x.shape[:3], t), v, u


def _winograd_kernel_grad(v, dm, t):
    """The kernel gradient from the transformed input and output gradient: G^T (V^T dM) G."""
    du = lax.dot_general(v, dm, (((1,), (1,)), ((0,), (0,))))  # (positions, C_in, C_out)
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
    """The transpose of F(2x2)'s `_winograd_input`: B dV B^T for every tile from dV (16, tiles,
    C), each 4x4 result added into the map where its input tile lay. Tiles overlap by 2 rows
    and columns, so the map is built as 2x2 blocks: block (i, j), entry (p, q) sums entry
    (p + 2a, q + 2b) of tile (i - a, j - b) for a, b in {0, 1}, shifted into place by padding;
    then the zero padding of the forward pass is cut off. One pass that writes the map, where
    the autodiff transpose of the tile gathering wrote a padded map per piece."""
    n, h, w = shape
    th, tw = _tiles(h, w, 2)
    c = dv.shape[-1]
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
    dv = lax.dot_general(dm, u, (((2,), (2,)), ((0,), (0,))))  # dM U^T: (16, tiles, C_in)
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
    """XLA's convolution with the kernel gradient as im2col (`patches`) and one matmul."""
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
