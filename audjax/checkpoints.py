"""Orbax checkpoints of a run, resume, and the phase-1 -> phase-2 transplant (DESIGN §5).

A run directory holds two Orbax `CheckpointManager`s:

    WORKDIR/checkpoints/<step>/   the latest `keep` checkpoints: state, both data iterators'
                                  positions, config and metrics (what `--resume` needs)
    WORKDIR/best/<step>/          the best checkpoint so far by the phase's validation metric
                                  (phase 1: lowest NME; phase 2: highest target-val mean F1)

Each checkpoint is a plain Orbax composite: `state` is a nested dict of arrays
(`step`, `params/<net>`, `batch_stats/<net>`, `opt_state/<group>`), `config` and `metrics` are
JSON. Orbax alone opens one (BUILD.md shows how).
"""

import json
from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization


def _manager(directory: Path, max_to_keep: int) -> ocp.CheckpointManager:
    # With several processes a save ends with a barrier named after the step; the latest and
    # best managers save the same step at once, so each needs its own barrier names.
    processes = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name)
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             multiprocessing_options=processes),
    )


class RunCheckpoints:
    """The latest and best checkpoints of one run directory."""

    def __init__(self, workdir, keep: int, higher_is_better: bool):
        self.workdir = Path(workdir)
        self.latest = _manager(self.workdir / "checkpoints", keep)
        self.best = _manager(self.workdir / "best", 1)
        self.higher_is_better = higher_is_better
        self._best_value = self._read_best_value()

    def save_latest(self, state, iterators: dict, config_json: str, metrics: dict):
        """Save state, data positions, config and metrics at the state's step."""
        args = _items(state, config_json, metrics)
        for name, it in iterators.items():
            args[name] = grain.checkpoint.CheckpointSave(it)
        self.latest.save(_step(state), args=ocp.args.Composite(**args), force=True)

    def _read_best_value(self):
        step = self.best.latest_step()
        if step is None:
            return None
        metrics = self.best.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore()))
        return metrics["metrics"]["selection"]

    def best_value(self):
        """The best validation metric saved so far, or None."""
        return self._best_value

    def is_better(self, value: float) -> bool:
        best = self._best_value
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best

    def save_best(self, state, config_json: str, metrics: dict):
        """Save as the new best; metrics["selection"] is the value it was chosen by."""
        self.best.save(_step(state), args=ocp.args.Composite(
            **_items(state, config_json, metrics)), force=True)
        self._best_value = metrics["selection"]

    def restore_latest(self, template_state, iterators: dict):
        """Restore the latest checkpoint into `template_state`'s structure and the iterators (in
        place). Returns (state, metrics), or None when the run has no checkpoint."""
        step = self.latest.latest_step()
        if step is None:
            return None
        target = serialization.to_state_dict(template_state)
        args = {
            "state": ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                           target)),
            "metrics": ocp.args.JsonRestore(),
        }
        for name, it in iterators.items():
            args[name] = grain.checkpoint.CheckpointRestore(it)
        out = self.latest.restore(step, args=ocp.args.Composite(**args))
        state = serialization.from_state_dict(template_state, out["state"])
        return state, out["metrics"]

    def close(self):
        for m in (self.latest, self.best):
            m.wait_until_finished()
            m.close()


def _step(state) -> int:
    return int(jax.device_get(state.step))


def _items(state, config_json: str, metrics: dict) -> dict:
    """The items every checkpoint holds: the state as a nested dict, the config, the metrics."""
    return {
        "state": ocp.args.StandardSave(serialization.to_state_dict(state)),
        "config": ocp.args.JsonSave(json.loads(config_json)),
        "metrics": ocp.args.JsonSave(_jsonable(metrics)),
    }


def _jsonable(metrics: dict) -> dict:
    """Array scalars (numpy, jax) as floats; Python values as they are."""
    return {k: v if isinstance(v, (str, dict, list, int, float)) else float(v)
            for k, v in metrics.items()}


def resolve_checkpoint(path) -> Path:
    """A checkpoint step directory from a run directory (its best checkpoint), a manager
    directory (its latest step) or a step directory itself."""
    path = Path(path).expanduser()
    if (path / "state").is_dir():
        return path
    for candidate in (path / "best", path):
        steps = sorted((int(p.name), p) for p in candidate.glob("*")
                       if p.name.isdigit() and (p / "state").is_dir())
        if steps:
            return steps[-1][1]
    raise FileNotFoundError(f"no checkpoint under {path} (expected RUN/best/<step>/state, "
                            "RUN/checkpoints/<step>/state or <step>/state)")


def read_checkpoint_config(step_dir: Path) -> dict:
    return json.loads((Path(step_dir) / "config" / "metadata").read_text())


def restore_subtrees(step_dir: Path, template: dict) -> dict:
    """Partially restore the `state` item of a checkpoint: only the sub-trees in `template`
    (a nested dict like {"params": {"landmark_net": ...}}), with template shapes and dtypes.

    Orbax's partial restore neither complains about a missing key nor checks shapes, so the
    result is checked leaf by leaf here (the caller gets an error naming the path)."""
    ckptr = ocp.PyTreeCheckpointer()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restore_args = jax.tree.map(lambda x: ocp.RestoreArgs(restore_type=np.ndarray), template)
    restored = ckptr.restore(
        (Path(step_dir) / "state").absolute(),
        args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                    partial_restore=True),
    )
    check_same_structure(restored, template, f"checkpoint {step_dir}")
    return restored


def check_same_structure(got, want, what: str):
    """Raise ValueError naming the first path whose presence or shape differs."""
    got_leaves = dict(_flat(got))
    for path, leaf in _flat(want):
        if path not in got_leaves:
            raise ValueError(f"{what} has no {path}")
        if tuple(np.shape(got_leaves[path])) != tuple(np.shape(leaf)):
            raise ValueError(f"{what}: {path} has shape {np.shape(got_leaves[path])}, "
                             f"expected {np.shape(leaf)}")


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flat(v, f"{prefix}/{k}" if prefix else str(k))
    else:
        yield prefix, tree


def transplant(pretrain_dir, params: dict, batch_stats: dict):
    """Phase 2's start (DESIGN §5): copy the phase-1 landmark net's parts 1-2 into E_f and its
    head (parts 3-5, CBAM, dense layers) into the landmark head when the run has one, params and
    batch statistics.
    Phase-1 optimizer state is not carried. Returns (params, batch_stats, copied paths)."""
    step_dir = resolve_checkpoint(pretrain_dir)
    # The head only where the run has one (it is there for L_fl).
    mapping = {"parts12": "E_f", "head": "landmark"}
    mapping = {src: dst for src, dst in mapping.items() if dst in params}
    template = {
        col: {"landmark_net": {src: tree[dst] for src, dst in mapping.items()}}
        for col, tree in (("params", params), ("batch_stats", batch_stats))
    }
    restored = restore_subtrees(step_dir, template)
    params, batch_stats = dict(params), dict(batch_stats)
    copied = []
    for col, tree in (("params", params), ("batch_stats", batch_stats)):
        for src, dst in mapping.items():
            tree[dst] = jax.tree.map(np.asarray, restored[col]["landmark_net"][src])
            copied += [f"{col}/landmark_net/{src}/{p} -> {col}/{dst}/{p}"
                       for p, _ in _flat(tree[dst])]
    return params, batch_stats, copied


def load_weights(step_dir, params: dict, batch_stats: dict):
    """All params and batch statistics of a phase-2 checkpoint (fine-tuning, evaluation), checked
    against the given structure."""
    template = {"params": params, "batch_stats": batch_stats}
    restored = restore_subtrees(resolve_checkpoint(step_dir), template)
    return restored["params"], restored["batch_stats"]
