"""Orbax checkpoints of a run, resume, and the phase-1 -> phase-2 transplant (docs/design.md §5).

A run directory holds two Orbax `CheckpointManager`s:

    WORKDIR/checkpoints/<step>/   the latest `keep` checkpoints: state, both data iterators'
                                  positions, config and metrics (what `--resume` needs)
    WORKDIR/best/<step>/          the best checkpoint so far by the phase's validation metric
                                  (phase 1: lowest NME; phase 2: highest target-val mean F1)

Each checkpoint is a plain Orbax composite: `state` is a nested dict of arrays
(`step`, `params/<net>`, `batch_stats/<net>`, `opt_state/<group>`), `config` and `metrics` are
JSON. Orbax alone opens one (docs/checkpoints.md shows how).

Saves are atomic: Orbax writes <step>.orbax-checkpoint-tmp..., renames it to <step> when it is
complete and leaves its marker, commit_success.txt, inside. A run killed during a save leaves
only the temporary folder, which nothing here reads and the next run's manager deletes. A
numbered folder without the marker (a save interrupted on a file system without atomic renames,
an old step whose deletion was interrupted, a copy cut short) is never read either: named as
--init_from or --checkpoint it is an error, and in a run's own directories the restarted run
removes it (Orbax itself would take it for a checkpoint).

Saves wait until written, so a failure (disk full, read-only) is reported at once, naming its
step, with the previous checkpoint intact; a disk without room for the arrays, or that takes no
files, is found before the save starts.
"""

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from audjax.config import MODEL_FIELDS, Config
from audjax.errors import InputError, SaveError

TMP_SUFFIX = ".orbax-checkpoint-tmp"
COMMIT_MARKER = "commit_success.txt"


def _manager(directory: Path, max_to_keep: int) -> ocp.CheckpointManager:
    # With several processes a save ends with a barrier named after the step; the latest and
    # best managers save the same step at once, so each needs its own barrier names.
    processes = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name)
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             cleanup_tmp_directories=True,
                                             multiprocessing_options=processes),
    )


class RunCheckpoints:
    """The latest and best checkpoints of one run directory."""

    def __init__(self, workdir, keep: int, higher_is_better: bool):
        self.workdir = Path(workdir)
        self.latest = _manager(self.workdir / "checkpoints", keep)
        self.best = _manager(self.workdir / "best", 1)
        for manager in (self.latest, self.best):
            _remove_unfinished(manager)
        self.higher_is_better = higher_is_better
        self._best_value = self._read_best_value()
        self._failed = False

    def save_latest(self, state, iterators: dict, config_json: str, metrics: dict):
        """Save state, data positions, config and metrics at the state's step."""
        args = _items(state, config_json, metrics)
        for name, it in iterators.items():
            args[name] = grain.checkpoint.CheckpointSave(it)
        self._save(self.latest, _step(state), args)

    def _save(self, manager: ocp.CheckpointManager, step: int, args: dict):
        """Save and wait until it is on disk; a failure raises SaveError naming the step.

        A disk without room for the arrays, or one that takes no files, is found before Orbax
        starts (cleanly: a failure in the middle of a save also logs Orbax's own tracebacks)."""
        need = sum(x.nbytes for x in jax.tree.leaves(args["state"].item))
        try:
            probe, name = tempfile.mkstemp(prefix=".audjax-room-check-", dir=manager.directory)
            os.close(probe)
            os.unlink(name)
        except OSError as e:
            raise self._save_error(manager, step, e.strerror) from e
        free = shutil.disk_usage(manager.directory).free
        if free < need * 1.1 + 2**20:
            raise self._save_error(manager, step, f"no room: it needs about {need / 2**20:.1f} "
                                                  f"MiB, the disk has {free / 2**20:.1f} MiB free")
        try:
            manager.save(step, args=ocp.args.Composite(**args), force=True)
            manager.wait_until_finished()
        except Exception as e:
            code = _os_error_code(e)
            if code is None:  # not the disk's doing: a bug, with its traceback
                raise
            raise self._save_error(manager, step, f"{os.strerror(code)} (errno {code})") from e

    def _save_error(self, manager: ocp.CheckpointManager, step: int, why: str) -> SaveError:
        self._failed = True
        manager.reload()
        kept = [s for s in manager.all_steps() if s != step]
        previous = (f"the latest complete one is {manager.directory / str(max(kept))}"
                    if kept else "there is no earlier one")
        return SaveError(f"saving checkpoint {step} in {manager.directory} failed: {why}; "
                         f"{previous}. Make room (or fix the permissions) and run the same "
                         "command to continue")

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
        step = _step(state)
        if step in self.best.all_steps():
            # Left by a run killed after its best save and before its latest one at this step;
            # the resumed run redoes that step and chose it again.
            self.best.delete(step)
        self._save(self.best, step, _items(state, config_json, metrics))
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
            try:
                m.wait_until_finished()
                m.close()
            except Exception:
                if not self._failed:  # else the SaveError already on its way says it all
                    raise


def _step(state) -> int:
    return int(jax.device_get(state.step))


def _items(state, config_json: str, metrics: dict) -> dict:
    """The items every checkpoint holds: the state as a nested dict, the config, the metrics."""
    return {
        "state": ocp.args.StandardSave(serialization.to_state_dict(state)),
        "config": ocp.args.JsonSave(json.loads(config_json)),
        "metrics": ocp.args.JsonSave(_jsonable(metrics)),
    }


def _os_error_code(error: BaseException) -> int | None:
    """The errno of a failed write: an OSError's, or the one TensorStore writes into the long
    ValueError it raises ("... No space left on device [os_error_code='28']"); else None."""
    while error is not None:
        if getattr(error, "errno", None):
            return error.errno
        found = re.search(r"os_error_code='?(\d+)", str(error))
        if found:
            return int(found.group(1))
        error = error.__cause__ or error.__context__
    return None


def _jsonable(metrics: dict) -> dict:
    """Array scalars (numpy, jax) as floats; Python values as they are."""
    return {k: v if isinstance(v, (str, dict, list, int, float)) else float(v)
            for k, v in metrics.items()}


def resolve_checkpoint(path) -> Path:
    """A checkpoint step directory from a run directory (its best checkpoint), a manager
    directory (its latest step) or a step directory itself. Raises InputError naming the path
    when there is none, or when the step it would read is unfinished or not audjax's."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if TMP_SUFFIX in path.name or (path / "state").is_dir():
        chosen = path
    else:
        found = step_dirs(path / "best") or step_dirs(path)
        if not found:
            raise InputError(f"{path}: no checkpoint (expected RUN/best/<step>/state, "
                             "RUN/checkpoints/<step>/state or <step>/state)")
        chosen = found[-1]
    why = unfinished(chosen)
    if why is not None:
        raise InputError(f"{chosen}: {why}; delete it or name a finished step")
    return chosen


def step_dirs(directory) -> list[Path]:
    """The numbered folders of an Orbax manager directory, oldest first (finished or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [p for _, p in sorted((int(p.name), p) for p in directory.iterdir()
                                 if p.name.isdigit())]


def finished_steps(directory) -> list[Path]:
    """The finished checkpoints of an Orbax manager directory, oldest first."""
    return [p for p in step_dirs(directory) if unfinished(p) is None]


def unfinished(step_dir: Path) -> str | None:
    """Why `step_dir` must not be read, or None for a finished audjax checkpoint."""
    if TMP_SUFFIX in step_dir.name:
        return "a half-written checkpoint (an interrupted save)"
    if not (step_dir / "_CHECKPOINT_METADATA").is_file():
        return ("not an Orbax checkpoint, or one half deleted (no _CHECKPOINT_METADATA)")
    if not (step_dir / COMMIT_MARKER).is_file():
        return (f"a half-written checkpoint (no {COMMIT_MARKER}: a save that did not finish, or "
                "an incomplete copy)")
    if not (step_dir / "state" / "_METADATA").is_file():
        return "not an audjax checkpoint (no state item)"
    return None


def _remove_unfinished(manager: ocp.CheckpointManager):
    """Delete the numbered folders a killed run left half written or half deleted (Orbax would
    take them for checkpoints: it trusts any numbered folder on a local disk)."""
    removed = False
    for step_dir in step_dirs(manager.directory):
        why = unfinished(step_dir)
        if why is not None:
            print(f"warning: removing {step_dir}: {why}", file=sys.stderr, flush=True)
            shutil.rmtree(step_dir)
            removed = True
    if removed:
        manager.reload()


def read_checkpoint_config(step_dir) -> dict:
    """The run configuration saved with a checkpoint (a dict, as JSON has it)."""
    file = Path(step_dir) / "config" / "metadata"
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise InputError(f"{step_dir}: not an audjax checkpoint (no config item)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{file}: unreadable ({e})") from None


def model_config(config: Config, step_dir) -> Config:
    """`config` with the settings that define a checkpoint's networks (`MODEL_FIELDS`: model,
    crop, width, landmarks, AUs, projectors, loss weights, transplant; and the phase) taken from
    the checkpoint: what evaluating it needs."""
    saved = read_checkpoint_config(step_dir)
    try:
        saved = Config.from_dict(saved)
    except (TypeError, ValueError) as e:
        raise InputError(f"{step_dir}: its config does not fit this audjax ({e})") from None
    return config.replace(phase=saved.phase, **{f: getattr(saved, f) for f in MODEL_FIELDS})


def check_fits(step_dir, template: dict, what: str):
    """Raise InputError naming the first path of `template` (a nested dict of arrays or
    jax.ShapeDtypeStructs, laid out like the checkpoint's state) that the checkpoint lacks or
    holds with another shape. Reads Orbax's metadata only, no array."""
    metadata = ocp.StandardCheckpointHandler().metadata((Path(step_dir) / "state").absolute())
    tree = getattr(metadata, "tree", None)
    if not isinstance(tree, dict):
        raise InputError(f"{what}: {step_dir}/state is not an Orbax array checkpoint")
    shapes = {path: tuple(leaf.shape) for path, leaf in flat_items(tree)}
    for path, leaf in flat_items(template):
        if path not in shapes:
            raise InputError(f"{what}: {step_dir} has no {path}")
        if shapes[path] != tuple(leaf.shape):
            raise InputError(f"{what}: {path} has shape {shapes[path]} in {step_dir}, this run "
                             f"needs {tuple(leaf.shape)}")


def restore_subtrees(step_dir: Path, template: dict) -> dict:
    """Partially restore the `state` item of a checkpoint: only the sub-trees in `template`
    (a nested dict like {"params": {"landmark_net": ...}}), with template shapes and dtypes.

    Orbax's partial restore neither complains about a missing key nor checks shapes, so the
    checkpoint is checked against the template first (the error names the path)."""
    check_fits(step_dir, template, f"checkpoint {step_dir}")
    ckptr = ocp.PyTreeCheckpointer()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restore_args = jax.tree.map(lambda x: ocp.RestoreArgs(restore_type=np.ndarray), template)
    return ckptr.restore(
        (Path(step_dir) / "state").absolute(),
        args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                    partial_restore=True),
    )


def flat_items(tree, prefix=""):
    """(path, leaf) of a nested dict, paths joined with "/": {"a": {"b": 1}} -> ("a/b", 1)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flat_items(v, f"{prefix}/{k}" if prefix else str(k))
    else:
        yield prefix, tree


TRANSPLANT = {"parts12": "E_f", "head": "landmark"}


def transplant_map(params: dict) -> dict:
    """The parts of the phase-1 landmark net this run takes: parts 1-2 for E_f, and the head
    where the run has one (it is there for L_fl)."""
    return {src: dst for src, dst in TRANSPLANT.items() if dst in params}


def transplant_template(params: dict, batch_stats: dict) -> dict:
    """Where the transplant reads: the phase-1 landmark net's parts shaped as E_f and, where the
    run has one, the landmark head of this run (arrays or ShapeDtypeStructs)."""
    mapping = transplant_map(params)
    return {col: {"landmark_net": {src: tree[dst] for src, dst in mapping.items()}}
            for col, tree in (("params", params), ("batch_stats", batch_stats))}


def transplant(pretrain_dir, params: dict, batch_stats: dict):
    """Phase 2's start (docs/design.md §5): copy the phase-1 landmark net's parts 1-2 into E_f and
    its head (parts 3-5, CBAM, dense layers) into the landmark head when the run has one, params and
    batch statistics.
    Phase-1 optimizer state is not carried. Returns (params, batch_stats, copied paths)."""
    step_dir = resolve_checkpoint(pretrain_dir)
    restored = restore_subtrees(step_dir, transplant_template(params, batch_stats))
    params, batch_stats = dict(params), dict(batch_stats)
    copied = []
    for col, tree in (("params", params), ("batch_stats", batch_stats)):
        for src, dst in transplant_map(params).items():
            tree[dst] = jax.tree.map(np.asarray, restored[col]["landmark_net"][src])
            copied += [f"{col}/landmark_net/{src}/{p} -> {col}/{dst}/{p}"
                       for p, _ in flat_items(tree[dst])]
    return params, batch_stats, copied


def load_weights(step_dir, params: dict, batch_stats: dict):
    """All params and batch statistics of a phase-2 checkpoint (fine-tuning, evaluation), checked
    against the given structure."""
    template = {"params": params, "batch_stats": batch_stats}
    restored = restore_subtrees(resolve_checkpoint(step_dir), template)
    return restored["params"], restored["batch_stats"]
