"""Cross-check of the ADLD importer, the networks and the landmark losses against PyTorch.

The original ADLD networks (ZhiwenShao/ADLD, network.py; docs/design.md §7 layout), as
`audjax.adld.torch_reference` builds them, get random weights, random batch-norm statistics and
random
PReLU slopes, in eval mode.
Their state dicts go through `audjax.adld.import_state_dicts`, and every network's audjax output
must match PyTorch's on the same inputs (NCHW there, NHWC here) to float32 rounding, at the
paper's crop 176 (s = 44) and, except the domain discriminators (whose fourth conv audjax pads
below s = 44), at crop 64. The three landmark losses are compared with ADLD's util.py as
`audjax.adld.torch_reference` writes it, and `weighted_bce` with
`torch.nn.BCEWithLogitsLoss(weight=w)`.

torch is optional: without it this module is skipped. To run it: `pip install -e ".[bench]"`.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from audjax import losses
from audjax.adld.importer import import_state_dicts

torch = pytest.importorskip("torch")
from audjax.adld import torch_reference as adld_torch  # noqa: E402  (needs torch)

nn = torch.nn

L, K, B = 49, 6, 2
RTOL = 1e-4


def _randomise(net):
    """Non-trivial BN affine + running statistics and PReLU slopes; eval mode."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(123)
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def nets():
    """{name: (torch net, audjax module, audjax variables)} for the eight ADLD networks."""
    torch.manual_seed(0)
    torch_nets = adld_torch.build_networks(L, K)
    state_dicts = {}
    for name, net in torch_nets.items():
        _randomise(net)
        state_dicts[name] = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    imported = import_state_dicts(state_dicts, num_landmarks=L, num_aus=K)
    return {name: (torch_nets[name], *imported[name]) for name in torch_nets}


# ---------------------------------------------------------------------------------------------
# Comparison helpers.
# ---------------------------------------------------------------------------------------------


def _nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def _close(what, got, want, rtol=RTOL):
    """||got - want|| / ||want|| <= rtol and max|got - want| <= rtol * max|want| (float64)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs torch {want.shape}"
    diff = got - want
    rel = np.linalg.norm(diff) / np.linalg.norm(want)
    max_rel = np.max(np.abs(diff)) / np.max(np.abs(want))
    assert rel <= rtol, f"{what}: relative error {rel:.3g} > {rtol}"
    assert max_rel <= rtol, f"{what}: max abs error {max_rel:.3g} x max|torch| > {rtol}"


def _inputs(crop, seed):
    """NHWC numpy inputs: image in [-1, 1], features (tanh range), attention, background."""
    rng = np.random.default_rng(seed)
    s = crop // 4
    image = rng.uniform(-1, 1, (B, crop, crop, 3)).astype(np.float32)
    features = np.tanh(rng.normal(0, 1, (B, s, s, 64))).astype(np.float32)
    logits = rng.normal(0, 2, (B, s * s, L))
    attention = np.exp(logits - logits.max(axis=1, keepdims=True))
    attention = (attention / attention.sum(axis=1, keepdims=True)).reshape(B, s, s, L)
    background = np.tanh(rng.normal(0, 1, (B, s, s, 64))).astype(np.float32)
    return image, features, attention.astype(np.float32), background


def _run(nets, name, *inputs):
    """(audjax outputs, torch outputs) of one network on NHWC numpy inputs."""
    tnet, module, variables = nets[name]
    ours = module.apply(variables, *(jnp.asarray(x) for x in inputs), train=False)
    with torch.no_grad():
        theirs = tnet(*(torch.from_numpy(np.ascontiguousarray(_nchw(x))) for x in inputs))
    return ours, theirs


# ---------------------------------------------------------------------------------------------
# Networks.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [176, 64])
def test_networks_match_pytorch(nets, crop):
    image, features, attention, background = _inputs(crop, seed=crop)
    s = crop // 4

    ours, theirs = _run(nets, "base_net", image)
    assert ours.shape == (B, s, s, 64)
    _close("base_net", _nchw(ours), theirs)

    (att, logits), (t_att, _, t_logits) = _run(nets, "land_enc", features)
    _close("land_enc logits", _nchw(logits), t_logits)
    _close("land_enc attention", _nchw(att), t_att)

    ours, (_, theirs) = _run(nets, "au_enc", features)
    assert ours.shape == (B, K)
    _close("au_enc", ours, theirs)

    ours, theirs = _run(nets, "invar_shape_enc", features)
    _close("invar_shape_enc", _nchw(ours), theirs)

    ours, theirs = _run(nets, "feat_gen", attention, background)
    _close("feat_gen", _nchw(ours), theirs)

    ours, theirs = _run(nets, "invar_shape_disc", background)
    assert ours.shape == (B, s, s, L)
    _close("invar_shape_disc", _nchw(ours), theirs)


@pytest.mark.parametrize("name", ["feat_gen_disc_src", "feat_gen_disc_tgt"])
def test_domain_discriminators_match_pytorch(nets, name):
    # Only at s = 44: below it audjax pads the fourth conv (docs/design.md §1), ADLD's would fail.
    _, features, _, _ = _inputs(176, seed=7)
    ours, theirs = _run(nets, name, features)
    assert ours.shape == theirs.shape == (B, 1)
    _close(name, ours, theirs)


# ---------------------------------------------------------------------------------------------
# Losses (ADLD util.py, written per landmark as there).
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", [44, 16])
def test_landmark_losses_match_adld(s):
    rng = np.random.default_rng(s)
    maps = rng.normal(0, 2, (B, L, s, s)).astype(np.float32)  # torch layout
    target = rng.integers(0, s * s, (B, L))
    t_maps, t_target = torch.from_numpy(maps), torch.from_numpy(target)
    nhwc, idx = jnp.asarray(np.transpose(maps, (0, 2, 3, 1))), jnp.asarray(target, jnp.int32)

    _close("land_softmax_loss", losses.landmark_softmax_loss(nhwc, idx),
           adld_torch.land_softmax_loss(t_maps, t_target).item())
    _close("land_discriminator_loss", losses.landmark_discriminator_loss(nhwc, idx),
           adld_torch.land_discriminator_loss(t_maps, t_target).item())
    _close("land_adaptation_loss", losses.landmark_adversarial_loss(nhwc),
           adld_torch.land_adaptation_loss(t_maps).item())

    # Near the optimum the adaptation loss is tiny; the comparison must still hold.
    small = (1.0 / (s * s) + rng.normal(0, 1e-3, maps.shape)).astype(np.float32)
    _close("land_adaptation_loss (near 1/s^2)",
           losses.landmark_adversarial_loss(jnp.asarray(np.transpose(small, (0, 2, 3, 1)))),
           adld_torch.land_adaptation_loss(torch.from_numpy(small)).item())


def test_weighted_bce_matches_torch():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (8, K)).astype(np.float32)
    labels = rng.integers(0, 2, (8, K))
    weights = rng.uniform(0.3, 2.0, (K,)).astype(np.float32)
    want = nn.BCEWithLogitsLoss(weight=torch.from_numpy(weights))(
        torch.from_numpy(logits), torch.from_numpy(labels.astype(np.float32))
    ).item()
    got = losses.weighted_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    _close("weighted_bce", got, want)
