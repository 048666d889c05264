"""Runs that survive bad files, kills and numerical trouble, and say what went wrong.

- Every case of the table in docs/reliability.md "Every case" stops before any long work with one
line naming
  the flag, the file and line, or the path (InputError, exit status 2), and writes nothing.
- Unusable images met while training are warned about once, counted and limited.
- A non-finite step is rejected; past --skip_nonfinite the run stops and saves nothing more.
- A run killed (SIGKILL, also in the middle of a save) or stopped (SIGTERM) and restarted with
  the same command ends bit for bit where an uninterrupted run ends, results.json and records
  included: the same command gives the same results.

The damage is done for real: files are corrupted, processes killed, NaN fed to the step. The
kill tests run `python tests/crash_hooks.py` (experiments.run with test hooks) in subprocesses
that share a JAX compilation cache, so only the first one compiles.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from audjax import checkpoints, steps, train
from audjax import state as state_lib
from audjax.config import Config
from audjax.data.lists import Lists
from audjax.errors import InputError, NonFiniteError
from audjax.guards import BadImages

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("source_train", "target_train", "source_val", "source_test", "target_val",
          "target_test")


def tiny(root, **kw):
    base = dict(data_root=str(root), **{s: f"list/{s}" for s in SPLITS}, crop=64, width=0.25,
                batch_size=8, pretrain_batch_size=8, epochs=1, pretrain_epochs=1, workers=0,
                eval_batch_size=16, log_every=2, mesh_data=1)
    return Config(**{**base, **kw})


def fresh_root(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


def edit_line(file, line, edit):
    lines = Path(file).read_text().splitlines()
    lines[line - 1] = edit(lines[line - 1])
    Path(file).write_text("".join(x + "\n" for x in lines))


def image_of(root, split, line):
    return root / (root / "list" / f"{split}_path.txt").read_text().splitlines()[line - 1]


def save_run(run_dir, config: Config, phase: str, manager="best"):
    """A run directory with one checkpoint of a fresh state (no training needed to test the
    checks that read checkpoints)."""
    nets = state_lib.build_networks(config, len(config.au_names))
    names = state_lib.network_names(config, phase)
    state = state_lib.create_state(config, nets, names, state_lib.make_optimizers(
        config, names, 4, phase), jax.random.PRNGKey(0)).replace(step=np.int32(4))
    ck = checkpoints.RunCheckpoints(run_dir, keep=2, higher_is_better=True)
    config_json = config.replace(phase=phase).to_json()
    if manager == "best":
        ck.save_best(state, config_json, {"selection": 1.0})
    else:
        ck.save_latest(state, {}, config_json, {"step": 4})
    ck.close()
    return run_dir


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    cfg = tiny(synth_root)
    return {
        "pretrain": save_run(base / "pretrain", cfg, "pretrain"),
        "pretrain_wide": save_run(base / "pretrain_wide", cfg.replace(width=0.5), "pretrain"),
        "joint_A": save_run(base / "joint_A", cfg.replace(model="A"), "joint"),
        "resumable": save_run(base / "resumable", cfg.replace(model="A"), "joint", "latest"),
    }


# ---------------------------------------------------------------------------------------------
# The table of docs/reliability.md "Every case": each row is a case here.
# ---------------------------------------------------------------------------------------------


def _remove(path):
    def do(root, runs, tmp):
        (root / path).unlink()
    return do


def _edit(split, kind, line, edit):
    def do(root, runs, tmp):
        edit_line(root / "list" / f"{split}_{kind}.txt", line, edit)
    return do


def _drop_last_line(path):
    def do(root, runs, tmp):
        lines = (root / path).read_text().splitlines()
        (root / path).write_text("".join(x + "\n" for x in lines[:-1]))
    return do


def _truncate_image(split, line):
    def do(root, runs, tmp):
        image = image_of(root, split, line)
        image.write_bytes(image.read_bytes()[:300])
    return do


def _delete_image(split, line):
    def do(root, runs, tmp):
        image_of(root, split, line).unlink()
    return do


def _half_written(root, runs, tmp):
    step = runs["resumable"] / "checkpoints" / "4"
    shutil.copytree(step, tmp / "work" / "checkpoints" / "4")
    (tmp / "work" / "checkpoints" / "4" / checkpoints.COMMIT_MARKER).unlink()


def _copy_run(name):
    def do(root, runs, tmp):
        shutil.copytree(runs[name], tmp / "work")
    return do


def _not_orbax(root, runs, tmp):
    (tmp / "junk" / "3" / "state").mkdir(parents=True)


def _nothing(root, runs, tmp):
    pass


LIST = r".*/list/"
# (case, flags, damage, the message: a regex matched against the whole line)
CASES = [
    ("missing list file", {}, _remove("list/source_val_land.txt"),
     LIST + r"source_val_land.txt: file not found"),
    ("missing path list", {"target_val": "list/nope"}, _nothing,
     r"--target_val=list/nope: no list .*/list/nope_path.txt under the data root .*"),
    ("line counts differ", {}, _drop_last_line("list/target_val_AUoccur.txt"),
     LIST + r"target_val_AUoccur.txt: 15 lines, but .*/list/target_val_path.txt has 16: the "
     r"files of a prefix must match line for line"),
    ("non-numeric value", {}, _edit("source_val", "land", 3, lambda x: "abc " + x.split(" ", 1)[1]),
     LIST + r"source_val_land.txt:3: value 1: 'abc' is not a number"),
    ("wrong column count", {}, _edit("source_test", "AUoccur", 2, lambda x: x[:-2]),
     LIST + r"source_test_AUoccur.txt:2: expected 6 values, found 5"),
    ("AU label not 0/1/999", {}, _edit("target_test", "AUoccur", 4, lambda x: "2" + x[1:]),
     LIST + r"target_test_AUoccur.txt:4: value 1: label 2 is not one of 0, 1, 999"),
    ("missing image", {}, _delete_image("source_train", 5),
     LIST + r"source_train_path.txt:5: image not found: .*\.jpg"),
    ("corrupt JPEG (first line)", {}, _truncate_image("target_train", 1),
     LIST + r"target_train_path.txt:1: .*\.jpg: cannot decode image"),
    ("image smaller than the crop", {"crop": 80, "synth_image_size": 80}, _nothing,
     LIST + r"source_train_path.txt:1: .*\.jpg: the 72x72 image is smaller than the 80x80 crop"),
    ("landmarks far off the image", {},
     _edit("source_train", "land", 1, lambda x: "500" + x[x.index(" "):]),
     LIST + r"source_train_path.txt:1: .*\.jpg: landmark 1 \(500, [\d.]+\) lies far outside "
     r"the 72x72 image: not its pixels\?"),
    ("NaN landmark", {},
     _edit("source_train", "land", 7, lambda x: "nan" + x[x.index(" "):]),
     LIST + r"source_train_land.txt:7: value 1: nan is not finite"),
    ("empty list", {}, lambda root, runs, tmp: (root / "list/target_train_path.txt").write_text(""),
     LIST + r"target_train_path.txt: empty list"),
    ("flag out of range", {"crop": 60}, _nothing, r"--crop=60: must be a multiple of 16, .*"),
    ("flag out of range", {"lr_task": 0.0}, _nothing, r"--lr_task=0.0: must be positive"),
    ("flag out of range", {"seed": -1}, _nothing, r"--seed=-1: must be >= 0"),
    ("data root missing", {"data_root": "/nonexistent/audjax"}, _nothing,
     r"--data_root=/nonexistent/audjax: no such directory"),
    ("workdir not writable", {}, lambda root, runs, tmp: (tmp / "file").write_text(""),
     r"--workdir=.*/file/work: .*/file is a file, not a directory"),
    ("--init_from, wrong phase", {"phase": "pretrain", "init_from": "RUN:pretrain"}, _nothing,
     r"--init_from=.*: only --phase=joint starts from another run \(not --phase=pretrain.*"),
    ("--init_from, networks do not fit", {"model": "C", "init_from": "RUN:pretrain_wide"},
     _nothing, r"--init_from=.*pretrain_wide: params/landmark_net/parts12/\w+/\w+ has shape "
     r"\(.*\) in .*/best/4, this run needs \(.*\)"),
    ("--init_from, networks do not fit", {"model": "C", "init_from": "RUN:joint_A"}, _nothing,
     r"--init_from=.*joint_A: .*/best/4 has no params/P/A_s/conv/bias"),  # A has no projectors
    ("--init_from, no checkpoint", {"model": "B", "init_from": "TMP:"}, _nothing,
     r"--init_from=[^:]*: no checkpoint \(expected RUN/best/<step>/state, .*\)"),
    ("--checkpoint not a run", {"phase": "eval", "checkpoint": "NOT_A_RUN", "data_root": ""},
     _nothing, r"--checkpoint=NOT_A_RUN: no such file or directory"),
    ("Orbax dir not a checkpoint", {"phase": "eval", "checkpoint": "TMP:junk"}, _not_orbax,
     r"--checkpoint=.*/junk: .*/junk/3: not an Orbax checkpoint, or one half deleted \(no "
     r"_CHECKPOINT_METADATA\); delete it or name a finished step"),
    ("half-written step", {"phase": "eval", "checkpoint": "TMP:work/checkpoints/4"},
     _half_written, r"--checkpoint=[^:]*/work/checkpoints/4: a half-written checkpoint \(no "
     r"commit_success.txt: .*\); delete it or name a finished step"),
    ("half-written newest step", {"init_from": "TMP:work/checkpoints"}, _half_written,
     r"--init_from=.*/work/checkpoints: .*/work/checkpoints/4: a half-written checkpoint .*"),
    ("resume, other --workers", {"workers": 2}, _copy_run("resumable"),
     r"--workers=2 differs from 0, the value .*/work was started with: resume with "
     r"--workers=0 or choose another --workdir"),
    ("resume, --noresume", {"resume": False}, _copy_run("resumable"),
     r"--noresume: .*/work already has checkpoints \(the latest .*/4\); choose another "
     r"--workdir"),
]


@pytest.fixture
def no_long_work(monkeypatch):
    """Fail the test if a run gets as far as generating data, training or evaluating."""
    def boom(*a, **k):
        raise AssertionError("long work started before the error was found")
    for name in ("ensure_synthau", "train_phase", "evaluate_checkpoint"):
        monkeypatch.setattr(train, name, boom)


@pytest.mark.parametrize(("case", "flags", "damage", "message"), CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_stops_early_with_one_line(synth_root, runs, tmp_path, no_long_work, case,
                                             flags, damage, message):
    root = fresh_root(synth_root, tmp_path)
    damage(root, runs, tmp_path)
    flags = {k: (str(runs[v[4:]]) if isinstance(v, str) and v.startswith("RUN:") else
                 str(tmp_path / v[4:]) if isinstance(v, str) and v.startswith("TMP:") else v)
             for k, v in flags.items()}
    config = tiny(root, synth_cache=str(tmp_path / "cache"), **{"model": "A", **flags})
    workdir = tmp_path / ("file/work" if "writable" in case else "work")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError) as error:
        train.train_and_evaluate(config, workdir)
    assert "\n" not in str(error.value)
    assert error.value.status == 2
    assert re.fullmatch(message, str(error.value)), str(error.value)
    # Nothing written: no workdir, no config.json, no SynthAU.
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_read_only_workdir_is_found_before_any_work(synth_root, tmp_path, no_long_work):
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        with pytest.raises(InputError, match=r"--workdir=.*/ro/run: cannot write in .*/ro "
                                             r"\(Read-only file system\)$"):
            train.train_and_evaluate(tiny(synth_root), disk / "run")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def run_cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env, **kw)


def test_cli_prints_one_line_and_exits_2(synth_root, tmp_path):
    flagfile = tmp_path / "mine.flags"
    flagfile.write_text("# my settings\n--crop=64\n--widht=0.25\n")
    r = run_cli(f"--flagfile={flagfile}")
    assert (r.returncode, r.stderr) == (2, f"error: {flagfile}:3: Unknown command line flag "
                                           "'widht'. Did you mean: width ?\n")
    r = run_cli("--phase=eval", "--checkpoint=NOT_A_RUN", f"--synth_cache={tmp_path}/cache",
                f"--workdir={tmp_path}/eval")
    assert (r.returncode, r.stderr) == (2, "error: --checkpoint=NOT_A_RUN: no such file or "
                                           "directory\n")
    assert sorted(tmp_path.iterdir()) == [flagfile]  # no SynthAU, no workdir


# ---------------------------------------------------------------------------------------------
# Bad files met late, non-finite steps
# ---------------------------------------------------------------------------------------------


def test_bad_images_are_warned_once_counted_and_limited(capsys):
    lists = Lists(paths=tuple(f"{i}.jpg" for i in range(5)), landmarks=np.zeros((5, 49, 2)),
                  au=np.zeros((5, 6), np.int32), weights=None, prefix="P")
    bad = BadImages({"source": lists}, "/nowhere", 64, limit=3)

    def batch(skipped, first):
        return {"image": 0, "bad": np.array(skipped), "bad_index": np.array(first)}

    b = batch([0, 2, 0], [-1, 4, -1])  # row 1 skipped entries 4 and 0 (wrapping around)
    bad.take("source", b, step=7)
    assert set(b) == {"image"}  # the step never sees the report
    bad.take("source", batch([1, 0, 0], [4, -1, -1]), step=8)  # entry 4 again: no new warning
    assert bad.total == 2 and bad.state() == {"source": [0, 4]}
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: step 7: skipped /nowhere/{i}.jpg (No such file or directory; "
                   f"P_path.txt:{i + 1}), replaced by the next usable image ({n} so far; the "
                   "run stops past --max_bad_images=3)" for i, n in ((4, 1), (0, 2))]
    resumed = BadImages({"source": lists}, "/nowhere", 64, limit=3)
    resumed.restore(bad.state())
    resumed.take("source", batch([1, 0, 0], [1, -1, -1]), step=9)
    with pytest.raises(InputError, match=r"^4 training images cannot be used, more than "
                                         r"--max_bad_images=3 \(the last: /nowhere/2.jpg .*"):
        resumed.take("source", batch([1], [2]), step=10)


def test_unusable_images_are_skipped_in_training_and_reported_by_evaluation(
        synth_root, tmp_path, capsys):
    root = fresh_root(synth_root, tmp_path)
    # Line 1 of each list is checked before training; later lines are met as the run goes.
    _truncate_image("source_train", 6)(root, None, tmp_path)
    _truncate_image("source_test", 3)(root, None, tmp_path)
    config = tiny(root, phase="pretrain", log_every=1, max_bad_images=1)
    results = train.train_and_evaluate(config, tmp_path / "run")
    err = capsys.readouterr().err
    bad_train = image_of(root, "source_train", 6)
    assert err.count(f"skipped {bad_train} (cannot decode image; ") == 1
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text()
               .splitlines() if '"train"' in x]
    counts = [r["bad_images"] for r in records]
    assert counts[-1] == 1 and counts == sorted(counts)  # counted from the step that met it
    corrupt = str(image_of(root, "source_test", 3).relative_to(root))
    assert results["source_test"]["skipped_images"] == [f"{corrupt}: cannot decode image"]
    assert results["target_test"]["skipped_images"] == []


def test_nonfinite_steps_are_skipped_then_stop_the_run(synth_root, tmp_path, monkeypatch,
                                                       capsys):
    make_step = steps.make_train_step

    def poisoned(*args, **kwargs):
        """The real step, fed NaN pixels at steps 3 and 6."""
        step_fn, calls = make_step(*args, **kwargs), []

        def run(state, batch):
            calls.append(1)
            if len(calls) in (3, 6):
                batch = {**batch, "image": batch["image"] * np.nan}
            return step_fn(state, batch)
        return run

    monkeypatch.setattr(steps, "make_train_step", poisoned)
    config = tiny(synth_root, phase="pretrain", pretrain_epochs=2, checkpoint_every=1, keep=10,
                  log_every=4, skip_nonfinite=1)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError) as error:
        train.train_and_evaluate(config, run)
    assert str(error.value) == (
        "step 6: non-finite loss_fl, nme; non-finite update of landmark_net (2 non-finite "
        "step(s), more than --skip_nonfinite=1); nothing saved after it, the latest checkpoint "
        f"is {run / 'checkpoints' / '5'}. Lower the learning rates, or look at that step's data")
    assert error.value.status == 3
    assert "warning: step 3: non-finite loss_fl, nme; non-finite update of landmark_net; the " \
           "step was skipped (1 of --skip_nonfinite=1)" in capsys.readouterr().err
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [1, 2, 3, 4, 5]
    saved = {s: ocp.StandardCheckpointer().restore((run / "checkpoints" / str(s) / "state")
                                                  .absolute()) for s in (2, 3, 4)}
    # Step 3 changed nothing but the step counter and the record of bad steps ...
    for key in ("params", "batch_stats", "opt_state"):
        for a, b in zip(jax.tree.leaves(saved[2][key]), jax.tree.leaves(saved[3][key]),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    assert saved[3]["health"]["nonfinite_steps"] == 1 and saved[3]["health"]["last_bad_step"] == 3
    # ... and training went on from there.
    assert not np.array_equal(jax.tree.leaves(saved[3]["params"])[0],
                              jax.tree.leaves(saved[4]["params"])[0])
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert (record["step"], record["nonfinite_steps"]) == (4, 1)


# ---------------------------------------------------------------------------------------------
# Kills, signals, reproducibility: real processes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(synth_root, tmp_path_factory):
    """Runs `tests/crash_hooks.py` (experiments.run with test hooks) on the tiny SynthAU: a
    12-step pretrain run, a checkpoint every 2 steps."""
    cache = tmp_path_factory.mktemp("jax_cache")
    env = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
           "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    flags = [f"--data_root={synth_root}", *[f"--{s}=list/{s}" for s in SPLITS],
             "--phase=pretrain", "--crop=64", "--width=0.25", "--pretrain_batch_size=8",
             "--pretrain_epochs=3", "--checkpoint_every=2", "--log_every=1", "--workers=0",
             "--eval_batch_size=16", "--mesh_data=1"]

    def start(workdir, hooks=None, log=None):
        return subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "crash_hooks.py"), *flags,
             f"--workdir={workdir}"], cwd=ROOT, env={**env, **(hooks or {})},
            stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True)

    return start


def wait_for(predicate, proc, timeout=240):
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before the moment to interrupt it"
        assert time.monotonic() < end
        time.sleep(0.05)


def final_state(run):
    step_dir = checkpoints.finished_steps(run / "checkpoints")[-1]
    return int(step_dir.name), ocp.StandardCheckpointer().restore((step_dir / "state").absolute())


def assert_same_run(run, reference):
    step, state = final_state(run)
    ref_step, ref_state = final_state(reference)
    assert step == ref_step == 12
    # Parameters, batch statistics, optimizer states, step and health, bit for bit.
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state), strict=True):
        np.testing.assert_array_equal(a, b)

    def results(r):
        return {k: v for k, v in json.loads((r / "results.json").read_text()).items()
                if k != "checkpoint"}

    def records(r):
        return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"}
                for x in (r / "metrics.jsonl").read_text().splitlines()]

    assert results(run) == results(reference)
    assert records(run) == records(reference)
    assert [p.name for p in (run / "best").iterdir()] == [p.name for p in
                                                         (reference / "best").iterdir()]


@pytest.fixture(scope="module")
def reference(cli, tmp_path_factory):
    """An uninterrupted run. The interrupted runs below repeat its command and must end bit for
    bit where it ended, so they also check that the same command gives the same results."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert cli(run).wait() == 0
    return run


def test_killed_and_stopped_runs_resume_bit_for_bit(cli, reference, tmp_path):
    run = tmp_path / "run"
    # 1. SIGKILL in the middle of saving checkpoint 4: only a temporary folder is left.
    assert cli(run, {"AUDJAX_TEST_DIE_IN_SAVE": "4"}).wait() == -signal.SIGKILL
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left[0] == "2" and left[1].startswith("4.orbax-checkpoint-tmp") and len(left) == 2
    # 2. The same command resumes from 2 (never reading the half save); SIGKILL it from
    # outside once checkpoint 6 is complete (saves wait 2 s first, so it is still the latest).
    proc = cli(run, {"AUDJAX_TEST_SLOW_SAVE": "2"})
    wait_for(lambda: (run / "checkpoints" / "6" / checkpoints.COMMIT_MARKER).exists(), proc)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    assert checkpoints.finished_steps(run / "checkpoints")[-1].name == "6"
    # 3. Again; SIGTERM after step 9: it finishes the step, saves and exits 0.
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = cli(run, log=out)
        wait_for(lambda: "step 9/12" in log.read_text(), proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    text = log.read_text()
    assert "SIGTERM: finishing this step, then saving a checkpoint and stopping" in text
    stopped = int(text.split("stopped by SIGTERM after step ")[1].split()[0])
    assert 9 <= stopped < 12
    assert f"checkpoint saved in {run / 'checkpoints' / str(stopped)}; run the same command " \
           "to continue" in text
    # 4. The same command finishes the run, exactly as the uninterrupted one did.
    assert cli(run).wait() == 0
    assert_same_run(run, reference)


def test_second_signal_stops_at_once(cli, tmp_path):
    run, log = tmp_path / "run", tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = cli(run, {"AUDJAX_TEST_SLOW_SAVE": "60"}, log=out)  # a save takes a minute
        wait_for(lambda: "step 1/12" in log.read_text(), proc)
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM: finishing this step" in log.read_text(), proc)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 128 + signal.SIGINT
    assert time.monotonic() - start < 30
    assert "SIGINT again: stopping now, without saving" in log.read_text()
    assert checkpoints.finished_steps(run / "checkpoints") == []
