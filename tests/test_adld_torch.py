"""Cross-check of the ADLD importer, the networks and the landmark losses against PyTorch.

The original ADLD networks (ZhiwenShao/ADLD, network.py; DESIGN §7 layout) are rebuilt here in
PyTorch with random weights, random batch-norm statistics and random PReLU slopes, in eval mode.
Their state dicts go through `audjax.adld.import_state_dicts`, and every network's audjax output
must match PyTorch's on the same inputs (NCHW there, NHWC here) to float32 rounding, at the
paper's crop 176 (s = 44) and, except the domain discriminators (whose fourth conv audjax pads
below s = 44), at crop 64. The three landmark losses are compared with reimplementations of
ADLD's util.py, and `weighted_bce` with `torch.nn.BCEWithLogitsLoss(weight=w)`.

torch is optional: without it this module is skipped. To run it: `pip install torch`.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from audjax import losses
from audjax.adld import import_state_dicts

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

L, K, B = 49, 6, 2
RTOL = 1e-4


# ---------------------------------------------------------------------------------------------
# ADLD's networks in PyTorch (same Sequential indices, hence the same state-dict keys).
# ---------------------------------------------------------------------------------------------


def _c3(cin, cout, norm):
    """C3 -> norm -> PReLU, three Sequential entries."""
    return [nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1), norm(cout), nn.PReLU()]


class FeatEnc(nn.Module):  # base_net, E_f
    def __init__(self):
        super().__init__()
        bn = nn.BatchNorm2d
        self.align_attention_features = nn.Sequential(
            *_c3(3, 32, bn), *_c3(32, 32, bn), nn.AvgPool2d(kernel_size=2, stride=2),
            *_c3(32, 64, bn), *_c3(64, 64, bn), nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.align_attention_features(x)


class LandDetect(nn.Module):  # land_enc, E_l
    def __init__(self, land_num):
        super().__init__()
        inorm = nn.InstanceNorm2d
        self.align_attention_features = nn.Sequential(
            *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm),
            nn.Tanh(),
            nn.Conv2d(64, land_num, kernel_size=3, stride=1, padding=1),
        )

    def forward(self, x):
        feat = self.align_attention_features[:-1](x)
        out = self.align_attention_features[-1](feat)
        b, n, h, w = out.shape
        # Each landmark's map softmaxed over its h*w positions (ADLD loops over landmarks).
        attention = F.softmax(out.reshape(b, n, h * w), dim=2).reshape(b, n, h, w)
        return attention, feat, out


class TextureEnc(nn.Module):  # invar_shape_enc, G_b
    def __init__(self):
        super().__init__()
        inorm = nn.InstanceNorm2d
        self.irrele_shape_encoder = nn.Sequential(
            *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.irrele_shape_encoder(x)


class Generator(nn.Module):  # feat_gen, G_st
    def __init__(self):
        super().__init__()
        inorm = nn.InstanceNorm2d
        self.feat_generator = nn.Sequential(
            *_c3(1 + 64, 128, inorm), *_c3(128, 128, inorm), *_c3(128, 64, inorm),
            *_c3(64, 64, inorm), *_c3(64, 64, inorm), nn.Tanh(),
        )

    def forward(self, attention, background):
        summed = torch.sum(attention, 1, True)
        return self.feat_generator(torch.cat((summed, background), 1))


class LandDisc(nn.Module):  # invar_shape_disc, D_l
    def __init__(self, land_num):
        super().__init__()
        inorm = nn.InstanceNorm2d
        self.align_attention_features = nn.Sequential(
            *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm),
            nn.Conv2d(64, land_num, kernel_size=3, stride=1, padding=1),
        )

    def forward(self, x):
        return self.align_attention_features(x)


class Discriminator(nn.Module):  # feat_gen_disc_src / _tgt, D_d
    def __init__(self):
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(64, 64, kernel_size=4, stride=2, padding=1), nn.InstanceNorm2d(64),
            nn.PReLU(),
            nn.Conv2d(64, 64, kernel_size=4, stride=2, padding=1), nn.InstanceNorm2d(64),
            nn.PReLU(),
            nn.Conv2d(64, 128, kernel_size=4, stride=2, padding=1), nn.InstanceNorm2d(128),
            nn.PReLU(),
            nn.Conv2d(128, 128, kernel_size=4, stride=2, padding=0),
            nn.PReLU(),
            nn.Conv2d(128, 1, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x):
        out = self.layer(x)
        return out.view(out.size(0), -1)


class AUDetect(nn.Module):  # au_enc, E_au
    def __init__(self, au_num):
        super().__init__()
        bn = nn.BatchNorm2d
        self.aus_feat = nn.ModuleList([
            nn.Sequential(*_c3(64, 64, bn), *_c3(64, 64, bn), *_c3(64, 64, bn),
                          nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1))
            for _ in range(au_num)
        ])
        self.aus_fc = nn.ModuleList([nn.Linear(64, 1) for _ in range(au_num)])

    def forward(self, x):
        feats, outputs = [], []
        for branch, fc in zip(self.aus_feat, self.aus_fc, strict=True):
            f = branch(x)
            pooled = F.avg_pool2d(f, f.size()[2:]).view(f.size(0), -1)
            feats.append(pooled)
            outputs.append(fc(pooled))
        return torch.cat(feats, 1), torch.cat(outputs, 1)


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
    torch_nets = {
        "base_net": FeatEnc(),
        "land_enc": LandDetect(L),
        "au_enc": AUDetect(K),
        "invar_shape_enc": TextureEnc(),
        "feat_gen": Generator(),
        "invar_shape_disc": LandDisc(L),
        "feat_gen_disc_src": Discriminator(),
        "feat_gen_disc_tgt": Discriminator(),
    }
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
    # Only at s = 44: below it audjax pads the fourth conv (DESIGN §1), ADLD's would fail.
    _, features, _, _ = _inputs(176, seed=7)
    ours, theirs = _run(nets, name, features)
    assert ours.shape == theirs.shape == (B, 1)
    _close(name, ours, theirs)


# ---------------------------------------------------------------------------------------------
# Losses (ADLD util.py, written per landmark as there).
# ---------------------------------------------------------------------------------------------


def torch_land_softmax_loss(inp, target):
    ce = nn.CrossEntropyLoss()
    per = [ce(inp[:, i].reshape(inp.size(0), -1), target[:, i]) for i in range(inp.size(1))]
    return torch.stack(per).mean()


def torch_land_discriminator_loss(inp, target):
    mse = nn.MSELoss()
    per = []
    for i in range(inp.size(1)):
        t_inp = inp[:, i].reshape(inp.size(0), -1)
        t_target = torch.zeros(t_inp.size())
        for j in range(target.size(0)):
            t_target[j, target[j, i]] = 1
        per.append(mse(t_inp, t_target))
    return torch.stack(per).mean()


def torch_land_adaptation_loss(inp):
    mse = nn.MSELoss()
    per = []
    for i in range(inp.size(1)):
        t_inp = inp[:, i].reshape(inp.size(0), -1)
        per.append(mse(t_inp, torch.ones(t_inp.size()) / t_inp.size(1)))
    return torch.stack(per).mean()


@pytest.mark.parametrize("s", [44, 16])
def test_landmark_losses_match_adld(s):
    rng = np.random.default_rng(s)
    maps = rng.normal(0, 2, (B, L, s, s)).astype(np.float32)  # torch layout
    target = rng.integers(0, s * s, (B, L))
    t_maps, t_target = torch.from_numpy(maps), torch.from_numpy(target)
    nhwc, idx = jnp.asarray(np.transpose(maps, (0, 2, 3, 1))), jnp.asarray(target, jnp.int32)

    _close("land_softmax_loss", losses.landmark_softmax_loss(nhwc, idx),
           torch_land_softmax_loss(t_maps, t_target).item())
    _close("land_discriminator_loss", losses.landmark_discriminator_loss(nhwc, idx),
           torch_land_discriminator_loss(t_maps, t_target).item())
    _close("land_adaptation_loss", losses.landmark_adversarial_loss(nhwc),
           torch_land_adaptation_loss(t_maps).item())

    # Near the optimum the adaptation loss is tiny; the comparison must still hold.
    small = (1.0 / (s * s) + rng.normal(0, 1e-3, maps.shape)).astype(np.float32)
    _close("land_adaptation_loss (near 1/s^2)",
           losses.landmark_adversarial_loss(jnp.asarray(np.transpose(small, (0, 2, 3, 1)))),
           torch_land_adaptation_loss(torch.from_numpy(small)).item())


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
