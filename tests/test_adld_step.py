"""One ADLD training step in PyTorch against audjax's model-A step, from the same weights and batch.

`audjax.adld.torch_reference.ADLDStep` is ADLD's train.py iteration written in PyTorch
("weak" mode: E_au in
training mode on F_s, F_t, F_sbtl, F_sltb; a frozen copy of E_l in round 2; ADLD's detach points;
the discriminators' Adam step, then the generators' and the task's). Its networks start from
PyTorch's defaults; their state dicts go through `audjax.adld.import_state_dicts` into an audjax
state, and both take one step on the same batch. Then

- every loss term agrees (L_adl, L_adf, L_cyc, L_self, L_l, L_au, L_all, L_D and its parts);
- every gradient agrees: the discriminators' (`steps.discriminator_loss` under `jax.grad`) and
  every other network's (`steps.joint_gradients`, the first part of the jitted step);
- E_f's and E_au's running statistics after the step agree;
- every parameter after the whole step (three Adam updates) agrees.

Shapes: crop 128 and batch 2 at full width. Crop 128 (s = 32) is the smallest crop at which
ADLD's domain discriminators run unchanged (their last 4x4 conv needs a 4x4 map, which s = 32
gives; audjax pads it below that, docs/design.md §1), so the check is exact and 1.9x cheaper than at
the paper's 176. Two AUs instead of six keep E_au (the largest cost) small; branch k still has to
land in channel group k of every E_au layer.

Why float64. In float32 the two implementations differ by up to 1e-2 in some gradients (and by
0.1-0.25 in a few PReLU slopes), and each differs from its own float64 result by as much: a PReLU
slope's gradient is a sum over every negative pre-activation, and the gradient behind a batch or
instance norm subtracts its mean over positions, both with heavy cancellation. That is rounding,
not a modelling difference, but it would hide one. In float64 the two agree to rounding
(measured: losses 5e-15, gradients 2.5e-12, running means 1e-14, parameters after the step
2e-11), so the tolerances here catch any real difference: a wrong detach point, a different
target transform, an Adam constant, or a missing E_au call (without `au_bn_all` E_au's running
means are 0.44 off).

Batch statistics: PyTorch's running variance takes the unbiased batch variance (n / (n - 1)),
Flax's the biased one. Here n >= 2 * 32 * 32, so the running variances differ by at most
(1 - 0.9) * batch variance / 2047 per call: 4e-5 relative is measured, well inside the 2e-3 the
check allows; the running means agree to 1e-10.

torch is optional: without it this module is skipped (`pip install -e ".[bench]"`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audjax import state as state_lib
from audjax import steps
from audjax.adld.importer import import_state_dicts
from audjax.config import Config

torch = pytest.importorskip("torch")
from audjax.adld import torch_reference as adld_torch  # noqa: E402  (needs torch)

L, K, B, CROP = 49, 2, 2, 128
AUDJAX_NAMES = {"base_net": "E_f", "land_enc": "E_l", "au_enc": "E_au", "invar_shape_enc": "G_b",
                "feat_gen": "G_st", "invar_shape_disc": "D_l", "feat_gen_disc_src": "D_s",
                "feat_gen_disc_tgt": "D_t"}


def as_audjax(state_dicts):
    """ADLD state dicts (or gradients laid out as state dicts) -> audjax (params, batch_stats)."""
    imported = import_state_dicts(state_dicts, L, K, dtype=np.float64)
    params = {AUDJAX_NAMES[n]: v["params"] for n, (_, v) in imported.items()}
    stats = {AUDJAX_NAMES[n]: v["batch_stats"] for n, (_, v) in imported.items()
             if "batch_stats" in v}
    return params, stats


def state_dicts(nets):
    return {n: {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
            for n, net in nets.items()}


@pytest.fixture(scope="module")
def steps_taken():
    """One step in each framework, float64. Returns the PyTorch results and audjax's."""
    rng = np.random.default_rng(0)

    def domain():
        return {"image": rng.uniform(-1, 1, (B, CROP, CROP, 3)),
                "landmarks": rng.uniform(0.2 * CROP, 0.8 * CROP, (B, L, 2)),
                "au": rng.integers(0, 2, (B, K)).astype(np.int32)}

    batch = {"source": domain(), "target": domain()}
    au_weights = rng.uniform(0.5, 2.0, K)

    torch.manual_seed(0)
    nets = adld_torch.build_networks(L, K)
    for net in nets.values():
        net.double()
    before = state_dicts(nets)
    step = adld_torch.ADLDStep(nets, au_weights)
    torch_losses = step(adld_torch.to_torch(batch["source"], CROP, torch.float64),
                        adld_torch.to_torch(batch["target"], CROP, torch.float64),
                        keep_grads=True)

    with jax.enable_x64(True):
        # Gradients in audjax's layout: the importer maps them like weights (buffers as before).
        torch_grads = as_audjax({n: {**before[n], **step.grads[n]} for n in nets})[0]
        torch_params, torch_stats = as_audjax(state_dicts(nets))
        config = Config(model="A", crop=CROP, width=1.0, batch_size=B,
                        aus=",".join(f"AU{k}" for k in range(K)))
        modules = state_lib.build_networks(config, K)
        txs = state_lib.make_optimizers(config, state_lib.network_names(config, "joint"), 1000,
                                        "joint")
        state = state_lib.fresh_optimizer_state(*as_audjax(before), txs)
        weights = jnp.asarray(au_weights)

        @jax.jit
        def audjax_step(state, batch):
            src, tgt = batch["source"], batch["target"]
            idx_s = steps.landmark_indices(config, src["landmarks"])
            idx_t = steps.landmark_indices(config, tgt["landmarks"])
            _, disc_inputs, _ = steps.separation_forward(
                config, modules, state.params, state.batch_stats, src, tgt, idx_s, idx_t, weights)
            discs = state_lib.group_params(state.params, "discriminators")
            d_grads = jax.grad(lambda d: steps.discriminator_loss(
                modules, d, disc_inputs, idx_s, idx_t)[0])(discs)
            new, grads, metrics = steps.joint_gradients(state, batch, config=config, nets=modules,
                                                        txs=txs, au_weights=weights)
            after = steps.g_update(new, txs, grads)  # the rest of `steps.joint_step`
            return {**grads, **d_grads}, metrics, after.batch_stats, after.params

        ours = jax.tree.map(np.asarray, audjax_step(state, batch))
    return {"torch": (torch_grads, torch_losses, torch_stats, torch_params), "audjax": ours,
            "before": state.params}


def leaves(tree):
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
            jax.tree_util.tree_leaves_with_path(tree)}


def test_losses_agree(steps_taken):
    want = steps_taken["torch"][1]
    got = steps_taken["audjax"][1]
    assert set(want) == set(got)
    for k in want:
        np.testing.assert_allclose(float(got[k]), want[k], rtol=1e-9, err_msg=k)


def test_every_gradient_agrees(steps_taken):
    want, got = leaves(steps_taken["torch"][0]), leaves(steps_taken["audjax"][0])
    assert set(want) == set(got)
    scale = {}  # per network: the norm of all its gradients
    for path, g in want.items():
        net = path.split("'")[1]
        scale[net] = np.hypot(scale.get(net, 0.0), np.linalg.norm(g))
    for path, g in want.items():
        err = np.linalg.norm(got[path] - g)
        floor = 1e-12 * scale[path.split("'")[1]]
        if np.linalg.norm(g) <= floor:
            # A conv bias right before a batch or instance norm: its gradient is zero in exact
            # arithmetic (the norm removes any per-channel constant), and in both here.
            assert np.linalg.norm(got[path]) <= floor, path
        else:
            assert err <= 1e-7 * np.linalg.norm(g), f"{path}: relative error " \
                                                    f"{err / np.linalg.norm(g):.2e}"


def test_running_statistics_agree(steps_taken):
    want = leaves(steps_taken["torch"][2])
    got = leaves(steps_taken["audjax"][2])
    assert set(want) == set(got) and any(p.startswith("['E_au']") for p in want)
    for path, v in want.items():
        rel = np.max(np.abs(got[path] - v)) / np.max(np.abs(v))
        if path.endswith("['mean']"):
            assert rel <= 1e-9, f"{path}: {rel:.2e}"
        else:  # unbiased (PyTorch) vs biased (Flax) batch variance, see the module doc
            assert rel <= 2e-3, f"{path}: {rel:.2e}"
    # The step did move them (from PyTorch's initial 0 and 1).
    assert all(np.abs(v).max() > 1e-3 for p, v in want.items() if p.endswith("['mean']"))


def test_parameters_after_the_step_agree(steps_taken):
    """After the three Adam steps. Adam's first update is lr * g / (|g| + 1e-8): about lr for
    every parameter with a real gradient, and under 1e-10 for the zero-gradient biases (whose
    float64 gradients are ~1e-15 noise). Agreement to 1e-9 (2e-5 of the smallest lr, 5e-5) means
    the same update everywhere."""
    want = leaves(steps_taken["torch"][3])
    got = leaves(steps_taken["audjax"][3])
    before = leaves(steps_taken["before"])
    assert set(want) == set(got) == set(before)
    for path, v in want.items():
        np.testing.assert_allclose(got[path], v, rtol=0, atol=1e-9, err_msg=path)
    moved = [np.mean(np.abs(v - before[p])) for p, v in want.items() if "kernel" in p]
    assert min(moved) > 1e-5  # every kernel moved by about its learning rate
