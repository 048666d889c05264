"""`audjax <verb>`: the dispatcher, every verb's --help and flag errors, `python -m audjax` and
the console script alike, and `audjax synth` then `audjax check` end to end on tiny data."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from audjax import cli
from audjax.cli import common

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def audjax(*args, script=False):
    """Run `python -m audjax ARGS`, or with `script` what the console script runs: the entry
    point pyproject.toml names, called as setuptools' wrapper calls it."""
    if script:
        entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        module, name = entry["audjax"].split(":")
        code = (f"import sys; from {module} import {name}; sys.argv[0] = 'audjax'; "
                f"sys.exit({name}())")
        command = [sys.executable, "-c", code, *args]
    else:
        command = [sys.executable, "-m", "audjax", *args]
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)


def verb_module(verb):
    import importlib

    return importlib.import_module(f"audjax.cli.{verb}")


def test_help_lists_every_verb_and_the_script_agrees():
    r = audjax("--help")
    assert r.returncode == 0, r.stderr
    for verb, line in cli.VERBS.items():
        assert f"  {verb}" in r.stdout and line in r.stdout
    assert audjax("--help", script=True).stdout == r.stdout
    none = audjax()
    assert none.returncode == 2 and "verbs:" in none.stderr


def test_unknown_verb_names_it():
    for script in (False, True):
        r = audjax("predcit", script=script)
        assert r.returncode == 2
        assert "unknown verb 'predcit'" in r.stderr and "predict" in r.stderr


@pytest.mark.parametrize("verb", list(cli.VERBS))
def test_verb_help_lists_exactly_its_flags(verb, capsys):
    module = verb_module(verb)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["audjax", verb, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: audjax {verb} ")
    names = set(module.FLAGS)
    assert names and all(f"--{n}" in out or f"--[no]{n}" in out for n in names)
    others = {n for v in cli.VERBS if v != verb for n in verb_module(v).FLAGS} - names
    assert not [n for n in others if f"--{n}:" in out or f"--[no]{n}:" in out]
    assert "--flagfile" not in out and "--undefok" not in out  # absl's own flags stay out


def test_a_verb_runs_the_same_from_the_script():
    a, b = audjax("inspect", "--help"), audjax("inspect", "--help", script=True)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


@pytest.mark.parametrize(("args", "flag"), [
    (["predict", "x.jpg", "--run=r", "--out=o.csv", "--every=0"], "--every=0"),
    (["predict", "--bench", "--threshold=2"], "--threshold=2"),
    (["predict", "--batch_size=many"], "--batch_size=many"),
    (["bench", "--what=everything"], "--what=everything"),
    (["bench", "--model=Z"], "--model=Z"),
    (["synth", "--n_train=-1", "--out=x"], "--n_train=-1"),
    (["synth"], "--out"),  # required
    (["plot", "run"], "--out"),
    (["check", "p", "--crop=zero"], "--crop=zero"),
    (["inspect", "run", "--nosuchflag"], "nosuchflag"),
])
def test_a_bad_flag_is_named(args, flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["audjax", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"audjax {args[0]}: error: ") and flag in err


def test_wrong_arguments_are_usage_errors(capsys):
    for args in (["inspect"], ["inspect", "a", "b"], ["visualize", "a", "--run=r", "--out=o"],
                 ["predict", "x.jpg"], ["bench", "--what=pipeline"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["audjax", *args])
        assert exit_.value.code == 2, args
        assert f"audjax {args[0]}: error:" in capsys.readouterr().err


def test_synth_then_check_end_to_end(tmp_path):
    """Tiny SynthAU through the console script's entry point, then its lists checked by
    `python -m audjax check`; a missing image makes the check fail, naming the file and line."""
    out = tmp_path / "synth"
    r = audjax("synth", f"--out={out}", "--image_size=64", "--n_train=24", "--n_val=2",
               "--n_test=2", "--workers=1", script=True)
    assert r.returncode == 0, r.stderr
    assert f"SynthAU in {out}: 56 images at 64x64" in r.stdout
    prefix = out / "list" / "source_train"
    r = audjax("check", str(prefix), "--data_root", str(out), "--crop=56")
    assert r.returncode == 0, r.stderr
    assert "24 samples, 49 landmarks, 6 AUs" in r.stdout and "all 24 images decode" in r.stdout
    first = (out / Path(f"{prefix}_path.txt").read_text().split()[0])
    first.unlink()
    r = audjax("check", str(prefix), "--data_root", str(out))
    assert r.returncode == 2 and f"{prefix}_path.txt:1: image not found" in r.stderr


def test_ablation_and_table_flags(capsys):
    """experiments.ablation and experiments.table on absl: their own flags, --flagfile taken
    out for the runs, unknown flags passed to the runs, bad values named."""
    from experiments import ablation, table

    flagfile, rest = ablation.split_flagfile(["--flagfile", "x.flags", "--seeds=2",
                                              "--lambda_self=3"])
    assert flagfile == "x.flags" and rest == ["--seeds=2", "--lambda_self=3"]
    extra = common.parse(ablation.ABLATION, rest, ablation.PROG, "", "",
                             positional=(0, None), known_only=True)
    assert extra == ["--lambda_self=3"] and ablation.ABLATION.seeds == 2
    for args, named in ((["--models=Z"], "--models=Z"), (["--seeds=0"], "--seeds=0")):
        with pytest.raises(SystemExit) as exit_:
            ablation.main(args)
        assert exit_.value.code == 2 and named in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        table.main([])
    assert exit_.value.code == 2 and "python -m experiments.table: error" in (
        capsys.readouterr().err)
