"""Shapes, parameter counts and structure of the networks (docs/design.md §1)."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audjax import models

KEY = jax.random.PRNGKey(0)
L, K = 49, 6


def count(variables, collection="params"):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get(collection, {})))


def c3(cin, cout):
    """Parameters of a 3x3 conv with bias."""
    return 9 * cin * cout + cout


def bn(c):
    """Learnable parameters of a batch norm (scale and bias)."""
    return 2 * c


PRELU = 1

# Counts at the paper's size, worked out by hand from docs/design.md §1 (also tabled in
# docs/checkpoints.md).
EXPECTED = {
    # 2 parts x 2 [C3 BN PReLU]
    "E_f": c3(3, 32) + c3(32, 32) + c3(32, 64) + c3(64, 64) + bn(32) * 2 + bn(64) * 2 + 4 * PRELU,
    # 4x [C3 IN PReLU], C3(64 -> L)
    "E_l": 4 * (c3(64, 64) + PRELU) + c3(64, L),
    "G_b": 4 * (c3(64, 64) + PRELU),
    "G_st": c3(65, 128) + c3(128, 128) + c3(128, 64) + 2 * c3(64, 64) + 5 * PRELU,
    "D_l": 4 * (c3(64, 64) + PRELU) + c3(64, L),
    # three 4x4 convs with IN+PReLU, a 4x4 conv with PReLU, a 1x1 conv
    "D_d": (16 * 64 * 64 + 64) * 2 + (16 * 64 * 128 + 128) + (16 * 128 * 128 + 128) + 4 * PRELU
    + (128 + 1),
    # per AU: 4x C3, 3x BN, 3x PReLU, Dense(64 -> 1)
    "E_au": K * (4 * c3(64, 64) + 3 * bn(64) + 3 * PRELU + 65),
}
# Head at crop 176: parts 3-5 (128, 256, 256), CBAM on 256 channels, 5x5x256 -> 512 -> 2L.
_HEAD_CONVS = c3(64, 128) + c3(128, 128) + c3(128, 256) + 3 * c3(256, 256)
_HEAD_BN = 2 * bn(128) + 4 * bn(256)
_CBAM = (256 * 16 + 16) + (16 * 256 + 256) + 7 * 7 * 2 + bn(1)
EXPECTED["landmark_head_176"] = (
    _HEAD_CONVS + _HEAD_BN + 6 * PRELU + _CBAM + (5 * 5 * 256 * 512 + 512) + PRELU
    + (512 * 2 * L + 2 * L)
)


def features(s, c=64, b=2):
    return jax.random.normal(KEY, (b, s, s, c))


@pytest.mark.parametrize("crop", [176, 64])
def test_shapes(crop):
    s = crop // 4
    image = jax.random.uniform(KEY, (2, crop, crop, 3), minval=-1, maxval=1)
    f = features(s)
    a = jax.nn.softmax(jax.random.normal(KEY, (2, s, s, L)))

    def run(module, *args):  # traced only: the shapes without computing (or compiling) them
        return jax.eval_shape(lambda: module.apply(module.init(KEY, *args), *args))

    assert run(models.FeatureExtractor(), image).shape == (2, s, s, 64)
    assert run(models.LandmarkNet(), image).shape == (2, L, 2)
    att, logits = run(models.LandmarkEncoder(), f)
    assert att.shape == logits.shape == (2, s, s, L)
    assert run(models.BackgroundEncoder(), f).shape == (2, s, s, 64)
    assert run(models.FeatureGenerator(), a, f).shape == (2, s, s, 64)
    assert run(models.LandmarkDiscriminator(), f).shape == (2, s, s, L)
    assert run(models.DomainDiscriminator(), f).shape == (2, 1)
    assert run(models.AUDetector(), f).shape == (2, K)


@pytest.mark.parametrize("crop", [64, 80, 96, 112, 128, 144, 160, 176, 192, 256])
def test_domain_discriminator_any_crop(crop):
    s = crop // 4
    d = models.DomainDiscriminator(width=0.25)
    f = features(s, c=16)
    assert d.apply(d.init(KEY, f), f).shape == (2, 1)


def test_parameter_counts_at_paper_size():
    s = 44
    f = features(s)

    def init(module, *args):  # shapes only: nothing is computed
        return jax.eval_shape(module.init, KEY, *args)

    got = {
        "E_f": count(init(models.FeatureExtractor(), jnp.zeros((1, 176, 176, 3)))),
        "E_l": count(init(models.LandmarkEncoder(), f)),
        "G_b": count(init(models.BackgroundEncoder(), f)),
        "G_st": count(init(models.FeatureGenerator(), features(s, L), f)),
        "D_l": count(init(models.LandmarkDiscriminator(), f)),
        "D_d": count(init(models.DomainDiscriminator(), f)),
        "E_au": count(init(models.AUDetector(), f)),
        "landmark_head_176": count(init(models.LandmarkHead(), features(s))),
    }
    assert got == EXPECTED


def test_width_scales_channels():
    f = jnp.zeros((1, 16, 16, 16))
    v = models.LandmarkEncoder(width=0.25).init(KEY, f)
    assert v["params"]["conv0"]["kernel"].shape == (3, 3, 16, 16)
    image = jnp.zeros((1, 64, 64, 3))
    assert models.FeatureExtractor(width=0.25).apply(
        models.FeatureExtractor(width=0.25).init(KEY, image), image).shape == (1, 16, 16, 16)


def test_landmark_net_parts12_is_feature_extractor():
    """E_f and parts 1-2 share class and variable names, so phase-1 variables copy one to one."""
    image = jax.random.normal(KEY, (2, 64, 64, 3))
    net = models.LandmarkNet(width=0.25)
    v = net.init(KEY, image)
    ef = models.FeatureExtractor(width=0.25)
    sub = {"params": v["params"]["parts12"], "batch_stats": v["batch_stats"]["parts12"]}
    assert jax.tree.structure(sub) == jax.tree.structure(ef.init(KEY, image))
    pre = models.FeatureExtractor(width=0.25, tanh=False).apply(sub, image)
    head = {"params": v["params"]["head"], "batch_stats": v["batch_stats"]["head"]}
    np.testing.assert_allclose(
        models.LandmarkHead(width=0.25).apply(head, pre), net.apply(v, image), rtol=1e-6)
    np.testing.assert_allclose(ef.apply(sub, image), np.tanh(pre), rtol=1e-6, atol=1e-6)


def test_attention_is_a_distribution_over_positions():
    f = features(16)
    m = models.LandmarkEncoder()
    att, logits = m.apply(m.init(KEY, f), f)
    np.testing.assert_allclose(att.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    flat = np.asarray(logits).reshape(2, -1, L)
    ref = np.exp(flat - flat.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(att).reshape(2, -1, L), ref, rtol=1e-5, atol=1e-7)


class OneBranch(nn.Module):
    """One AU branch written plainly (reference): 3x [C3 BN PReLU], C3, mean, Dense(1)."""

    @nn.compact
    def __call__(self, x, train=False):
        for i in range(3):
            x = nn.Conv(x.shape[-1], (3, 3), padding=1, name=f"conv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             name=f"bn{i}")(x)
            x = nn.PReLU(name=f"prelu{i}")(x)
        x = nn.Conv(x.shape[-1], (3, 3), padding=1, name="conv3")(x)
        return nn.Dense(1, name="fc")(jnp.mean(x, axis=(1, 2)))[:, 0]


def branch_variables(v, k, c):
    """Branch k's share of E_au's variables: channel group k, PReLU slope k, fc column k."""
    group = slice(k * c, (k + 1) * c)
    p, bs = v["params"], v["batch_stats"]
    params = {f"conv{i}": {"kernel": p[f"conv{i}"]["kernel"][..., group],
                           "bias": p[f"conv{i}"]["bias"][group]} for i in range(4)}
    for i in range(3):
        params[f"bn{i}"] = {n: p[f"bn{i}"][n][group] for n in ("scale", "bias")}
        params[f"prelu{i}"] = {"negative_slope": p[f"prelu{i}"]["negative_slope"][k]}
    params["fc"] = {"kernel": p["fc_kernel"][:, k:k + 1], "bias": p["fc_bias"][k:k + 1]}
    stats = {f"bn{i}": {n: bs[f"bn{i}"][n][group] for n in ("mean", "var")} for i in range(3)}
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_au_branches_batched_equal_separate(cpu_kernels, monkeypatch):
    """E_au as one grouped network gives what six separately applied branches give, in
    training (batch statistics, and their running averages) and in evaluation, with the CPU
    kernels (groups as separate convolutions) and without (XLA's grouped convolution)."""
    monkeypatch.setattr(models.cpu_conv, "ENABLED", cpu_kernels)
    c = 16
    f = features(8, c=c)
    det = models.AUDetector(width=0.25, num_aus=K)
    v = det.init(jax.random.PRNGKey(1), f)
    v["params"] = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(KEY, x.shape), v["params"])
    v["batch_stats"] = jax.tree.map(
        lambda x: x + jax.random.uniform(KEY, x.shape), v["batch_stats"])
    for train in (False, True):
        mutable = ["batch_stats"] if train else False
        out = det.apply(v, f, train=train, mutable=mutable)
        logits, new_stats = out if train else (out, None)
        for k in range(K):
            vk = branch_variables(v, k, c)
            ok = OneBranch().apply(vk, f, train=train, mutable=mutable)
            ok_logits, ok_stats = ok if train else (ok, None)
            np.testing.assert_allclose(logits[:, k], ok_logits, rtol=1e-4, atol=1e-5)
            if train:
                got = branch_variables({"params": v["params"], **new_stats}, k, c)
                for a, b in zip(jax.tree.leaves(got["batch_stats"]),
                                jax.tree.leaves(ok_stats["batch_stats"]), strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_projector_starts_as_identity():
    x = features(8, c=L)
    p = models.Projector()
    np.testing.assert_allclose(p.apply(p.init(KEY, x), x), x, rtol=1e-6)


def test_instance_norm_matches_numpy():
    from audjax.models.layers import instance_norm

    x = np.asarray(jax.random.normal(KEY, (2, 5, 7, 3))) * 3 + 1
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(instance_norm(x), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-5,
                               atol=1e-6)


def _kernels(tree, path=""):
    """(path, kernel, bias or None) of every conv and dense layer in a params tree."""
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _kernels(value, f"{path}/{name}")
        elif name == "kernel" or name.endswith("_kernel"):
            bias = tree.get(name.removesuffix("kernel") + "bias")
            yield f"{path}/{name}", np.asarray(value), bias


@pytest.mark.parametrize("init", ["torch", "flax"])
def test_initialisation_per_layer_std(init):
    """--init=torch draws every weight from U(+-1/sqrt(fan_in)) (std 1/sqrt(3 fan_in)) and every
    bias from the same range, as PyTorch's Conv2d and Linear do; --init=flax keeps lecun_normal
    (std 1/sqrt(fan_in)) and zero biases. BN scales, offsets and PReLU slopes are 1, 0, 0.25."""
    from audjax import state as state_lib
    from audjax.config import Config

    config = Config(crop=64, width=1.0, init=init)
    nets = state_lib.build_networks(config, K)
    names = ("E_f", "E_l", "G_b", "G_st", "D_l", "D_s", "E_au", "landmark")
    params, batch_stats = state_lib.init_variables(config, nets, names, KEY)
    checked = 0
    for net in names:
        for path, kernel, bias in _kernels(params[net]):
            fan_in = int(np.prod(kernel.shape[:-1]))
            bound = 1.0 / np.sqrt(fan_in)
            want = bound / np.sqrt(3.0) if init == "torch" else bound
            if kernel.size >= 2000:  # enough samples for a 4% test of the std
                assert abs(kernel.std() / want - 1.0) < 0.04, (net, path, kernel.std(), want)
                checked += 1
            if init == "torch":
                assert np.abs(kernel).max() <= bound, (net, path)
            if bias is not None:
                bias = np.asarray(bias)
                if init == "torch":
                    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.3 * bound, path
                else:
                    assert not bias.any(), path
        for path, leaf in jax.tree_util.tree_leaves_with_path(params[net]):
            key = jax.tree_util.keystr(path)
            if "negative_slope" in key:
                np.testing.assert_array_equal(leaf, 0.25)
            elif "bn" in key and "scale" in key:
                np.testing.assert_array_equal(leaf, 1.0)
            elif "bn" in key and key.endswith("['bias']"):
                np.testing.assert_array_equal(leaf, 0.0)
    assert checked >= 30
    # The unnormalised last layers start sqrt(3) times smaller under torch's init than flax's.
    last = np.asarray(params["E_l"]["conv4"]["kernel"])
    ratio = last.std() * np.sqrt(9 * 64)
    assert abs(ratio - (1 / np.sqrt(3) if init == "torch" else 1.0)) < 0.04
