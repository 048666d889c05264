"""The ADLD importer on state dicts built from docs/design.md §7's key layout (no torch needed)."""

import numpy as np
import pytest

from audjax.adld.importer import ADLD_NAMES, import_state_dicts

RNG = np.random.default_rng(0)
L, K = 49, 6


def conv(sd, key, cout, cin, k=3):
    sd[key + "weight"] = RNG.normal(size=(cout, cin, k, k)).astype(np.float32)
    sd[key + "bias"] = RNG.normal(size=(cout,)).astype(np.float32)


def bn(sd, key, c):
    for f in ("weight", "bias", "running_mean"):
        sd[key + f] = RNG.normal(size=(c,)).astype(np.float32)
    sd[key + "running_var"] = RNG.uniform(0.5, 2, (c,)).astype(np.float32)
    sd[key + "num_batches_tracked"] = np.array(7)


def prelu(sd, key):
    sd[key + "weight"] = RNG.uniform(0.05, 0.5, (1,)).astype(np.float32)


def adld_state_dicts():
    """One state dict per ADLD network, with PyTorch's shapes (docs/design.md §7 table)."""
    sds = {name: {} for name in ADLD_NAMES}
    p = "align_attention_features."
    sd = sds["base_net"]
    for idx, (cin, cout) in zip((0, 3, 7, 10), ((3, 32), (32, 32), (32, 64), (64, 64)),
                                strict=True):
        conv(sd, f"{p}{idx}.", cout, cin)
        bn(sd, f"{p}{idx + 1}.", cout)
        prelu(sd, f"{p}{idx + 2}.")
    sd = sds["land_enc"]
    for idx in (0, 3, 6, 9):
        conv(sd, f"{p}{idx}.", 64, 64)
        prelu(sd, f"{p}{idx + 2}.")
    conv(sd, f"{p}13.", L, 64)
    sd = sds["invar_shape_enc"]
    for idx in (0, 3, 6, 9):
        conv(sd, f"irrele_shape_encoder.{idx}.", 64, 64)
        prelu(sd, f"irrele_shape_encoder.{idx + 2}.")
    sd = sds["feat_gen"]
    for idx, (cin, cout) in zip((0, 3, 6, 9, 12),
                                ((65, 128), (128, 128), (128, 64), (64, 64), (64, 64)),
                                strict=True):
        conv(sd, f"feat_generator.{idx}.", cout, cin)
        prelu(sd, f"feat_generator.{idx + 2}.")
    sd = sds["invar_shape_disc"]
    for idx in (0, 3, 6, 9):
        conv(sd, f"{p}{idx}.", 64, 64)
        prelu(sd, f"{p}{idx + 2}.")
    conv(sd, f"{p}12.", L, 64)
    for name in ("feat_gen_disc_src", "feat_gen_disc_tgt"):
        sd = sds[name]
        for idx, (cin, cout) in zip((0, 3, 6, 9), ((64, 64), (64, 64), (64, 128), (128, 128)),
                                    strict=True):
            conv(sd, f"layer.{idx}.", cout, cin, k=4)
        for idx in (2, 5, 8, 10):
            prelu(sd, f"layer.{idx}.")
        conv(sd, "layer.11.", 1, 128, k=1)
    sd = sds["au_enc"]
    for k in range(K):
        for idx in (0, 3, 6, 9):
            conv(sd, f"aus_feat.{k}.{idx}.", 64, 64)
        for idx in (1, 4, 7):
            bn(sd, f"aus_feat.{k}.{idx}.", 64)
            prelu(sd, f"aus_feat.{k}.{idx + 1}.")
        sd[f"aus_fc.{k}.weight"] = RNG.normal(size=(1, 64)).astype(np.float32)
        sd[f"aus_fc.{k}.bias"] = RNG.normal(size=(1,)).astype(np.float32)
    return sds


def test_every_network_imports_and_values_land_in_place():
    sds = adld_state_dicts()
    nets = import_state_dicts(sds)
    assert set(nets) == set(ADLD_NAMES)
    v = nets["base_net"][1]
    w = sds["base_net"]["align_attention_features.7.weight"]
    np.testing.assert_array_equal(v["params"]["conv2"]["kernel"], w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v["batch_stats"]["bn3"]["var"],
                                  sds["base_net"]["align_attention_features.11.running_var"])
    assert v["params"]["prelu1"]["negative_slope"] == sds["base_net"][
        "align_attention_features.5.weight"][0]
    np.testing.assert_array_equal(nets["land_enc"][1]["params"]["conv4"]["bias"],
                                  sds["land_enc"]["align_attention_features.13.bias"])
    np.testing.assert_array_equal(nets["feat_gen_disc_tgt"][1]["params"]["conv4"]["kernel"],
                                  sds["feat_gen_disc_tgt"]["layer.11.weight"].transpose(2, 3, 1, 0))
    au = nets["au_enc"][1]
    for k in range(K):  # branch k is channel group k (64 channels) of each E_au layer
        group = slice(64 * k, 64 * (k + 1))
        np.testing.assert_array_equal(au["params"]["conv3"]["kernel"][..., group],
                                      sds["au_enc"][f"aus_feat.{k}.9.weight"].transpose(2, 3, 1, 0))
        np.testing.assert_array_equal(au["params"]["fc_kernel"][:, k],
                                      sds["au_enc"][f"aus_fc.{k}.weight"][0])
        np.testing.assert_array_equal(au["batch_stats"]["bn2"]["mean"][group],
                                      sds["au_enc"][f"aus_feat.{k}.7.running_mean"])
        assert au["params"]["prelu1"]["negative_slope"][k] == sds["au_enc"][
            f"aus_feat.{k}.5.weight"][0]


def test_imported_modules_run():
    nets = import_state_dicts(adld_state_dicts())
    image = RNG.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    module, v = nets["base_net"]
    f = module.apply(v, image, train=False)
    assert f.shape == (2, 16, 16, 64) and np.abs(f).max() <= 1.0
    att, logits = nets["land_enc"][0].apply(nets["land_enc"][1], f, train=False)
    bg = nets["invar_shape_enc"][0].apply(nets["invar_shape_enc"][1], f, train=False)
    gen = nets["feat_gen"][0].apply(nets["feat_gen"][1], att, bg, train=False)
    assert gen.shape == (2, 16, 16, 64)
    assert nets["au_enc"][0].apply(nets["au_enc"][1], gen, train=False).shape == (2, K)


def test_feat_gen_channel_zero_is_summed_attention():
    """Only input channel 0 of G_st's first conv sees the attention, summed over landmarks."""
    sds = adld_state_dicts()
    module, v = import_state_dicts({"feat_gen": sds["feat_gen"]})["feat_gen"]
    bg = RNG.normal(size=(1, 8, 8, 64)).astype(np.float32)
    att = RNG.uniform(size=(1, 8, 8, L)).astype(np.float32)
    moved = np.zeros_like(att)
    moved[..., 0] = att.sum(-1)  # same sum, all mass on one landmark
    np.testing.assert_allclose(module.apply(v, att, bg), module.apply(v, moved, bg), rtol=1e-4,
                               atol=1e-4)


def test_missing_key_names_it():
    sds = adld_state_dicts()
    del sds["feat_gen"]["feat_generator.9.bias"]
    with pytest.raises(KeyError, match=r"feat_generator\.9\.bias"):
        import_state_dicts({"feat_gen": sds["feat_gen"]})


def test_unexpected_key_names_it():
    sds = adld_state_dicts()
    sds["invar_shape_enc"]["irrele_shape_encoder.99.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match=r"irrele_shape_encoder\.99\.weight"):
        import_state_dicts({"invar_shape_enc": sds["invar_shape_enc"]})


def test_misshaped_key_names_it():
    sds = adld_state_dicts()
    sds["au_enc"]["aus_feat.3.4.running_var"] = np.ones(32, np.float32)
    with pytest.raises(ValueError, match=r"aus_feat\.3\.4\.running_var|aus_feat\.\{k\}\.4"):
        import_state_dicts({"au_enc": sds["au_enc"]})
    sds = adld_state_dicts()
    sds["land_enc"]["align_attention_features.13.weight"] = np.zeros((48, 64, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"align_attention_features\.13\.weight"):
        import_state_dicts({"land_enc": sds["land_enc"]})


def test_unknown_network_name():
    with pytest.raises(KeyError, match="base_nett"):
        import_state_dicts({"base_nett": {}})
