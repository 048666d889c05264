"""Checkpoint round trip, the phase-1 -> phase-2 transplant, and reading with Orbax alone."""

import shutil
import subprocess
import types

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from audjax import checkpoints
from audjax import state as state_lib
from audjax.config import Config
from audjax.errors import InputError, SaveError

K = 6
CONFIG = Config(crop=64, width=0.25)


def make_state(phase, seed=0, config=CONFIG):
    nets = state_lib.build_networks(config, K)
    names = state_lib.network_names(config, phase)
    txs = state_lib.make_optimizers(config, names, 10, phase)
    state = state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(seed))
    # Every leaf made distinctive (optimizer moments and batch statistics included), in NumPy:
    # op by op in JAX each leaf shape would compile its own random draw.
    rng = np.random.default_rng(seed + 1)

    def distinctive(x):
        x = np.asarray(x)
        return jnp.asarray(x + (rng.uniform(size=x.shape).astype(x.dtype) if x.dtype.kind == "f"
                                else 7))

    return jax.tree.map(distinctive, state)


def test_save_restore_identical(tmp_path):
    state = make_state("joint")
    ck = checkpoints.RunCheckpoints(tmp_path, keep=2, higher_is_better=True)
    ck.save_latest(state, {}, CONFIG.to_json(), {"step": 7})
    ck.close()
    template = make_state("joint", seed=5)
    ck = checkpoints.RunCheckpoints(tmp_path, keep=2, higher_is_better=True)
    restored, metrics = ck.restore_latest(template, {})
    ck.close()
    assert metrics == {"step": 7}
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_best_keeps_the_best_only(tmp_path):
    state = make_state("pretrain")
    ck = checkpoints.RunCheckpoints(tmp_path, keep=2, higher_is_better=False)
    for step, nme in ((1, 9.0), (2, 7.0), (3, 8.0)):
        s = state.replace(step=jnp.asarray(step, jnp.int32))
        if ck.is_better(nme):
            ck.save_best(s, CONFIG.to_json(), {"selection": nme})
    assert ck.best_value() == 7.0
    assert ck.best.all_steps() == [2]
    ck.close()


def test_transplant_copies_exactly_and_orbax_alone_reads_it(tmp_path):
    pre = make_state("pretrain")
    ck = checkpoints.RunCheckpoints(tmp_path / "pretrain", keep=1, higher_is_better=False)
    ck.save_best(pre, CONFIG.replace(phase="pretrain").to_json(), {"selection": 1.0})
    ck.close()
    joint = make_state("joint", seed=3)
    params, bs, copied = checkpoints.transplant(tmp_path / "pretrain", joint.params,
                                                joint.batch_stats)
    # Read the phase-1 checkpoint with Orbax alone and compare leaf by leaf.
    step_dir = checkpoints.resolve_checkpoint(tmp_path / "pretrain")
    raw = ocp.StandardCheckpointer().restore((step_dir / "state").absolute())
    for col, tree in (("params", params), ("batch_stats", bs)):
        for src, dst in (("parts12", "E_f"), ("head", "landmark")):
            want = raw[col]["landmark_net"][src]
            assert jax.tree.structure(want) == jax.tree.structure(tree[dst])
            for a, b in zip(jax.tree.leaves(tree[dst]), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(a, b)
    # Everything else keeps its fresh values.
    for name in ("E_l", "G_b", "G_st", "E_au", "D_l", "D_s", "D_t", "P"):
        for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(joint.params[name]),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    n_leaves = sum(len(jax.tree.leaves(t[n])) for t in (params, bs) for n in ("E_f", "landmark"))
    assert len(copied) == n_leaves
    assert any("params/landmark_net/parts12/conv0/kernel -> params/E_f/conv0/kernel" == c
               for c in copied)


def test_transplant_mismatch_names_the_path(tmp_path):
    pre = make_state("pretrain")
    ck = checkpoints.RunCheckpoints(tmp_path / "pretrain", keep=1, higher_is_better=False)
    ck.save_best(pre, CONFIG.replace(phase="pretrain").to_json(), {"selection": 1.0})
    ck.close()
    wider = make_state("joint", config=CONFIG.replace(width=0.5))
    with pytest.raises(ValueError, match=r"params/landmark_net/parts12/\w+/\w+ has shape"):
        checkpoints.transplant(tmp_path / "pretrain", wider.params, wider.batch_stats)


def at_step(state, step):
    return state.replace(step=jnp.asarray(step, jnp.int32))


def test_only_finished_checkpoints_are_read(tmp_path, capsys):
    with pytest.raises(InputError, match="no such file"):
        checkpoints.resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(InputError, match=f"{tmp_path}: no checkpoint"):
        checkpoints.resolve_checkpoint(tmp_path)
    state = make_state("pretrain")
    ck = checkpoints.RunCheckpoints(tmp_path, keep=5, higher_is_better=True)
    ck.save_latest(at_step(state, 3), {}, CONFIG.to_json(), {"step": 3})
    ck.close()
    manager = tmp_path / "checkpoints"
    # What a run killed during a save leaves: passed over, and refused when named.
    tmp_save = manager / "5.orbax-checkpoint-tmp-1234"
    shutil.copytree(manager / "3", tmp_save)
    (tmp_save / checkpoints.COMMIT_MARKER).unlink()
    assert checkpoints.resolve_checkpoint(manager) == manager / "3"
    with pytest.raises(InputError, match="a half-written checkpoint .an interrupted save.; "):
        checkpoints.resolve_checkpoint(tmp_save)
    # A numbered step without Orbax's commit marker (a save interrupted where renames are not
    # atomic, a copy cut short) is refused when it is the one to read ...
    shutil.copytree(manager / "3", manager / "7")
    (manager / "7" / checkpoints.COMMIT_MARKER).unlink()
    for path in (manager, manager / "7"):
        with pytest.raises(InputError, match=r"/7: a half-written checkpoint \(no commit_succ"):
            checkpoints.resolve_checkpoint(path)
    # ... as is an old step whose deletion was interrupted, or anything else.
    (manager / "2" / "state").mkdir(parents=True)
    with pytest.raises(InputError, match=r"/2: not an Orbax checkpoint, or one half deleted"):
        checkpoints.resolve_checkpoint(manager / "2")
    assert checkpoints.finished_steps(manager) == [manager / "3"]
    # The run itself, restarted, removes them (Orbax would take them for checkpoints) and
    # resumes from the newest finished step; its next saves do not collide with the leftovers.
    ck = checkpoints.RunCheckpoints(tmp_path, keep=5, higher_is_better=True)
    assert capsys.readouterr().err.count("warning: removing ") == 2
    restored, metrics = ck.restore_latest(make_state("pretrain", seed=4), {})
    assert metrics == {"step": 3} and int(restored.step) == 3
    for step in (5, 7):
        ck.save_latest(at_step(state, step), {}, CONFIG.to_json(), {"step": step})
    ck.close()
    assert sorted(p.name for p in manager.iterdir()) == ["3", "5", "7"]


def test_fit_check_reads_metadata_only_and_names_the_path(tmp_path):
    ck = checkpoints.RunCheckpoints(tmp_path, keep=1, higher_is_better=True)
    ck.save_latest(make_state("pretrain"), {}, CONFIG.to_json(), {"step": 1})
    ck.close()
    step_dir = checkpoints.resolve_checkpoint(tmp_path / "checkpoints")
    wide = CONFIG.replace(width=0.5)
    template = {"params": jax.eval_shape(lambda: state_lib.init_variables(
        wide, state_lib.build_networks(wide, K), ("landmark_net",), jax.random.PRNGKey(0)))[0]}
    with pytest.raises(InputError, match=r"^W: params/landmark_net/head/bn0/bias has shape "
                                         r"\(32,\) in .*/checkpoints/7, this run needs \(64,\)$"):
        checkpoints.check_fits(step_dir, template, "W")
    with pytest.raises(InputError, match=r"^W: .*/7 has no params/E_f/head/bn0/bias$"):
        checkpoints.check_fits(step_dir, {"params": {"E_f": template["params"]["landmark_net"]}},
                               "W")


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs: a real full disk (needs the privilege to mount, which root has here)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.mark.parametrize("found", ["before the save", "by Orbax"])
def test_full_disk_keeps_the_previous_checkpoint(small_disk, monkeypatch, found):
    state = make_state("joint").replace(step=jnp.asarray(0, jnp.int32))
    size = sum(x.nbytes for x in jax.tree.leaves(state))
    assert 4_200_000 < size < 7_000_000  # one checkpoint fits in 8 MB, two do not
    ck = checkpoints.RunCheckpoints(small_disk, keep=2, higher_is_better=True)
    ck.save_latest(state, {}, CONFIG.to_json(), {"step": 0})
    if found == "by Orbax":  # hide the free-space check: the disk fills during the save
        monkeypatch.setattr(checkpoints.shutil, "disk_usage",
                            lambda path: types.SimpleNamespace(free=2**40))
        why = r"No space left on device \(errno 28\)"
    else:
        why = r"no room: it needs about 4.\d MiB, the disk has \d.\d MiB free"
    with pytest.raises(SaveError, match=rf"^saving checkpoint 1 in .*/checkpoints failed: {why}; "
                                        r"the latest complete one is .*/checkpoints/0\. Make room"):
        ck.save_latest(state.replace(step=state.step + 1), {}, CONFIG.to_json(), {"step": 1})
    ck.close()  # does not raise again
    monkeypatch.undo()
    ck = checkpoints.RunCheckpoints(small_disk, keep=2, higher_is_better=True)
    restored, metrics = ck.restore_latest(make_state("joint", seed=9), {})
    ck.close()
    assert metrics == {"step": 0}
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_read_only_disk_is_found_before_the_save(small_disk):
    state = make_state("pretrain").replace(step=jnp.asarray(0, jnp.int32))
    ck = checkpoints.RunCheckpoints(small_disk, keep=2, higher_is_better=True)
    ck.save_latest(state, {}, CONFIG.to_json(), {"step": 0})
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(SaveError, match=r"^saving checkpoint 1 in .*/checkpoints failed: "
                                        r"Read-only file system; the latest complete one is "
                                        r".*/checkpoints/0\. Make room"):
        ck.save_latest(state.replace(step=state.step + 1), {}, CONFIG.to_json(), {"step": 1})
    ck.close()
