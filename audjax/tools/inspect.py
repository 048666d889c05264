"""Describe a checkpoint without reading its arrays (`audjax inspect PATH [--json]`).

PATH is a run directory (its best checkpoint is described), a manager directory
(`RUN/checkpoints`: its latest step) or a step directory. Everything comes from Orbax's metadata
and the small JSON items: the steps present, the latest and the best (with the metric it was
chosen by), the phase and model, the flags the run used, the last validation metrics
(`metrics.jsonl` of the run directory), and per network its variables with shapes, dtypes and
parameter counts, with totals per parameter group (`state.GROUPS`).

    describe("runs/quickstart/joint")["networks"]["E_f"]["params"]   # parameter count
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from audjax import checkpoints
from audjax.config import Config
from audjax.state import GROUPS

COLLECTIONS = ("params", "batch_stats")


def describe(path) -> dict:
    """A JSON-able description of the checkpoint at `path` (module doc).

    Raises FileNotFoundError when `path` holds no checkpoint, ValueError when its `state` item
    has no Orbax metadata."""
    step_dir = checkpoints.resolve_checkpoint(path)
    config = checkpoints.read_checkpoint_config(step_dir)
    run_dir = _run_dir(step_dir)
    out = {"checkpoint": str(step_dir), "step": int(step_dir.name),
           "run": str(run_dir) if run_dir else None,
           "phase": config.get("phase"), "model": config.get("model"), "config": config,
           "steps": {}, "metrics": _manager_metrics(step_dir.parent, int(step_dir.name))}
    managers = ([run_dir / "checkpoints", run_dir / "best"] if run_dir else [step_dir.parent])
    for manager_dir in managers:
        steps = _steps(manager_dir)
        if steps:
            out["steps"][manager_dir.name] = steps
    latest = out["steps"].get("checkpoints") or out["steps"].get(step_dir.parent.name)
    out["latest"] = max(latest) if latest else None
    best = out["steps"].get("best")
    out["best"] = best[-1] if best else None
    if best:
        out["best_metrics"] = _manager_metrics(run_dir / "best", best[-1])
    if run_dir is not None:
        out["last_validation"] = _last_validation(run_dir / "metrics.jsonl")
    out["networks"], out["groups"] = _networks(step_dir)
    return out


def _run_dir(step_dir: Path) -> Path | None:
    """The run directory a step directory belongs to (RUN/best/<step>, RUN/checkpoints/<step>)."""
    if step_dir.parent.name in ("best", "checkpoints"):
        return step_dir.parent.parent
    return None


def _open_manager(manager_dir: Path) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        manager_dir.absolute(),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def _steps(manager_dir: Path) -> list[int]:
    if not manager_dir.is_dir():
        return []
    manager = _open_manager(manager_dir)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def _manager_metrics(manager_dir: Path, step: int) -> dict | None:
    """The `metrics` item of a step (e.g. the validation metrics a best step was chosen by)."""
    manager = _open_manager(manager_dir)
    try:
        return manager.metrics(step)
    except (FileNotFoundError, ValueError, KeyError):
        return None
    finally:
        manager.close()


def _last_validation(metrics_file: Path) -> dict | None:
    last = None
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if record.get("split") == "val":
                last = record
    return last


def _networks(step_dir: Path):
    """Per network: its variables (collection/path, shape, dtype, count) and counts per
    collection; per parameter group: its networks' parameter count. From metadata only."""
    metadata = ocp.StandardCheckpointer().metadata((step_dir / "state").absolute())
    if metadata.item_metadata is None:
        raise ValueError(f"{step_dir / 'state'}: no Orbax metadata (not a checkpoint?)")
    tree = metadata.item_metadata.tree
    networks = {}
    for collection in COLLECTIONS:
        for name, subtree in sorted(tree.get(collection, {}).items()):
            net = networks.setdefault(name, {"group": _group(name), "variables": [],
                                             **{c: 0 for c in COLLECTIONS}})
            for path, leaf in checkpoints.flat_items(subtree):
                count = math.prod(leaf.shape)
                net["variables"].append({"collection": collection, "path": path,
                                         "shape": list(leaf.shape),
                                         "dtype": np.dtype(leaf.dtype).name, "count": count})
                net[collection] += count
    groups = {}
    for group, members in GROUPS.items():
        present = [n for n in members if n in networks]
        if present:
            groups[group] = sum(networks[n]["params"] for n in present)
    groups["total"] = sum(net["params"] for net in networks.values())
    return networks, groups


def _group(name: str) -> str | None:
    return next((g for g, members in GROUPS.items() if name in members), None)


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def non_default_flags(config: dict) -> list[str]:
    """The run's flags that differ from `Config`'s defaults, as `--name=value`."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    out = []
    for name, value in sorted(config.items()):
        if name in defaults and value != defaults[name]:
            out.append(f"--no{name}" if value is False else
                       f"--{name}" if value is True else f"--{name}={value}")
    return out


def format_text(d: dict) -> str:
    """A description (`describe`) for people."""
    what = "the landmark net" if d["phase"] == "pretrain" else f"model {d['model']}"
    lines = [f"checkpoint   {d['checkpoint']} (step {d['step']})",
             f"phase        {d['phase']}, {what}"]
    steps = "; ".join(f"{k}/: {', '.join(map(str, v))}" for k, v in d["steps"].items())
    lines.append(f"steps        {steps}")
    latest = f"latest {d['latest']}" if d["latest"] is not None else "no latest"
    best = ""
    if d["best"] is not None:
        selection = (d.get("best_metrics") or {}).get("selection")
        best = f", best {d['best']}" + (f" (selection {selection:.4g})"
                                        if selection is not None else "")
    lines.append(f"             {latest}{best}")
    val = d.get("last_validation")
    if val:
        values = ", ".join(f"{k} {v:.4g}" for k, v in val.items()
                           if k not in ("phase", "split", "step", "epoch")
                           and isinstance(v, (int, float)))
        lines.append(f"validation   step {val['step']}: {values}")
    lines.append("flags        " + (" ".join(non_default_flags(d["config"])) or "(defaults)"))
    lines.append("networks     (parameters, batch-norm statistics)")
    for name, net in d["networks"].items():
        lines.append(f"  {name:<14}{net['group'] or '':<16}{net['params']:>12,} params"
                     f"{net['batch_stats']:>10,} statistics")
        for v in net["variables"]:
            shape = str(tuple(v["shape"]))
            lines.append(f"    {v['collection'] + '/' + v['path']:<42}{shape:<22}{v['dtype']:<10}"
                         f"{v['count']:>10,}")
    lines.append("groups       " + ", ".join(f"{g} {n:,}" for g, n in d["groups"].items()))
    return "\n".join(lines)

