"""The checks before any long work (SynthAU generation, compilation, training), and the run
plan they resolve.

A run that is going to fail on a flag, a path or a checkpoint should say so in the first
seconds, not after an hour of data generation or a day of training. `plan_run` raises
`InputError` (exit status 2 from the command line) with one line naming the flag, the file and
line, or the path, and it writes nothing: a run that fails here leaves no workdir, no
config.json and no SynthAU behind. What the checks found (the phases to train, the checkpoint
each resumes or starts from, the lists to read) is the `RunPlan` that `audjax.train` follows, so
nothing is resolved twice. The data checks (lists, images) follow in `train.load_data`, also
before any long work.

Checkpoints are checked through Orbax's metadata (shapes and paths, no array is read) against
the abstract state this run would build (`jax.eval_shape`, no array is made).
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jax
from flax import serialization

from audjax import checkpoints
from audjax import state as state_lib
from audjax.config import PRESET_FIELDS, Config
from audjax.data import synth
from audjax.errors import InputError

# Settings a resumed run must share with the run it continues: they shape the state or the data
# stream (the saved iterator positions only fit the same number of workers: grain's state for
# 0 workers and for N workers differ, and N -> M gives other batches without an error).
RESUME_FIXED = ("model", "crop", "width", "num_landmarks", "aus", "projectors", "seed",
                "workers", *PRESET_FIELDS)


@dataclass(frozen=True)
class PhasePlan:
    """One training phase as the checks resolved it: what `train.train_phase` runs.

    Attributes:
      config: the phase's configuration (for `--phase=all`'s joint phase, `--init_from` names
        its own pretrain run).
      phase: "pretrain" or "joint".
      workdir: the phase's run directory.
      resume: the latest finished checkpoint of `workdir`, which the phase continues from.
      start: how fresh weights start when there is nothing to resume: "scratch", "transplant"
        (the phase-1 landmark net into E_f and the head), "finetune" (every weight of a joint
        run) or "unused" (a pretrain run named, but the model takes no transplant).
      init_from: the checkpoint `start` reads; None when it does not exist yet (the joint phase
        of `--phase=all` starts from the best checkpoint its pretrain phase will write).
    """

    config: Config
    phase: str
    workdir: Path
    resume: Path | None = None
    start: str = "scratch"
    init_from: Path | None = None


@dataclass(frozen=True)
class RunPlan:
    """What a run does, resolved before any long work: the phases to train (in order), or the
    checkpoint to evaluate, and the lists to read."""

    workdir: Path
    phases: tuple[PhasePlan, ...]
    splits: tuple[str, ...]
    evaluate: Path | None = None


def plan_run(config: Config, workdir, synth_dir: Path | None = None) -> RunPlan:
    """Every check that needs no data (flags, the data root, output folders, checkpoints to
    resume from, to start from or to evaluate), and the plan they resolve. `synth_dir`: where
    SynthAU is cached (None with --data_root)."""
    try:
        config.validate()
    except ValueError as e:
        raise InputError(str(e)) from None
    if config.data_root and not Path(config.data_root).expanduser().is_dir():
        raise InputError(f"--data_root={config.data_root}: no such directory")
    workdir = Path(workdir)
    check_writable(workdir, f"--workdir={workdir}")
    if synth_dir is not None and synth.load_params(synth_dir) is None:  # to be generated
        check_writable(synth_dir.parent, f"--synth_cache={config.synth_cache}")

    phase = config.phase
    if config.init_from and phase != "joint":
        raise InputError(f"--init_from={config.init_from}: only --phase=joint starts from "
                         f"another run (not --phase={phase}; --phase=all starts its joint phase "
                         "from its own pretrain run, --phase=eval reads --checkpoint)")
    if config.checkpoint and phase != "eval":
        raise InputError(f"--checkpoint={config.checkpoint}: only --phase=eval reads it "
                         "(training resumes from --workdir and starts from --init_from)")
    if phase == "eval":
        return RunPlan(workdir, (), EVAL_SPLITS, evaluate=_check_eval(config))
    if phase == "all":
        pretrain = _plan_phase(config, "pretrain", workdir / "pretrain")
        joint = config.replace(init_from=str(workdir / "pretrain"))
        resume = check_resume(joint, "joint", workdir / "joint")
        start = "transplant" if joint.uses_transplant else "unused"
        phases = (pretrain, PhasePlan(joint, "joint", workdir / "joint", resume, start))
    else:
        phases = (_plan_phase(config, phase, workdir),)
    source_only = phase == "pretrain"
    return RunPlan(workdir, phases, (("source_train",) if source_only
                                     else ("source_train", "target_train")) + EVAL_SPLITS)


# The sets every run evaluates at its end (the order of the printed tables).
EVAL_SPLITS = ("target_test", "source_test", "target_val", "source_val")


def _plan_phase(config: Config, phase: str, workdir: Path) -> PhasePlan:
    resume = check_resume(config, phase, workdir)
    if phase != "joint" or resume is not None:
        return PhasePlan(config, phase, workdir, resume)
    start, init_from = _check_init_from(config)
    return PhasePlan(config, phase, workdir, None, start, init_from)


def check_writable(path: Path, what: str) -> None:
    """The folder `path` exists and takes files, or can be created: a file is made and removed
    in it or in its nearest existing parent (permission bits alone do not tell: root ignores
    them, and a read-only mount shows none)."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what}: {existing} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".audjax-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{what}: cannot write in {existing} ({e.strerror})") from None


def check_resume(config: Config, phase: str, run_dir: Path) -> Path | None:
    """When `run_dir` has checkpoints, check that this run can continue from the latest one and
    return it (None: the phase starts afresh)."""
    found = checkpoints.finished_steps(run_dir / "checkpoints")
    if not found:
        return None
    step_dir = found[-1]
    if not config.resume:
        raise InputError(f"--noresume: {run_dir} already has checkpoints (the latest "
                         f"{step_dir}); choose another --workdir")
    saved = checkpoints.read_checkpoint_config(step_dir)
    batch = config.batch_flag(phase)
    current = config.effective()  # the loss weights as the model's preset fills them in
    for name in (*RESUME_FIXED, batch):
        if saved.get(name, getattr(current, name)) != getattr(current, name):
            raise InputError(f"--{name}={getattr(current, name)} differs from {saved[name]}, the "
                             f"value {run_dir} was started with: resume with --{name}="
                             f"{saved[name]} or choose another --workdir")
    template = serialization.to_state_dict(abstract_state(config, phase))
    checkpoints.check_fits(step_dir, template, f"resuming {run_dir}")
    return step_dir


def _check_init_from(config: Config) -> tuple[str, Path | None]:
    """--init_from of the joint phase: a pretrain run to transplant (the transplant on: models B
    and C by default) or a joint run to fine-tune, whose networks fit this run's. Returns how
    the phase starts and from which checkpoint (`PhasePlan.start`, `PhasePlan.init_from`)."""
    if not config.init_from:
        if config.uses_transplant:
            raise InputError(f"--model={config.model} (with the transplant on) starts from the "
                             "phase-1 landmark net: pass --init_from=PRETRAIN_RUN_DIR (or use "
                             "--phase=all, or --notransplant)")
        return "scratch", None
    what = f"--init_from={config.init_from}"
    step_dir = _resolve(config.init_from, what)
    saved_phase = checkpoints.read_checkpoint_config(step_dir).get("phase")
    params, batch_stats = abstract_variables(config, "joint")
    if saved_phase == "pretrain":
        if not config.uses_transplant:
            return "unused", step_dir
        checkpoints.check_fits(step_dir, checkpoints.transplant_template(params, batch_stats),
                               what)
        return "transplant", step_dir
    if saved_phase == "joint":
        checkpoints.check_fits(step_dir, {"params": params, "batch_stats": batch_stats}, what)
        return "finetune", step_dir
    raise InputError(f"{what}: {step_dir} is a checkpoint of phase {saved_phase!r}; "
                     "expected a pretrain run (transplant) or a joint run (fine-tuning)")


def _check_eval(config: Config) -> Path:
    """The checkpoint --phase=eval reads, checked against the networks its config builds."""
    what = f"--checkpoint={config.checkpoint}"
    step_dir = _resolve(config.checkpoint, what)
    model_config = checkpoints.model_config(config, step_dir)
    params, batch_stats = abstract_variables(model_config, model_config.phase)
    checkpoints.check_fits(step_dir, {"params": params, "batch_stats": batch_stats}, what)
    return step_dir


def _resolve(path: str, what: str) -> Path:
    try:
        return checkpoints.resolve_checkpoint(path)
    except InputError as e:
        message = str(e).removeprefix(f"{Path(path).expanduser()}: ")  # named once is enough
        raise InputError(f"{what}: {message}") from None


def abstract_state(config: Config, phase: str):
    """The TrainState a run of `phase` starts from, as shapes and dtypes only."""
    nets = state_lib.build_networks(config, len(config.au_names))
    names = state_lib.network_names(config, phase)
    txs = state_lib.make_optimizers(config, names, 1, phase)
    return jax.eval_shape(lambda: state_lib.create_state(config, nets, names, txs,
                                                         jax.random.PRNGKey(0)))


def abstract_variables(config: Config, phase: str):
    """(params, batch_stats) of a run of `phase`, as shapes and dtypes only."""
    state = abstract_state(config, phase)
    return state.params, state.batch_stats
