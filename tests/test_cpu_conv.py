"""The CPU convolution kernels (audjax/models/cpu_conv.py), each against lax.conv_general_dilated
at tiny shapes, and which convolutions the switch hands to which kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audjax import models
from audjax.models import cpu_conv

KEY = jax.random.PRNGKey(0)
NHWC = ("NHWC", "HWIO", "NHWC")
SAME = ((1, 1), (1, 1))


def xla_conv(x, kernel, strides=(1, 1), padding=SAME, groups=1):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=NHWC,
                                        feature_group_count=groups)


def assert_conv_matches_xla(ours, x, kernel, strides, padding, out_tol, grad_tol, groups=1):
    """ours(x, kernel) gives lax.conv_general_dilated's output (NHWC x HWIO) and both its
    gradients, under a non-constant cotangent, to the given tolerances."""
    def xla(x, k):
        return xla_conv(x, k, strides, padding, groups)

    def output_and_gradients(f):
        # Jitted: each kernel's program compiles faster than its many small ops one by one.
        return jax.jit(lambda x, k: (f(x, k), jax.grad(
            lambda x, k: jnp.sum(jnp.sin(f(x, k))), (0, 1))(x, k)))(x, kernel)

    (y, got), (y_xla, want) = output_and_gradients(ours), output_and_gradients(xla)
    np.testing.assert_allclose(y, y_xla, rtol=out_tol, atol=out_tol)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=grad_tol, atol=grad_tol)


@pytest.mark.parametrize("window, strides, padding", [
    ((3, 3), (1, 1), ((1, 1), (1, 1))), ((4, 4), (2, 2), ((1, 1), (1, 1))),
    ((4, 4), (2, 2), ((0, 0), (0, 0))), ((1, 1), (1, 1), ((0, 0), (0, 0))),
    ((7, 7), (1, 1), ((3, 3), (3, 3))), ((3, 3), (2, 2), ((0, 1), (2, 0)))])
def test_conv_kernel_gradient_as_matmul_equals_xla(window, strides, padding):
    """The convolution whose kernel gradient is im2col + one matmul gives
    lax.conv_general_dilated's outputs and both its gradients, for any window and stride."""
    x = jax.random.normal(KEY, (2, 9, 11, 5))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (*window, 5, 3))
    assert_conv_matches_xla(lambda x, k: cpu_conv._conv(x, k, strides, padding),
                            x, kernel, strides, padding, out_tol=1e-6, grad_tol=1e-5)


def test_patches_times_kernel_is_the_convolution():
    """im2col against NumPy: each output position's patch is the padded input under the
    window, in HWIO order."""
    x = np.asarray(jax.random.normal(KEY, (1, 5, 4, 2)))
    got = np.asarray(cpu_conv.patches(x, (3, 3), (2, 1), ((1, 1), (0, 1))))
    xp = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))
    want = np.stack([np.stack([xp[0, 2 * i:2 * i + 3, j:j + 3].reshape(-1)
                               for j in range(got.shape[2])]) for i in range(got.shape[1])])
    np.testing.assert_array_equal(got[0], want)


@pytest.mark.parametrize("form", ["_winograd_conv", "_winograd_conv_f4"])
@pytest.mark.parametrize("shape", [(2, 8, 10, 16), (1, 7, 5, 3), (3, 1, 2, 4), (1, 9, 6, 2)])
def test_winograd_conv3x3_equals_xla(form, shape):
    """Winograd F(2x2, 3x3) and F(4x4, 3x3) give the direct convolution's output and both
    gradients (float64, so that only the algorithm can differ), also for maps that the tile
    size does not divide and for tiny ones."""
    with jax.enable_x64():
        x = jax.random.normal(KEY, shape, jnp.float64)
        kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[-1], 5), jnp.float64)
        assert_conv_matches_xla(getattr(cpu_conv, form), x, kernel, (1, 1), SAME,
                                out_tol=1e-12, grad_tol=1e-12)


def test_winograd_tile_size_by_channels():
    """F(4x4) for the paper's 64- and 128-channel layers, F(2x2) for fewer input channels and
    for E_au's 64 -> 384 layer; `winograd_conv3x3` runs the form chosen (float64 results)."""
    for cin, cout, want in [(64, 64, cpu_conv.F4), (64, 49, cpu_conv.F4),
                            (65, 128, cpu_conv.F4), (128, 128, cpu_conv.F4),
                            (128, 64, cpu_conv.F4), (64, 384, cpu_conv.F2),
                            (32, 64, cpu_conv.F2), (32, 32, cpu_conv.F2), (8, 32, cpu_conv.F2)]:
        assert cpu_conv._winograd_tiles((3, 3, cin, cout)) is want, (cin, cout)
    with jax.enable_x64():
        x = jax.random.normal(KEY, (1, 6, 6, 64), jnp.float64)
        kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 64, 64), jnp.float64)
        np.testing.assert_array_equal(cpu_conv.winograd_conv3x3(x, kernel),
                                      cpu_conv._winograd_conv_f4(x, kernel))


@pytest.mark.parametrize("shape", [(2, 8, 10, 3), (1, 7, 5, 2), (1, 1, 2, 1)])
def test_winograd_input_transpose_is_the_transpose(shape):
    """The input gradient's path, checked on its own against JAX's transpose of the forward
    input transform: <B^T d B, dv> summed over tiles equals <d, transpose(dv)> for every d, dv."""
    with jax.enable_x64():
        x = jax.random.normal(KEY, shape, jnp.float64)
        v = jax.jit(cpu_conv._winograd_input)(x)
        dv = jax.random.normal(jax.random.PRNGKey(1), v.shape, jnp.float64)
        (want,) = jax.jit(jax.linear_transpose(cpu_conv._winograd_input, x))(dv)
        got = jax.jit(cpu_conv._winograd_input_transpose, static_argnums=1)(dv, shape[:3])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_matmul_kernel_gradient_where_it_pays():
    pays = cpu_conv._matmul_pays
    assert pays((16, 44, 44, 64), (3, 3, 64, 64), (1, 1), SAME)  # the paper's s = 44 layers
    assert pays((16, 176, 176, 32), (3, 3, 32, 32), (1, 1), SAME)  # E_f's second conv
    assert not pays((16, 16, 16, 32), (3, 3, 32, 32), (1, 1), SAME)  # crop 64, width 0.25
    assert not pays((16, 44, 44, 64), (4, 4, 64, 64), (2, 2), SAME)  # D_s, D_t (strided)


def test_switch_picks_the_kernel(monkeypatch):
    """Which convolutions `conv_general_dilated` hands to Winograd, to im2col or to XLA, with
    the switch on and off: counted by replacing the kernels (shapes only, nothing computed)."""
    calls = []
    monkeypatch.setattr(cpu_conv, "winograd_conv3x3",
                        lambda x, k: calls.append("winograd") or xla_conv(x, k))
    monkeypatch.setattr(cpu_conv, "_conv",
                        lambda x, k, s, p: calls.append("im2col") or xla_conv(x, k, s, p))

    def conv(x_shape, k_shape, padding=SAME, dtype=jnp.float32, strides=(1, 1), groups=1):
        calls.clear()
        x, k = jnp.zeros(x_shape, dtype), jnp.zeros(k_shape, dtype)
        jax.eval_shape(lambda: cpu_conv.conv_general_dilated(
            x, k, strides, padding, dimension_numbers=NHWC, feature_group_count=groups))
        return calls

    monkeypatch.setattr(cpu_conv, "ENABLED", True)
    assert conv((16, 176, 176, 32), (3, 3, 32, 32)) == ["winograd"]  # E_f's second conv
    assert conv((16, 44, 44, 64), (3, 3, 64, 64)) == ["winograd"]  # the paper's s = 44 layers
    assert conv((16, 176, 176, 3), (3, 3, 3, 32)) == ["im2col"]  # 3 input channels
    assert conv((16, 176, 176, 8), (3, 3, 8, 32)) == ["winograd"]
    assert conv((16, 16, 16, 32), (3, 3, 32, 32)) == []  # crop 64, width 0.25: XLA's
    assert conv((16, 44, 44, 64), (3, 3, 64, 64), dtype=jnp.bfloat16) == ["im2col"]
    assert conv((16, 44, 44, 64), (3, 3, 64, 64), padding=((0, 0), (0, 0))) == ["im2col"]
    assert conv((16, 44, 44, 64), (4, 4, 64, 64), strides=(2, 2)) == []  # D_s, D_t
    assert conv((16, 44, 44, 384), (3, 3, 64, 384), groups=6) == ["winograd"] * 6  # E_au
    monkeypatch.setattr(cpu_conv, "ENABLED", False)
    assert conv((16, 44, 44, 64), (3, 3, 64, 64)) == []  # every convolution XLA's
    assert conv((16, 44, 44, 384), (3, 3, 64, 384), groups=6) == []
    monkeypatch.setattr(cpu_conv, "ENABLED", None)  # by backend
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not cpu_conv.enabled() and conv((16, 44, 44, 64), (3, 3, 64, 64)) == []
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert cpu_conv.enabled()


@pytest.mark.parametrize("enabled", [True, False])
def test_conv_general_dilated_equals_xla(enabled, monkeypatch):
    """The one entry point gives XLA's results and gradients with the switch on or off, for a
    plain, a strided and a grouped convolution (sizes lowered so that the kernels run)."""
    monkeypatch.setattr(cpu_conv, "ENABLED", enabled)
    monkeypatch.setattr(cpu_conv, "_MATMUL_KERNEL_GRAD_MIN", 1)
    cases = [((2, 6, 5, 8), (3, 3, 8, 4), (1, 1), 1), ((2, 6, 5, 3), (4, 4, 3, 4), (2, 2), 1),
             ((2, 6, 5, 3 * 8), (3, 3, 8, 3 * 2), (1, 1), 3)]
    for x_shape, k_shape, strides, groups in cases:
        x = jax.random.normal(KEY, x_shape)
        kernel = jax.random.normal(jax.random.PRNGKey(1), k_shape)

        def ours(x, k, strides=strides, groups=groups):
            return cpu_conv.conv_general_dilated(x, k, strides, SAME, dimension_numbers=NHWC,
                                                 feature_group_count=groups)

        assert_conv_matches_xla(ours, x, kernel, strides, SAME, out_tol=1e-5, grad_tol=1e-4,
                                groups=groups)


def test_grouped_conv_gradients_equal_xla_grouped_conv(monkeypatch):
    """GroupedConv3 with the CPU kernels on (one convolution per group) has the outputs and
    gradients of XLA's grouped convolution (`feature_group_count`), for input and kernel."""
    x = jax.random.normal(KEY, (2, 6, 5, 3 * 4))
    conv = models.networks.GroupedConv3(3, 2)
    v = conv.init(KEY, x)
    v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(KEY, a.shape), v)
    cot = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 5, 3 * 2))
    out = {}
    for on in (True, False):
        monkeypatch.setattr(cpu_conv, "ENABLED", on)
        out[on] = (conv.apply(v, x), jax.grad(
            lambda v, x: jnp.sum(conv.apply(v, x) * cot), (0, 1))(v, x))
    for a, b in zip(jax.tree.leaves(out[True]), jax.tree.leaves(out[False]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
