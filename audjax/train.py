"""Training and evaluation of both phases: `train_and_evaluate(config, workdir)`.

Phase 1 (`pretrain`) trains the landmark net on source images with L_fl. Phase 2 (`joint`)
trains the framework of docs/design.md §3, starting from the phase-1 checkpoint (models B and C), a
phase-2 checkpoint (fine-tuning) or from scratch (model A, source-only). `all` runs both, in
WORKDIR/pretrain and WORKDIR/joint. Every run directory gets:

    config.json        the effective configuration
    metrics.jsonl      training and validation metrics, one JSON object per line
    tb/                TensorBoard event files
    checkpoints/, best/  Orbax checkpoints (see audjax.checkpoints)
    results.json, results.md  the final evaluation (per-AU tables, landmark NME)

Init order (big_vision): the workdir's own latest checkpoint (resume), then --init_from, then
scratch — so a restarted phase-2 run resumes instead of transplanting again.

What can go wrong, and what happens (docs/reliability.md "Every case" lists each; the classes that
handle it while training are in `audjax.guards`):

- Bad flags, paths, lists and checkpoints are found before any long work (`audjax.preflight`,
  `load_data`): InputError, nothing written.
- An image that cannot be used, met while training, is replaced by the next usable one (see
  `audjax.data.pipeline`), warned about once, counted in metrics.jsonl (`bad_images`), and the
  run stops past --max_bad_images. The set of such images is saved with each checkpoint.
- A step with a non-finite loss term or update is rejected on the device
  (`steps.guard_nonfinite`); the host reads the record with the metrics and before each save,
  and stops past --skip_nonfinite without saving (NonFiniteError): the latest checkpoint stays
  the last good one.
- SIGTERM or SIGINT: the step in progress finishes, a checkpoint is saved, and the run stops
  (Interrupted, exit status 0); the same command continues it. A second signal stops at once.
- A resumed run continues bit for bit (on CPU): model, optimizer states, step, data positions,
  and metrics.jsonl / TensorBoard records past the restored step are dropped.
"""

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from tensorboardX import SummaryWriter

from audjax import checkpoints, parallel, preflight, seeds, steps
from audjax import state as state_lib
from audjax.config import Config, list_prefixes
from audjax.data import images, pipeline
from audjax.data.lists import Lists, check_image_files, read_lists
from audjax.errors import InputError, Interrupted
from audjax.evaluate import Evaluator, format_markdown, format_table
from audjax.files import atomic_write
from audjax.guards import BadImages, Health, StopSignals
from audjax.labels import au_weights
from audjax.preflight import EVAL_SPLITS

# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class Data:
    root: str
    lists: dict[str, Lists]
    au_weights: np.ndarray


def synthau_dir(config: Config) -> Path:
    """SynthAU's cache directory for the configured size and seed."""
    base = Path(config.synth_cache).expanduser()
    shift = "" if config.synth_target_shift == "full" else f"_{config.synth_target_shift}"
    return base / (f"img{config.synth_image_size}_train{config.synth_train}"
                   f"_eval{config.synth_eval}_seed{config.synth_seed}{shift}")


def ensure_synthau(config: Config) -> Path:
    """Generate SynthAU once into the cache; later runs reuse it (regenerated only when the
    generator's version or parameters differ from the cached set's synthau.json)."""
    from audjax.data import synth

    out = synthau_dir(config)
    sizes = {"source_train": config.synth_train, "target_train": config.synth_train}
    sizes.update({f"{d}_{s}": config.synth_eval for d in ("source", "target")
                  for s in ("val", "test")})
    if synth.load_params(out) is None:
        print(f"generating SynthAU into {out} (once; later runs reuse it)", flush=True)
    synth.ensure(out, sizes=sizes, image_size=config.synth_image_size, seed=config.synth_seed,
                 target_shift=config.synth_target_shift)
    return out


def load_data(config: Config, splits) -> Data:
    """Read and check the lists of `splits` (InputError naming the flag, or the file and
    line). With --data_root every image must exist and the first of each list must be usable;
    the others are checked as training meets them. Without it, SynthAU is generated first
    (once): the first long work of a run, so every check that can come before it does."""
    if config.data_root:
        root = Path(config.data_root).expanduser()  # a directory: preflight.plan_run
    else:
        if "source_train" in splits:
            _check_batches(config, config.synth_train, f"--synth_train={config.synth_train}")
        root = parallel.in_turn(lambda: ensure_synthau(config))
    prefixes = list_prefixes(config)
    lists = {}
    for split in splits:
        prefix = root / prefixes[split]
        if not Path(f"{prefix}_path.txt").exists():
            raise InputError(f"--{split}={prefixes[split]}: no list {prefix}_path.txt "
                             f"under the data root {root}")
        lists[split] = read_lists(prefix, data_root=root, num_landmarks=config.num_landmarks)
        k = lists[split].au.shape[1]
        if k != len(config.au_names):
            raise InputError(f"{prefix}_AUoccur.txt has {k} AU columns but --aus names "
                             f"{len(config.au_names)}: {config.aus}")
        if config.data_root:  # SynthAU's generator checked its own images
            check_image_files(lists[split], root, crop=config.crop, decode="first")
    if config.data_root and "source_train" in lists:
        _check_batches(config, len(lists["source_train"]),
                       f"--source_train={prefixes['source_train']}")
    if "source_train" in lists:
        src = lists["source_train"]
        weights = src.weights if src.weights is not None else au_weights(src.au)
    else:
        weights = np.ones(len(config.au_names), np.float32)
    return Data(root=str(root), lists=lists, au_weights=weights)


def _check_batches(config: Config, n: int, what: str):
    """Each phase to train needs at least one batch of source training images per epoch."""
    if config.steps_per_epoch:
        return
    for phase in config.training_phases:
        flag, size = config.batch_flag(phase), config.phase_batch_size(phase)
        if n < size:
            raise InputError(f"{what}: {n} source training images, fewer than one batch "
                             f"(--{flag}={size})")


# ---------------------------------------------------------------------------------------------
# Records: progress line, metrics.jsonl, TensorBoard
# ---------------------------------------------------------------------------------------------


class Recorder:
    """Writes metrics to WORKDIR/metrics.jsonl and TensorBoard and prints progress lines; with
    several processes only process 0 does (the others' records would be copies)."""

    MAIN = ("loss_total", "loss_au", "loss_l", "loss_fl", "loss_c", "loss_cyc", "loss_adl",
            "loss_adf", "loss_d", "nme")

    def __init__(self, workdir: Path, phase: str, total_steps: int, steps_per_epoch: int,
                 images_per_step: int, start_step: int):
        self.main = parallel.is_main()
        if self.main:
            # A resumed run first forgets the records of steps after its checkpoint (a killed
            # run got further than it saved; those steps are done again): metrics.jsonl is
            # rewritten without them (atomically; a line cut short by the kill goes too) and
            # TensorBoard hides them (purge_step).
            jsonl = workdir / "metrics.jsonl"
            if start_step and jsonl.exists():
                atomic_write(jsonl, "".join(line + "\n"
                                            for line in _records_up_to(jsonl, start_step)))
            self.jsonl = open(jsonl, "a")  # noqa: SIM115 - closed in close()
            self.tb = SummaryWriter(str(workdir / "tb"),
                                    purge_step=start_step + 1 if start_step else None)
        self.phase, self.total, self.spe = phase, total_steps, steps_per_epoch
        self.images_per_step = images_per_step
        self.mark_step, self.mark_time = start_step, time.perf_counter()

    def write(self, step: int, split: str, values: dict):
        if not self.main:
            return
        flat = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        # A skipped non-finite step's values are written as null (JSON has no NaN).
        record = {k: v if math.isfinite(v) else None for k, v in flat.items()}
        self.jsonl.write(json.dumps({"phase": self.phase, "split": split, "step": step,
                                     "epoch": step / self.spe, **record}) + "\n")
        self.jsonl.flush()
        for k, v in flat.items():
            if math.isfinite(v):
                self.tb.add_scalar(f"{split}/{k}", v, step)
        self.tb.flush()

    def train_step(self, step: int, metrics: dict):
        if not self.main:
            return
        now = time.perf_counter()
        rate = (step - self.mark_step) * self.images_per_step / max(now - self.mark_time, 1e-9)
        self.mark_step, self.mark_time = step, now
        eta = (self.total - step) * self.images_per_step / max(rate, 1e-9)
        self.write(step, "train", {**metrics, "images_per_s": rate})
        losses = " ".join(f"{k.removeprefix('loss_')} {metrics[k]:.4g}" for k in self.MAIN
                          if k in metrics)
        epoch = math.ceil(step / self.spe)
        print(f"[{self.phase}] step {step}/{self.total} epoch {epoch} | {rate:.1f} img/s | "
              f"ETA {_duration(eta)} | {losses}", flush=True)

    def print(self, line: str):
        if self.main:
            print(line, flush=True)

    def close(self):
        if self.main:
            self.jsonl.close()
            self.tb.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _records_up_to(jsonl: Path, step: int) -> list[str]:
    """The lines of metrics.jsonl that are whole JSON records of steps <= `step`."""
    kept = []
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    return kept


# ---------------------------------------------------------------------------------------------
# One phase
# ---------------------------------------------------------------------------------------------


@dataclass
class PhaseRun:
    """Everything one phase trains with, set up by `start_phase`."""

    plan: preflight.PhasePlan
    nets: dict
    names: tuple[str, ...]
    txs: dict
    state: state_lib.TrainState
    streams: tuple[str, ...]  # "source", and "target" in the joint phase of models A-C
    iterators: dict  # "<stream>_iter" -> the stream's grain iterator
    bad_images: BadImages
    ckpts: checkpoints.RunCheckpoints
    batch: int
    epochs: int
    steps_per_epoch: int
    total: int

    def close(self):
        self.ckpts.close()
        for it in self.iterators.values():
            if hasattr(it, "close"):
                it.close()


def start_phase(plan: preflight.PhasePlan, data: Data, mesh) -> PhaseRun:
    """The networks, optimizers, data streams and checkpoints of a phase, and its state: the
    latest checkpoint's when the plan resumes, else fresh weights (`_initial_weights`)."""
    config, phase, workdir = plan.config, plan.phase, plan.workdir
    batch, epochs = config.phase_batch_size(phase), config.phase_epochs(phase)
    spe = config.steps_per_epoch or len(data.lists["source_train"]) // batch  # >= 1: load_data
    total = min(epochs * spe, config.max_steps or epochs * spe)
    nets = state_lib.build_networks(config, len(config.au_names))
    names = state_lib.network_names(config, phase)
    txs = state_lib.make_optimizers(config, names, spe, phase)
    state = state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(config.seed))
    # On the mesh before the restore: Orbax restores onto the template's shardings, whatever
    # the device count of the run that saved.
    state = parallel.replicate(mesh, state)

    shard = parallel.process_block(mesh, batch)  # this process's rows of each batch
    streams = ("source", "target") if phase == "joint" and config.model != "source_only" else (
        "source",)
    iterators = {f"{name}_iter": pipeline.train_iter(
        data.lists[f"{name}_train"], data.root, crop=config.crop, batch_size=batch,
        seed=seeds.stream_seed(config.seed, name), workers=config.workers, shard=shard)
        for name in streams}
    bad_images = BadImages({name: data.lists[f"{name}_train"] for name in streams}, data.root,
                           config.crop, config.max_bad_images)

    ckpts = checkpoints.RunCheckpoints(workdir, config.keep, higher_is_better=phase != "pretrain")
    restored = ckpts.restore_latest(state, iterators) if plan.resume is not None else None
    if restored is not None:
        state, saved_metrics = restored
        bad_images.restore(saved_metrics.get("bad_images", {}))
        print(f"[{phase}] resumed from {workdir / 'checkpoints'} at step {int(state.step)}",
              flush=True)
    else:
        params, bs = _initial_weights(plan, state.params, state.batch_stats)
        state = parallel.replicate(mesh, state_lib.fresh_optimizer_state(params, bs, txs))
    return PhaseRun(plan, nets, names, txs, state, streams, iterators, bad_images, ckpts, batch,
                    epochs, spe, total)


def _initial_weights(plan: preflight.PhasePlan, params, batch_stats):
    """The weights a phase starts from when it does not resume (`PhasePlan.start`): fresh, the
    phase-1 landmark net transplanted into E_f and the head (models B, C), or every weight of a
    joint run (fine-tuning, any model)."""
    if plan.start == "scratch":
        return params, batch_stats
    # --phase=all: the joint phase starts from what its pretrain phase has just written.
    step_dir = plan.init_from or checkpoints.resolve_checkpoint(plan.config.init_from)
    if plan.start == "finetune":
        params, batch_stats = checkpoints.load_weights(step_dir, params, batch_stats)
        print(f"fine-tuning from every weight of {step_dir}", flush=True)
    elif plan.start == "unused":
        print(f"note: the transplant is off (--model={plan.config.model}): E_f starts from "
              f"scratch and the pretrain run {step_dir} is not used", flush=True)
    else:
        params, batch_stats, copied = checkpoints.transplant(step_dir, params, batch_stats)
        log = plan.workdir / "transplant.log"
        atomic_write(log, "\n".join(copied) + "\n")
        head = ", parts 3-5 + CBAM + dense -> landmark head" if "landmark" in params else ""
        print(f"transplanted {len(copied)} arrays from {step_dir} (parts 1-2 -> E_f{head}; "
              f"every path in {log})", flush=True)
    return params, batch_stats


def train_phase(plan: preflight.PhasePlan, data: Data, mesh) -> dict:
    """Train one phase of the plan on the devices of `mesh` (audjax.parallel); returns the best
    validation metric. A stop signal ends it early with a checkpoint saved (Interrupted)."""
    config, phase = plan.config, plan.phase
    plan.workdir.mkdir(parents=True, exist_ok=True)
    config_json = config.replace(phase=phase).to_json()
    if parallel.is_main():
        atomic_write(plan.workdir / "config.json", config_json)
    run = start_phase(plan, data, mesh)
    recorder = Recorder(plan.workdir, phase, run.total, run.steps_per_epoch,
                        run.batch * len(run.streams), int(run.state.step))
    what = "landmark net" if phase == "pretrain" else f"model {config.model}"
    recorder.print(f"[{phase}] {what}: {', '.join(run.names)}; {run.steps_per_epoch} "
                   f"steps/epoch, {run.epochs} epochs, {run.total} steps, batch {run.batch} on "
                   f"{mesh.size} device(s), crop {config.crop}, width {config.width}")
    try:
        _train_steps(run, data, mesh, recorder, config_json)
    finally:
        run.close()
        recorder.close()
    return {"best": run.ckpts.best_value()}


def _train_steps(run: PhaseRun, data: Data, mesh, recorder: Recorder, config_json: str):
    """The training loop of a phase, from the state's step to the last: a step, its records
    every --log_every steps, validation and the best checkpoint each epoch, the latest
    checkpoint each epoch (and every --checkpoint_every steps, and on a stop signal)."""
    config, phase, ckpts = run.plan.config, run.plan.phase, run.ckpts
    step_fn = steps.make_train_step(config, phase, run.nets, run.txs, data.au_weights, mesh)
    evaluator = Evaluator(config, run.nets, run.names, mesh)
    health = Health(config, ckpts, run.state)
    state = run.state
    with StopSignals() as stop:
        for step in range(int(state.step) + 1, run.total + 1):
            batch_in = {}
            for name in run.streams:
                batch_in[name] = next(run.iterators[f"{name}_iter"])
                run.bad_images.take(name, batch_in[name], step)
            if phase == "pretrain":
                batch_in = batch_in["source"]
            state, metrics = step_fn(state, parallel.global_batch(mesh, batch_in))
            if step % config.log_every == 0 or step == run.total:
                values, h = jax.device_get((metrics, state.health))
                count = health.check(state, metrics, h)
                recorder.train_step(step, {**{k: float(v) for k, v in values.items()},
                                           "bad_images": run.bad_images.total,
                                           "nonfinite_steps": count})
            end_of_epoch = step % run.steps_per_epoch == 0 or step == run.total
            if end_of_epoch:
                val = validate(config, phase, evaluator, state, data)
                recorder.write(step, "val", val)
                recorder.print(f"[{phase}] validation at step {step}: "
                               + " ".join(f"{k} {v:.2f}" for k, v in val.items()))
                if ckpts.is_better(val["selection"]):
                    health.check(state, metrics)
                    ckpts.save_best(state, config_json, val)
            # Read once: a signal from here on waits a step. Every process stops at the same
            # step, when any of them got a signal (a collective; only with several).
            stopping = parallel.agreed_signal(stop.received)
            if (end_of_epoch or stopping
                    or (config.checkpoint_every and step % config.checkpoint_every == 0)):
                health.check(state, metrics)
                ckpts.save_latest(state, run.iterators, config_json,
                                  {"step": step, "bad_images": run.bad_images.state()})
            if stopping:
                raise Interrupted(
                    f"stopped by {stopping} after step {step} of {run.total}; checkpoint saved "
                    f"in {ckpts.latest.directory / str(step)}; run the same command to "
                    "continue")


def validate(config: Config, phase: str, evaluator: Evaluator, state, data: Data) -> dict:
    """Phase 1: source-val NME (lower is better). Phase 2: target-val mean F1 (higher)."""
    if phase == "pretrain":
        r = evaluator.evaluate(state.params, state.batch_stats, data.lists["source_val"],
                               data.root, "source")
        return {"nme": r["nme"], "failure_rate": r["failure_rate"], "selection": r["nme"]}
    r = evaluator.evaluate(state.params, state.batch_stats, data.lists["target_val"], data.root,
                           "target")
    return {"target_val_mean_f1": r["mean_f1"], "target_val_mean_acc": r["mean_acc"],
            "selection": r["mean_f1"]}


# ---------------------------------------------------------------------------------------------
# Final evaluation
# ---------------------------------------------------------------------------------------------


def evaluate_checkpoint(config: Config, checkpoint, data: Data, out_dir: Path, mesh) -> dict:
    """Evaluate a checkpoint's weights on the test and validation sets of both domains, on the
    devices of `mesh`; write results.json and results.md to `out_dir` and print the tables
    (process 0)."""
    step_dir = checkpoints.resolve_checkpoint(checkpoint)
    # The network comes from the checkpoint's config; data and evaluation from the current one.
    model_config = checkpoints.model_config(config, step_dir)
    phase = model_config.phase
    nets = state_lib.build_networks(model_config, len(model_config.au_names))
    names = state_lib.network_names(model_config, phase)
    # Shapes only: the weights come from the checkpoint.
    params, bs = jax.eval_shape(
        lambda: state_lib.init_variables(model_config, nets, names, jax.random.PRNGKey(0)))
    params, bs = parallel.replicate(mesh, checkpoints.load_weights(step_dir, params, bs))
    evaluator = Evaluator(model_config, nets, names, mesh)
    results = {"checkpoint": str(step_dir), "phase": phase, "model": model_config.model,
               "target_eval_path": config.target_eval_path}
    for split in EVAL_SPLITS:
        if split not in data.lists:
            continue
        domain = split.split("_")[0]
        path = config.target_eval_path if domain == "target" else "source"
        results[split] = evaluator.evaluate(params, bs, data.lists[split], data.root, path)
    if not parallel.is_main():
        return results  # the same in every process; process 0 writes and prints them
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "results.json", json.dumps(results, indent=2))
    atomic_write(out_dir / "results.md", f"# Results of {step_dir}\n\n"
                       + format_markdown({k: v for k, v in results.items()
                                          if isinstance(v, dict)}, model_config.au_names))
    for split in EVAL_SPLITS:
        r = results.get(split, {})
        if "f1" in r:
            print(format_table(split, r, model_config.au_names), flush=True)
        if "nme" in r:
            print(f"{split}: landmark NME {r['nme']:.2f}% failures {r['failure_rate']:.1f}%",
                  flush=True)
    return results


def with_aligned_size(config: Config, data: Data) -> Config:
    """`config` with --aligned_size measured from the first training image (the target
    domain's when there is one) when it is 0, so that the checkpoints record it."""
    if config.aligned_size:
        return config
    lists = data.lists.get("target_train") or data.lists["source_train"]
    image = images.load_image(str(Path(data.root) / lists.paths[0]))
    return config.replace(aligned_size=image.shape[0])


def train_and_evaluate(config: Config, workdir) -> dict:
    """Run `config.phase` in `workdir` and return the final results. Every check comes before
    any long work (`audjax.preflight`, then `load_data`); a failed check writes nothing. With
    several processes (--coordinator_address or --distributed) every process calls this, with
    the same config but its own --process_id, and the same `workdir` (a shared file system)."""
    try:
        config.validate()
    except ValueError as e:
        raise InputError(str(e)) from None
    # Before anything touches a device (reading Orbax metadata in preflight does).
    parallel.initialize(config)
    try:
        mesh = parallel.make_mesh(config)
        parallel.check_batch_sizes(config, mesh)
    except ValueError as e:
        raise InputError(str(e)) from None
    plan = preflight.plan_run(config, workdir, None if config.data_root else synthau_dir(config))
    data = load_data(config, plan.splits)
    if plan.evaluate is not None:
        return evaluate_checkpoint(config, plan.evaluate, data, plan.workdir, mesh)
    for phase in plan.phases:
        phase = dataclasses.replace(phase, config=with_aligned_size(phase.config, data))
        train_phase(phase, data, mesh)
    return evaluate_checkpoint(phase.config, phase.workdir, data, phase.workdir, mesh)
