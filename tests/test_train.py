"""Both phases end to end on a tiny SynthAU, resume, evaluation records, and the CLI's errors."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from audjax import checkpoints
from audjax.config import Config
from audjax.train import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]


def tiny(root, **kw):
    base = dict(data_root=str(root), source_train="list/source_train",
                source_val="list/source_val", source_test="list/source_test",
                target_train="list/target_train", target_val="list/target_val",
                target_test="list/target_test", crop=64, width=0.25, batch_size=8,
                pretrain_batch_size=8, epochs=1, pretrain_epochs=1, workers=0,
                eval_batch_size=16, log_every=2, mesh_data=1)
    base.update(kw)
    return Config(**base)


def final_params(run):
    step_dir = sorted((run / "checkpoints").iterdir(), key=lambda p: int(p.name))[-1]
    return int(step_dir.name), ocp.StandardCheckpointer().restore((step_dir / "state").absolute())


def test_all_phases_then_resume(synth_root, tmp_path):
    run = tmp_path / "run"
    # Both phases stop after 4 steps, the joint phase halfway through its 2 epochs (the resumed
    # and the uninterrupted run below then compile the same step).
    results = train_and_evaluate(tiny(synth_root, phase="all", epochs=2, max_steps=4), run)

    # Records of each phase.
    for phase in ("pretrain", "joint"):
        assert json.loads((run / phase / "config.json").read_text())["phase"] == phase
        # The aligned size, measured from the 72x72 SynthAU images, for the Detector.
        assert checkpoints.read_checkpoint_config(
            checkpoints.resolve_checkpoint(run / phase))["aligned_size"] == 72
        lines = [json.loads(x) for x in (run / phase / "metrics.jsonl").read_text().splitlines()]
        assert {x["split"] for x in lines} == {"train", "val"}
        assert all(np.isfinite(x["images_per_s"]) for x in lines if x["split"] == "train")
        assert list((run / phase / "tb").glob("events.out.tfevents.*"))
    on_disk = json.loads((run / "joint" / "results.json").read_text())
    assert on_disk["target_test"]["mean_f1"] == results["target_test"]["mean_f1"]
    for split in ("target_test", "source_test", "target_val", "source_val"):
        r = on_disk[split]
        assert set(r["f1"]) == set(r["acc"]) == set(r["positive_rate"]) == {
            "AU1", "AU2", "AU4", "AU6", "AU12", "AU17"}
        assert 0 <= r["mean_f1"] <= 100 and 0 <= r["mean_acc"] <= 100
        assert "nme" in r  # models B and C keep a landmark head
    assert "| F1 |" in (run / "joint" / "results.md").read_text()

    # The joint phase started from the phase-1 landmark net (transplant, E_f = parts 1-2).
    assert (run / "joint" / "transplant.log").read_text().count(" -> ") > 10

    # Fine-tuning (--init_from a joint run) starts from every weight of its best checkpoint.
    from audjax import preflight
    from audjax import state as state_lib
    from audjax.train import _initial_weights

    ft = tiny(synth_root, phase="joint", init_from=str(run / "joint"))
    (plan,) = preflight.plan_run(ft, tmp_path / "finetune").phases
    assert plan.start == "finetune" and plan.resume is None
    nets = state_lib.build_networks(ft, 6)
    params, bs = jax.eval_shape(lambda: state_lib.init_variables(
        ft, nets, state_lib.network_names(ft, "joint"), jax.random.PRNGKey(3)))
    params, bs = _initial_weights(plan, params, bs)
    best_dir = checkpoints.resolve_checkpoint(run / "joint")
    best = ocp.StandardCheckpointer().restore((best_dir / "state").absolute())
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(best["params"]), strict=True):
        np.testing.assert_array_equal(a, b)

    # Resume: the joint phase continues from step 4 to the end of its second epoch ...
    resumed_cfg = tiny(synth_root, phase="joint", epochs=2, init_from=str(run / "pretrain"))
    train_and_evaluate(resumed_cfg, run / "joint")
    step, resumed = final_params(run / "joint")
    assert step == 8
    # ... and gives exactly what an uninterrupted two-epoch run gives.
    straight = tmp_path / "straight"
    train_and_evaluate(resumed_cfg, straight)
    step2, direct = final_params(straight)
    assert step2 == 8
    for name in direct["params"]:
        for a, b in zip(jax.tree.leaves(resumed["params"][name]),
                        jax.tree.leaves(direct["params"][name]), strict=True):
            np.testing.assert_array_equal(a, b)


def model_a(root, **kw):
    """A joint run of model A (unless `model` is given), two steps an epoch, two epochs."""
    return tiny(root, **{"phase": "joint", "model": "A", "steps_per_epoch": 2, "epochs": 2,
                         "eval_batch_size": 6, **kw})


def test_resume_on_another_device_count(synth_root, tmp_path):
    """Two steps on 4 devices, resumed for two more on 1, end where four steps on 1 device end.
    Orbax restores the checkpoint onto the new run's shardings; evaluation runs on the mesh."""
    def run(workdir, mesh_data, **kw):
        return train_and_evaluate(model_a(synth_root, mesh_data=mesh_data, **kw), workdir)

    run(tmp_path / "split", 4, max_steps=2)
    assert final_params(tmp_path / "split")[0] == 2
    resumed = run(tmp_path / "split", 1)
    straight = run(tmp_path / "one", 1)
    (step_a, a), (step_b, b) = final_params(tmp_path / "split"), final_params(tmp_path / "one")
    assert step_a == step_b == 4
    # Sums over a split batch add up in another order (float32 rounding). Adam moves a weight
    # whose gradient is zero up to rounding (a conv bias before a norm) by +-lr a step at
    # random, and batch norm's running mean follows such a bias: hence a tolerance of 2 lr a
    # step. A restore that lost the weights or the data position is off by far more.
    for col in ("params", "batch_stats"):
        for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a[col]),
                                jax.tree.leaves(b[col]), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=4 * 2 * 1e-4, err_msg=f"{col} {path}")
    last = [[json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
             if '"train"' in x][-1] for run in ("split", "one")]
    assert last[0]["step"] == last[1]["step"] == 4
    for k in ("loss_total", "loss_au", "loss_l", "loss_d"):
        np.testing.assert_allclose(last[0][k], last[1][k], rtol=1e-4, err_msg=k)
    assert resumed["target_test"]["count"] == straight["target_test"]["count"]
    # Model A trains from scratch (no --init_from) and has no landmark head.
    assert straight["model"] == "A" and "f1" in straight["target_test"]
    assert "nme" not in straight["target_test"]


@pytest.fixture(scope="module")
def source_only(synth_root, tmp_path_factory):
    """A two-step source-only run: (its directory, its results)."""
    run = tmp_path_factory.mktemp("source_only") / "run"
    cfg = model_a(synth_root, model="source_only", max_steps=2, log_every=1)
    return run, train_and_evaluate(cfg, run)


def test_source_only_trains_without_transplant(source_only):
    _, results = source_only
    assert results["model"] == "source_only"
    assert "f1" in results["target_test"]
    assert "nme" not in results["target_test"]  # no landmark head


def test_model_c_needs_init_from(synth_root, tmp_path):
    with pytest.raises(ValueError, match="--init_from"):
        train_and_evaluate(tiny(synth_root, phase="joint", model="C"), tmp_path / "c")


def test_eval_phase_reads_a_checkpoint(synth_root, source_only, tmp_path):
    run, _ = source_only
    step_dir = checkpoints.resolve_checkpoint(run)
    results = train_and_evaluate(
        tiny(synth_root, phase="eval", checkpoint=str(run)), tmp_path / "eval")
    assert results["checkpoint"] == str(step_dir)
    assert (tmp_path / "eval" / "results.json").exists()
    # The source-only model has no recombination path: both target paths read E_au(E_f(I)).
    direct = train_and_evaluate(tiny(synth_root, phase="eval", checkpoint=str(run),
                                     target_eval_path="source"), tmp_path / "eval_direct")
    assert direct["target_eval_path"] == "source" and results["target_eval_path"] == "target"
    assert direct["target_test"] == results["target_test"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_rejects_unknown_flag_and_missing_data():
    # One line on stderr, exit status 2, before any work (the flag files name runs that do not
    # exist here: the first problem is reported).
    for args, message in (
            (("--flagfile=joint.flags", "--no_such_flag=1"),
             "Unknown command line flag 'no_such_flag'"),
            (("--flagfile=joint.flags", "--data_root=/nonexistent/audjax"),
             "--data_root=/nonexistent/audjax: no such directory"),
            (("--flagfile=missing.flags",), "--flagfile=missing.flags: no such file")):
        r = run_cli(*args)
        assert r.returncode == 2 and r.stderr.startswith(f"error: {message}"), r.stderr
        assert r.stderr.count("\n") == 1
