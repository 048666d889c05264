"""ADLD in PyTorch: its eight networks, its losses and its training step, as a reference.

audjax is checked against this module (`tests/test_adld_torch.py`, `tests/test_adld_step.py`)
and timed against it (`audjax bench --compare=torch`). It needs torch, the optional
`bench` extra (`pip install -e ".[bench]"`); the library never imports it.

Everything follows ADLD's public code (ZhiwenShao/ADLD: network.py, util.py, pre_process.py and
train.py in its default "weak" mode), written here from docs/design.md §3 and §7:

- the networks keep ADLD's `nn.Sequential` indices, so their state dicts have ADLD's keys and go
  through `audjax.adld.import_state_dicts` unchanged;
- the losses are computed per landmark, as util.py does;
- `ADLDStep` is one iteration of train.py's loop for model A: the forward passes (E_au in
  training mode on F_s, F_t, then F_sbtl and F_sltb after the discriminator update), a frozen
  copy of E_l for round 2, the same detach points, the discriminators' Adam step, then the
  generators' and the task's Adam steps on the total loss.

Tensors are NCHW here; audjax's are NHWC.
"""

import copy
import itertools

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# ---------------------------------------------------------------------------------------------
# Networks (docs/design.md §1, §7), with ADLD's Sequential indices and hence its state-dict keys.
# ---------------------------------------------------------------------------------------------


def _c3(cin, cout, norm):
    """C3 -> norm -> PReLU, three Sequential entries."""
    return [nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1), norm(cout), nn.PReLU()]


class FeatEnc(nn.Module):
    """base_net, E_f: two parts of [C3 BN PReLU] x 2 + pool, then tanh."""

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


class LandDetect(nn.Module):
    """land_enc, E_l: returns (attention, features before the last conv, logits)."""

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


class TextureEnc(nn.Module):
    """invar_shape_enc, G_b."""

    def __init__(self):
        super().__init__()
        inorm = nn.InstanceNorm2d
        self.irrele_shape_encoder = nn.Sequential(
            *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.irrele_shape_encoder(x)


class Generator(nn.Module):
    """feat_gen, G_st: (summed attention, background) -> features."""

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


class LandDisc(nn.Module):
    """invar_shape_disc, D_l."""

    def __init__(self, land_num):
        super().__init__()
        inorm = nn.InstanceNorm2d
        self.align_attention_features = nn.Sequential(
            *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm), *_c3(64, 64, inorm),
            nn.Conv2d(64, land_num, kernel_size=3, stride=1, padding=1),
        )

    def forward(self, x):
        return self.align_attention_features(x)


class Discriminator(nn.Module):
    """feat_gen_disc_src / _tgt, D_s / D_t. Needs s >= 32 (s = 44 at the paper's crop)."""

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


class AUDetect(nn.Module):
    """au_enc, E_au: one branch per AU; returns (pooled features, logits)."""

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


def build_networks(num_landmarks: int = 49, num_aus: int = 6) -> dict[str, nn.Module]:
    """ADLD's eight networks by their checkpoint names, with PyTorch's default initialisation."""
    return {
        "base_net": FeatEnc(),
        "land_enc": LandDetect(num_landmarks),
        "au_enc": AUDetect(num_aus),
        "invar_shape_enc": TextureEnc(),
        "feat_gen": Generator(),
        "invar_shape_disc": LandDisc(num_landmarks),
        "feat_gen_disc_src": Discriminator(),
        "feat_gen_disc_tgt": Discriminator(),
    }


# ---------------------------------------------------------------------------------------------
# Losses (ADLD util.py: one term per landmark, then their mean).
# ---------------------------------------------------------------------------------------------


def land_softmax_loss(maps, target):
    """L_l: cross-entropy of each landmark's map (B, L, s, s) over positions; target (B, L)."""
    ce = nn.CrossEntropyLoss()
    per = [ce(maps[:, i].reshape(maps.size(0), -1), target[:, i]) for i in range(maps.size(1))]
    return torch.stack(per).mean()


def land_discriminator_loss(maps, target):
    """L_Dl: MSE between each landmark's map and its one-hot target map."""
    mse = nn.MSELoss()
    per = []
    for i in range(maps.size(1)):
        flat = maps[:, i].reshape(maps.size(0), -1)
        one_hot = torch.zeros_like(flat)
        one_hot[torch.arange(flat.size(0)), target[:, i]] = 1
        per.append(mse(flat, one_hot))
    return torch.stack(per).mean()


def land_adaptation_loss(maps):
    """L_adl term: MSE between each landmark's map and the uniform 1/(s*s)."""
    mse = nn.MSELoss()
    per = []
    for i in range(maps.size(1)):
        flat = maps[:, i].reshape(maps.size(0), -1)
        per.append(mse(flat, torch.full_like(flat, 1.0 / flat.size(1))))
    return torch.stack(per).mean()


# ADLD's landmark-target refinement (pre_process.land_transform): 0-based landmark, multiple of
# ruler = |x[22] - x[25]| added to its y.
_AU_CENTRE_SHIFTS = {4: -1 / 2, 5: -1 / 2, 1: -1 / 3, 8: -1 / 3, 2: 1 / 3, 7: 1 / 3, 24: 1.0,
                     29: 1.0, 15: -1 / 2, 17: -1 / 2, 39: 1 / 2, 41: 1 / 2}


def landmark_targets(landmarks: np.ndarray, crop: int, map_size: int) -> np.ndarray:
    """ADLD's landmark classes: (B, L, 2) crop pixels (after crop and flip) -> (B, L) int64.

    Scale to the map (divide by crop / map_size), shift the AU-centre points, round half to
    even (np.around), clip to the map, class = y * s + x.
    """
    pts = np.array(landmarks, np.float64) / (crop / map_size)
    ruler = np.abs(pts[:, 22, 0] - pts[:, 25, 0])
    for i, factor in _AU_CENTRE_SHIFTS.items():
        pts[:, i, 1] += factor * ruler
    pts = np.clip(np.around(pts).astype(np.int64), 0, map_size - 1)
    return pts[..., 1] * map_size + pts[..., 0]


def to_torch(domain: dict, crop: int, dtype=torch.float32, device="cpu") -> dict:
    """An audjax batch of one domain (NHWC image, crop-pixel landmarks, labels) as ADLD's
    inputs on `device`: NCHW image, landmark classes, float labels."""
    image = np.ascontiguousarray(np.transpose(np.asarray(domain["image"]), (0, 3, 1, 2)))
    land = landmark_targets(domain["landmarks"], crop, crop // 4)
    return {"image": torch.from_numpy(image).to(device, dtype),
            "land": torch.from_numpy(land).to(device),
            "au": torch.from_numpy(np.asarray(domain["au"])).to(device, dtype)}


# ---------------------------------------------------------------------------------------------
# The training step (ADLD train.py, "weak" mode).
# ---------------------------------------------------------------------------------------------

# ADLD's defaults (train.py's argument parser), as audjax's model A preset.
ADLD_LAMBDAS = {"adl": 400.0, "adf": 1.2, "cyc": 40.0, "self": 3.0, "au": 1.0, "l": 0.6}
TASK = ("base_net", "land_enc", "au_enc")
GENERATORS = ("invar_shape_enc", "feat_gen")
DISCRIMINATORS = ("invar_shape_disc", "feat_gen_disc_src", "feat_gen_disc_tgt")


class ADLDStep:
    """One ADLD training iteration on model A's networks; call it with a source and a target
    batch from `to_torch` (on the networks' device). It updates the networks in place
    (parameters, batch-norm statistics) and returns the losses as floats, keyed by audjax's
    metric names.

    After a call with `keep_grads=True`, `self.grads[net][param]` holds each parameter's
    gradient as used by its optimizer (the discriminators' from L_D, the rest from L_all).
    """

    def __init__(self, nets: dict[str, nn.Module], au_weights, *, lambdas=None,
                 lr_task=1e-4, lr_gen=5e-5, task_betas=(0.95, 0.999), gen_betas=(0.5, 0.9)):
        self.nets = nets
        for net in nets.values():
            net.train()
        self.lambdas = dict(ADLD_LAMBDAS if lambdas is None else lambdas)
        # Round 2 runs E_l as a copy refreshed every step, outside every optimizer.
        self.land_enc_store = copy.deepcopy(nets["land_enc"])
        device = next(nets["base_net"].parameters()).device
        self.au_weights = torch.as_tensor(np.asarray(au_weights), device=device)

        def params(names):
            return itertools.chain(*(nets[n].parameters() for n in names))

        # ADLD: the discriminators use the generators' optimizer settings.
        self.disc_opt = torch.optim.Adam(params(DISCRIMINATORS), lr_gen, gen_betas)
        self.gen_opt = torch.optim.Adam(params(GENERATORS), lr_gen, gen_betas)
        self.task_opt = torch.optim.Adam(params(TASK), lr_task, task_betas)
        self.grads: dict[str, dict[str, np.ndarray]] = {}

    def _keep(self, names):
        for n in names:
            self.grads[n] = {k: p.grad.detach().cpu().numpy().copy()
                             for k, p in self.nets[n].named_parameters()}

    def __call__(self, src: dict, tgt: dict, keep_grads: bool = False) -> dict[str, float]:
        n = self.nets
        e_f, e_l, e_au, g_b, g_st = (n[k] for k in ("base_net", "land_enc", "au_enc",
                                                     "invar_shape_enc", "feat_gen"))
        d_l, d_s, d_t = (n[k] for k in DISCRIMINATORS)
        self.land_enc_store.load_state_dict(e_l.state_dict())

        # Forward passes, in train.py's order (it decides how the BN running averages move).
        f_s = e_f(src["image"])
        att_s, _, logits_s = e_l(f_s)
        _, au_s = e_au(f_s)
        f_t = e_f(tgt["image"])
        att_t, _, logits_t = e_l(f_t)
        e_au(f_t)  # scored only in "full" mode; moves E_au's statistics
        b_s, b_t = g_b(f_s.detach()), g_b(f_t.detach())
        f_sltb = g_st(att_s.detach(), b_t)  # source landmarks on the target's background
        f_sbtl = g_st(att_t.detach(), b_s)
        self_s, self_t = g_st(att_s.detach(), b_s), g_st(att_t.detach(), b_t)
        b2_s, b2_t = g_b(f_sbtl.detach()), g_b(f_sltb.detach())
        att2_t, _, logits2_t = self.land_enc_store(f_sbtl)
        att2_s, _, logits2_s = self.land_enc_store(f_sltb)
        cyc_t = g_st(att2_t.detach(), b2_t)
        cyc_s = g_st(att2_s.detach(), b2_s)

        # 1. The discriminators, on detached inputs.
        self.disc_opt.zero_grad()
        ld = land_discriminator_loss
        d_landmark = 0.5 * (ld(d_l(b_s.detach()), src["land"]) + ld(d_l(b_t.detach()), tgt["land"]))
        real = f_s.new_ones((f_s.size(0), 1))
        fake = f_s.new_zeros((f_s.size(0), 1))
        mse = F.mse_loss
        d_src = 0.5 * (mse(d_s(f_s.detach()), real) + mse(d_s(f_sbtl.detach()), fake))
        d_tgt = 0.5 * (mse(d_t(f_t.detach()), real) + mse(d_t(f_sltb.detach()), fake))
        d_domain = 0.5 * (d_src + d_tgt)
        loss_d = d_landmark + d_domain
        loss_d.backward()
        if keep_grads:
            self._keep(DISCRIMINATORS)
        self.disc_opt.step()

        # 2. Generators and task, against the updated discriminators.
        self.gen_opt.zero_grad()
        self.task_opt.zero_grad()
        self.land_enc_store.zero_grad()
        terms = {
            "adl": 0.5 * (land_adaptation_loss(d_l(b_s)) + land_adaptation_loss(d_l(b_t))),
            "adf": 0.5 * (mse(d_s(f_sbtl), real) + mse(d_t(f_sltb), real)),
            "cyc": 0.5 * (F.l1_loss(cyc_s, f_s.detach()) + F.l1_loss(cyc_t, f_t.detach())),
            "self": 0.5 * (F.l1_loss(self_s, f_s.detach()) + F.l1_loss(self_t, f_t.detach())),
        }
        ce = land_softmax_loss
        terms["l"] = 0.5 * (ce(logits_s, src["land"]) + ce(logits_t, tgt["land"])
                            + ce(logits2_t, tgt["land"]) + ce(logits2_s, src["land"]))
        e_au(f_sbtl)  # scored only in "full" mode; moves E_au's statistics
        _, au_sltb = e_au(f_sltb)
        weight = self.au_weights.to(au_s.dtype)

        def bce(logits, labels):  # ADLD: nn.BCEWithLogitsLoss(weight)
            return F.binary_cross_entropy_with_logits(logits, labels, weight=weight)

        terms["au"] = 0.5 * (bce(au_s, src["au"]) + bce(au_sltb, src["au"]))
        total = sum(self.lambdas[k] * v for k, v in terms.items())
        total.backward()
        if keep_grads:
            self._keep(GENERATORS + TASK)
        self.gen_opt.step()
        self.task_opt.step()

        out = {f"loss_{k}": v.item() for k, v in terms.items()}
        out.update(loss_total=total.item(), loss_d=loss_d.item(), d_landmark=d_landmark.item(),
                   d_domain=d_domain.item())
        return out
