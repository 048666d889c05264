"""The inspect and plot tools and verbs, docs/checkpoints.md's Orbax snippet and the Fig. 1
figure (`audjax visualize`), on the tiny runs of conftest's `tiny_runs`."""

import functools
import json
import math
import re
import shutil
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from audjax import checkpoints
from audjax.cli import inspect as inspect_cli
from audjax.cli import plot as plot_cli
from audjax.cli import visualize as visualize_cli
from audjax.inference import figure
from audjax.inference.detector import Detector
from audjax.state import GROUPS
from audjax.tools import inspect

ROOT = Path(__file__).resolve().parents[1]


def restored_state(run):
    step_dir = checkpoints.resolve_checkpoint(run)
    return ocp.StandardCheckpointer().restore((step_dir / "state").absolute())


def sizes(tree):
    return sum(math.prod(np.shape(x)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", ["joint", "pretrain"])
def test_inspect_counts_equal_the_restored_tree(tiny_runs, name, capsys, monkeypatch):
    run = tiny_runs[name]
    monkeypatch.chdir(run.parent)  # a relative path
    d = inspect.describe(name)
    state = restored_state(run)
    assert set(d["networks"]) == set(state["params"])
    for net, info in d["networks"].items():
        assert info["params"] == sizes(state["params"][net]), net
        assert info["batch_stats"] == sizes(state["batch_stats"].get(net, {})), net
        shapes = {v["path"]: tuple(v["shape"]) for v in info["variables"]
                  if v["collection"] == "params"}
        flat = jax.tree_util.tree_flatten_with_path(state["params"][net])[0]
        assert shapes == {"/".join(k.key for k in path): np.shape(x) for path, x in flat}
    for group, members in GROUPS.items():
        present = [n for n in members if n in state["params"]]
        assert d["groups"].get(group, 0) == sum(sizes(state["params"][n]) for n in present)
    assert d["groups"]["total"] == sizes(state["params"])
    assert d["phase"] == name and d["step"] == 5 and d["best"] == 5 and d["latest"] == 5
    assert d["steps"] == {"checkpoints": [3, 5], "best": [5]}
    assert d["best_metrics"]["selection"] == (7.5 if name == "pretrain" else 31.0)
    assert d["last_validation"]["step"] == 5

    # The command: text names every network with its count; --json is the description.
    assert inspect_cli.main([name]) == 0
    text = capsys.readouterr().out
    for net, info in d["networks"].items():
        assert re.search(rf"^  {net}\s+\w+\s+{info['params']:,} params", text, re.M), net
    assert "--crop=64" in text and "--width=0.25" in text
    assert inspect_cli.main([f"{name}/checkpoints/3", "--json"]) == 0
    step3 = json.loads(capsys.readouterr().out)
    assert step3["step"] == 3 and step3["networks"].keys() == d["networks"].keys()


def test_inspect_not_a_checkpoint(tmp_path, capsys):
    assert inspect_cli.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err and "no checkpoint" in err


def test_build_md_snippet_runs_as_written_with_a_relative_path(tiny_runs, tmp_path,
                                                               monkeypatch):
    text = (ROOT / "docs" / "checkpoints.md").read_text()
    section = text[text.index("## Opening a checkpoint with Orbax alone"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert '"runs/joint/best/1500"' in code
    shutil.copytree(checkpoints.resolve_checkpoint(tiny_runs["joint"]),
                    tmp_path / "runs" / "joint" / "best" / "1500")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="absolute"):  # why the snippet says .absolute()
        ocp.StandardCheckpointer().restore("runs/joint/best/1500/state")
    namespace = {}
    exec(compile(code, "docs/checkpoints.md", "exec"), namespace)  # noqa: S102 - the documented code
    want = restored_state(tiny_runs["joint"])
    np.testing.assert_array_equal(namespace["state"]["params"]["E_f"]["conv0"]["kernel"],
                                  want["params"]["E_f"]["conv0"]["kernel"])
    assert namespace["config"]["phase"] == "joint"
    assert namespace["tree"]["params"]["E_f"]["conv0"]["kernel"].shape == np.shape(
        want["params"]["E_f"]["conv0"]["kernel"])


def test_plot_writes_a_png(tiny_runs, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tiny_runs["joint"].parent)
    out = tmp_path / "curves.png"
    assert plot_cli.main(["joint", "pretrain", "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (900, 1600, 3)
    assert plot_cli.main([str(tmp_path), "--out", str(out)]) == 2  # no metrics.jsonl there


def test_cross_cycle_of_a_face_with_itself(tiny_runs):
    """Recombining a face with its own background is the target path: E_au(F_sltb) must equal
    the Detector's target-path probabilities, and both rounds give the same features."""
    det = Detector.from_run(tiny_runs["joint"], batch_size=1)
    image = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)), jnp.float32)
    fn = jax.jit(functools.partial(figure.cross_cycle, det.config, det.nets))
    r = fn(det.params, det.batch_stats, image, image)
    np.testing.assert_allclose(r["probs"]["F_sltb"], det.predict_crops(image)["probs"],
                               atol=1e-5)
    np.testing.assert_allclose(r["F_sltb"], r["F_sbtl"], atol=1e-6)
    np.testing.assert_allclose(r["probs"]["s_target_path"], r["probs"]["F_sltb"], atol=1e-6)


def test_visualize_writes_a_png(tiny_runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    for name in ("s.png", "t.png"):
        cv2.imwrite(str(tmp_path / name), cv2.resize(
            rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), (80, 80)))
    out = tmp_path / "fig1.png"
    assert visualize_cli.main(["--run", str(tiny_runs["joint"]), str(tmp_path / "s.png"),
                           str(tmp_path / "t.png"), "--aligned", "--out", str(out)]) == 0
    assert cv2.imread(str(out)) is not None
    # A phase-1 run has no separation networks: one line, status 2.
    assert visualize_cli.main(["--run", str(tiny_runs["pretrain"]), str(tmp_path / "s.png"),
                           str(tmp_path / "t.png"), "--aligned", "--out", str(out)]) == 2
    assert "needs a joint run" in capsys.readouterr().err
