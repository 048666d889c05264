"""Model presets of the loss weights and the transplant, and how flags override them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audjax.config import MODEL_PRESETS, Config

ROOT = Path(__file__).resolve().parents[1]

# The paper's Table 3 and ADLD's defaults, written out independently of MODEL_PRESETS.
PAPER = {"l": 0.6, "adl": 400.0, "adf": 1.2, "au": 1.0}
EXPECTED = {
    "C": {**PAPER, "c": 100.0, "fl": 0.1, "cyc": 0.0, "self": 0.0},
    "B": {**PAPER, "c": 0.0, "fl": 0.1, "cyc": 40.0, "self": 3.0},
    "A": {**PAPER, "c": 0.0, "fl": 0.0, "cyc": 40.0, "self": 3.0},
    "source_only": {"l": 0.0, "adl": 0.0, "adf": 0.0, "au": 1.0, "c": 0.0, "fl": 0.0,
                    "cyc": 0.0, "self": 0.0},
}


@pytest.mark.parametrize("model", list(EXPECTED))
def test_presets(model):
    config = Config(model=model)
    assert config.lambdas == EXPECTED[model]
    assert config.uses_transplant == (model in ("B", "C"))
    assert set(MODEL_PRESETS[model]) == set(MODEL_PRESETS["C"])


def test_a_given_weight_overrides_the_preset_and_replace_follows_the_model():
    config = Config(model="C", lambda_self=3.0)
    assert config.lambdas["self"] == 3.0 and config.lambdas["c"] == 100.0
    assert config.uses("self") and not config.uses("cyc")
    # Unset fields follow the model, also through replace().
    assert Config(model="C").replace(model="A").lambdas == EXPECTED["A"]


def test_config_json_records_the_effective_values():
    config = Config(model="B", lambda_c=50.0, transplant=False)
    saved = json.loads(config.to_json())
    assert saved["lambda_c"] == 50.0 and saved["lambda_cyc"] == 40.0 and saved["lambda_fl"] == 0.1
    assert saved["transplant"] is False
    again = Config.from_dict(saved)
    assert again.lambdas == config.lambdas and not again.uses_transplant


@pytest.mark.parametrize("changes, flag", [
    ({"lambda_adf": -1.0}, "--lambda_adf=-1.0"),
    ({"lambda_c": float("nan")}, "--lambda_c=nan"),
    ({"model": "source_only", "lambda_c": 1.0}, "--lambda_c=1.0"),
    ({"init": "xavier"}, "--init='xavier'"),
])
def test_bad_values_name_the_flag(changes, flag):
    with pytest.raises(ValueError, match=flag.replace("(", r"\(")):
        Config(**changes).validate()


def effective(*args):
    """The effective config experiments.run would train with (no JAX, no data)."""
    r = subprocess.run([sys.executable, "-m", "experiments.run", *args, "--print_config"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_flags_after_the_model_override_its_preset_earlier_ones_do_not(tmp_path):
    # joint.flags sets --model=C and then the paper's weights; a later --model=A takes A's preset.
    a = effective("--flagfile=joint.flags", "--model=A")
    assert (a["lambda_c"], a["lambda_cyc"], a["lambda_self"], a["lambda_fl"]) == (0, 40, 3, 0)
    assert a["transplant"] is False
    c_self = effective("--model=C", "--lambda_self=3")
    assert (c_self["lambda_c"], c_self["lambda_self"], c_self["transplant"]) == (100, 3, True)
    b_c = effective("--lambda_self=1", "--model=B", "--lambda_c=100", "--notransplant")
    assert (b_c["lambda_c"], b_c["lambda_self"], b_c["transplant"]) == (100, 3, False)
    # A flag file is read in place: a weight in it after its --model overrides the preset.
    flags = tmp_path / "mine.flags"
    flags.write_text("--model=A\n--lambda_cyc=10\n")
    mine = effective(f"--flagfile={flags}")
    assert (mine["lambda_cyc"], mine["lambda_self"]) == (10, 3)


def test_the_ablation_keeps_the_flag_files_weights_for_its_model_only(tmp_path):
    from experiments.ablation import flagfile_settings

    # Weights after the flag file's --model are that model's; one before --model is overridden
    # by its preset and reaches no one.
    flags = tmp_path / "mine.flags"
    flags.write_text("--lambda_cyc=5\n--model=C\n--lambda_adf=12\n--lambda_c=10\n--notransplant\n")
    assert flagfile_settings(str(flags), "C") == ["--lambda_adf=12", "--lambda_c=10",
                                                  "--notransplant"]
    assert flagfile_settings(str(flags), "A") == []
    flags.write_text("--lambda_cyc=5\n")
    assert flagfile_settings(str(flags), "C") == []
    # The real quick start, as the ablation runs each model: its C is the quick start's C (L_adf
    # at 12), the others have their presets' weights.
    runs = {m: effective("--flagfile=quickstart.flags", f"--model={m}",
                         *flagfile_settings("quickstart.flags", m))
            for m in ("C", "B", "A", "source_only")}
    quick = effective("--flagfile=quickstart.flags")
    weights = {k for k in quick if k.startswith("lambda_")}
    assert quick["lambda_adf"] == 12
    assert {k: runs["C"][k] for k in weights} == {k: quick[k] for k in weights}
    for m in ("B", "A", "source_only"):
        assert {k.removeprefix("lambda_"): runs[m][k] for k in weights} == EXPECTED[m]
