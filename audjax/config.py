"""The run configuration: one frozen dataclass, the single source of every setting and default.

`experiments/run.py` turns each field into an absl flag (same name, same default, the field's
`help`), so the paper's values live here once. Library code takes a `Config`; it never reads
flags. Tests build small configs directly, e.g. `Config(crop=64, width=0.25, batch_size=4)`.
"""

import dataclasses
import json
import math
from dataclasses import dataclass, field

PHASES = ("pretrain", "joint", "all", "eval")
MODELS = ("source_only", "A", "B", "C")  # the rows of the paper's Table 3, in its order
INITS = ("torch", "flax")
COMPUTE_DTYPES = ("float32", "bfloat16")

# The models of the paper's Table 3 as presets of the loss weights and the transplant
# (docs/design.md §3, §5). The shared weights are the paper's; ADLD's reconstruction losses replace
# L_c in A and B.
_SHARED = {"lambda_l": 0.6, "lambda_adl": 400.0, "lambda_adf": 1.2, "lambda_au": 1.0}
MODEL_PRESETS = {
    "C": {**_SHARED, "lambda_c": 100.0, "lambda_fl": 0.1, "lambda_cyc": 0.0, "lambda_self": 0.0,
          "transplant": True},
    "B": {**_SHARED, "lambda_c": 0.0, "lambda_fl": 0.1, "lambda_cyc": 40.0, "lambda_self": 3.0,
          "transplant": True},
    "A": {**_SHARED, "lambda_c": 0.0, "lambda_fl": 0.0, "lambda_cyc": 40.0, "lambda_self": 3.0,
          "transplant": False},
    # E_f + E_au on source labels: every other term is off.
    "source_only": {"lambda_c": 0.0, "lambda_l": 0.0, "lambda_adl": 0.0, "lambda_adf": 0.0,
                    "lambda_au": 1.0, "lambda_fl": 0.0, "lambda_cyc": 0.0, "lambda_self": 0.0,
                    "transplant": False},
}
PRESET_FIELDS = tuple(MODEL_PRESETS["C"])
# What defines a trained model's networks: a checkpoint's config gives these to evaluation.
MODEL_FIELDS = ("model", "crop", "width", "num_landmarks", "aus", "projectors", *PRESET_FIELDS)


def _f(default, help_text):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Config:
    # -- what to run -----------------------------------------------------------------------------
    phase: str = _f("joint", "pretrain (landmark net, L_fl), joint (docs/design.md §3), all "
                             "(pretrain then joint in WORKDIR/pretrain and WORKDIR/joint) or eval")
    model: str = _f("C", "a preset of the loss weights and the transplant (docs/design.md §5, "
                         "Table 3): C = the paper (multitask + alignment L_c), B = ADLD losses + "
                         "multitask (transplant, shared E_f, L_fl), A = ADLD baseline (E_f from "
                         "scratch), source_only = E_f + E_au on source labels alone. --lambda_* "
                         "and --transplant flags given after --model override the preset")
    # -- data --------------------------------------------------------------------------------------
    data_root: str = _f("", "root of the images and lists; empty = SynthAU, generated once "
                            "into --synth_cache")
    source_train: str = _f("", "list prefix relative to data_root (default: SynthAU's "
                               "list/source_train, or ADLD's list/BP4D_train with a data root)")
    source_val: str = _f("", "list prefix (default list/source_val or list/BP4D_val)")
    source_test: str = _f("", "list prefix (default list/source_test or list/BP4D_test)")
    target_train: str = _f("", "list prefix (default list/target_train or list/emotioNet_train)")
    target_val: str = _f("", "list prefix (default list/target_val or list/emotioNet_val)")
    target_test: str = _f("", "list prefix (default list/target_test or list/emotioNet_test)")
    synth_cache: str = _f("~/.cache/audjax/synthau", "where SynthAU is generated and reused")
    synth_image_size: int = _f(200, "SynthAU aligned image size (200 for crop 176)")
    synth_train: int = _f(4000, "SynthAU images in each domain's training set")
    synth_eval: int = _f(500, "SynthAU images in each validation and test set")
    synth_seed: int = _f(0, "SynthAU's generator seed (apart from --seed, so that runs of several "
                            "seeds share one data set)")
    synth_target_shift: str = _f("full", "what sets SynthAU's target domain apart: full (pose, "
                                         "occluders, background, camera, identity) or "
                                         "appearance (no pose change, no occluders)")
    aus: str = _f("AU1,AU2,AU4,AU6,AU12,AU17", "names of the AU label columns, in order")
    # -- model -------------------------------------------------------------------------------------
    crop: int = _f(176, "crop size S (a multiple of 16, >= 64); features are S/4")
    width: float = _f(1.0, "channel width multiplier (1.0 = the paper)")
    num_landmarks: int = _f(49, "landmarks per face")
    shift_au_centres: bool = _f(True, "ADLD's shift of some L_l targets to AU centres")
    projectors: bool = _f(True, "L_c passes reconstructions through learnable 1x1 projectors")
    scale_attention: bool = _f(True, "L_c multiplies attention maps by s*s before the L1")
    # -- optimisation ------------------------------------------------------------------------------
    batch_size: int = _f(16, "joint phase: images per domain per step")
    epochs: int = _f(12, "joint phase: epochs (an epoch = one pass over the source training set)")
    pretrain_batch_size: int = _f(8, "pretrain phase: images per step")
    pretrain_epochs: int = _f(20, "pretrain phase: epochs")
    steps_per_epoch: int = _f(0, "0 = source training images // batch_size")
    max_steps: int = _f(0, "stop after this many steps in total (0 = no limit); for smoke runs")
    seed: int = _f(0, "drives model init, data order and augmentation")
    workers: int = _f(2, "data worker processes per training stream (0 = in-process)")
    eval_batch_size: int = _f(64, "images per evaluation batch")
    lr_task: float = _f(1e-4, "Adam learning rate of E_f, E_l, E_au")
    b1_task: float = _f(0.95, "Adam beta1 of the task group")
    b2_task: float = _f(0.999, "Adam beta2 of the task group")
    lr_gen: float = _f(5e-5, "Adam learning rate of G_b, G_st and the projectors")
    b1_gen: float = _f(0.5, "Adam beta1 of the generators")
    b2_gen: float = _f(0.9, "Adam beta2 of the generators")
    lr_disc: float = _f(5e-5, "Adam learning rate of D_l, D_s, D_t")
    b1_disc: float = _f(0.5, "Adam beta1 of the discriminators")
    b2_disc: float = _f(0.9, "Adam beta2 of the discriminators")
    lr_landmark: float = _f(1e-4, "Adam learning rate of the landmark net (pretrain, constant) "
                                  "and of the landmark head (joint)")
    b1_landmark: float = _f(0.9, "Adam beta1 of the landmark group")
    b2_landmark: float = _f(0.999, "Adam beta2 of the landmark group")
    lr_decay_start: int = _f(4, "epochs at the full learning rate")
    lr_decay_every: int = _f(4, "then lowered linearly in steps of this many epochs (12 epochs: "
                                "factors 1, 2/3, 1/3)")
    # Loss weights and the transplant: None takes the value of the --model preset (MODEL_PRESETS).
    # A loss term is computed exactly when its weight is non-zero.
    lambda_c: float | None = _f(None, "weight of L_c, feature alignment (preset: C 100)")
    lambda_l: float | None = _f(None, "weight of L_l, E_l's landmark maps (preset: 0.6)")
    lambda_adl: float | None = _f(None, "weight of L_adl, landmark-free backgrounds against D_l "
                                        "(preset: 400)")
    lambda_adf: float | None = _f(None, "weight of L_adf, recombined features against D_s, D_t "
                                        "(preset: 1.2)")
    lambda_au: float | None = _f(None, "weight of L_au (preset: 1)")
    lambda_fl: float | None = _f(None, "weight of L_fl, the landmark head on E_f (preset: B and "
                                       "C 0.1)")
    lambda_cyc: float | None = _f(None, "weight of ADLD's cross-cycle L1 (preset: A and B 40)")
    lambda_self: float | None = _f(None, "weight of ADLD's self-reconstruction L1 (preset: A "
                                         "and B 3)")
    transplant: bool | None = _f(None, "start E_f (and the landmark head) from the phase-1 "
                                       "landmark net (preset: B and C)")
    init: str = _f("torch", "initialisation of fresh weights: torch (PyTorch's defaults, as ADLD: "
                            "kaiming-uniform a=sqrt(5), bias uniform +-1/sqrt(fan_in)) or flax "
                            "(Flax's lecun_normal kernels, zero biases)")
    au_bn_all: bool = _f(True, "E_au runs in training mode on all four features of ADLD (F_s, F_t, "
                               "F_sbtl, F_sltb, in that order) so that all four move its running "
                               "statistics; --noau_bn_all runs it on the two scored ones only")
    # -- devices and hosts (audjax.parallel; docs/devices.md) -----------------
    mesh_data: int = _f(0, "devices each batch is split over (the mesh's data axis; parameters "
                           "and optimizer states are replicated); 0 = every device of every "
                           "process. Training batch sizes must be multiples of it")
    coordinator_address: str = _f("", "several hosts: HOST:PORT where process 0 runs JAX's "
                                      "coordinator; with --num_processes and --process_id")
    num_processes: int = _f(1, "several hosts: the number of processes (with "
                               "--coordinator_address)")
    process_id: int = _f(0, "several hosts: this process's index, 0 .. --num_processes - 1")
    distributed: bool = _f(False, "several hosts under a launcher JAX recognises (SLURM, Open "
                                  "MPI, Cloud TPU): jax.distributed.initialize() reads the "
                                  "processes from the environment")
    # -- numerics --------------------------------------------------------------------------------
    compute_dtype: str = _f("float32", "dtype of convolutions and matmuls: float32 or bfloat16 "
                                       "(parameters, optimizer states, batch-norm statistics and "
                                       "losses stay float32)")
    # -- checkpoints and logging -------------------------------------------------------------------
    init_from: str = _f("", "joint: a pretrain run directory (transplant into E_f and the "
                            "landmark head) or a joint run directory (fine-tune all weights "
                            "with fresh optimizer states)")
    checkpoint: str = _f("", "eval: run directory (its best checkpoint) or checkpoint directory")
    target_eval_path: str = _f("target", "the final evaluation's path for target images: "
                                         "target (E_au(G_st(E_l(F), G_b(F))), ADLD's) or source "
                                         "(E_au(F), as for source images); validation always "
                                         "uses target")
    resume: bool = _f(True, "continue from the workdir's latest checkpoint when it has one")
    keep: int = _f(2, "latest checkpoints kept (the best one is kept apart)")
    checkpoint_every: int = _f(0, "also save every this many steps (0 = once per epoch)")
    log_every: int = _f(50, "steps between progress lines and metric records")
    # -- prediction (audjax.Detector) --------------------------------------------------------------
    aligned_size: int = _f(0, "side of the aligned training images, kept with the checkpoints so "
                              "that the Detector aligns new faces alike (0: measured from the "
                              "first training image when training starts)")
    # -- reliability -------------------------------------------------------------------------------
    max_bad_images: int = _f(10, "images that cannot be used (missing, undecodable, smaller than "
                                 "the crop, landmarks far off the image) skipped with a warning "
                                 "before the run stops; per training run and per evaluated set")
    skip_nonfinite: int = _f(0, "training steps with a non-finite loss or update that are "
                                "skipped (weights kept) before the run stops")

    # -- derived ---------------------------------------------------------------------------------
    @property
    def au_names(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.aus.split(",") if a.strip())

    @property
    def map_size(self) -> int:
        return self.crop // 4

    @property
    def training_phases(self) -> tuple[str, ...]:
        """The phases this run trains, in order: `all` trains both, `eval` none."""
        return {"all": ("pretrain", "joint"), "eval": ()}.get(self.phase, (self.phase,))

    @staticmethod
    def batch_flag(phase: str) -> str:
        """The flag that sets a training phase's batch size: phase 1 has its own."""
        return "pretrain_batch_size" if phase == "pretrain" else "batch_size"

    def phase_batch_size(self, phase: str) -> int:
        return getattr(self, self.batch_flag(phase))

    def phase_epochs(self, phase: str) -> int:
        return self.pretrain_epochs if phase == "pretrain" else self.epochs

    def preset(self, name: str):
        """The effective value of a preset field: the flag when given, else the model's preset."""
        value = getattr(self, name)
        return MODEL_PRESETS[self.model][name] if value is None else value

    @property
    def lambdas(self) -> dict[str, float]:
        """The effective loss weights by term: {"c": ..., "l": ..., ..., "self": ...}."""
        return {f.removeprefix("lambda_"): float(self.preset(f)) for f in PRESET_FIELDS
                if f.startswith("lambda_")}

    def uses(self, term: str) -> bool:
        """Whether loss term `term` ("c", "cyc", "fl", ...) is computed: its weight is non-zero."""
        return self.lambdas[term] != 0.0

    @property
    def uses_transplant(self) -> bool:
        return bool(self.preset("transplant"))

    def effective(self) -> "Config":
        """This config with every preset field filled in (what config.json records)."""
        return self.replace(**{f: self.preset(f) for f in PRESET_FIELDS})

    def validate(self) -> None:
        """Raise ValueError naming the flag at fault."""
        if self.phase not in PHASES:
            raise ValueError(f"--phase={self.phase!r}: expected one of {PHASES}")
        if self.model not in MODELS:
            raise ValueError(f"--model={self.model!r}: expected one of {MODELS}")
        if self.crop < 64 or self.crop % 16:
            raise ValueError(f"--crop={self.crop}: must be a multiple of 16, at least 64")
        if self.width <= 0:
            raise ValueError(f"--width={self.width}: must be positive")
        for name in ("batch_size", "epochs", "pretrain_batch_size", "pretrain_epochs",
                     "eval_batch_size", "log_every", "keep", "synth_train", "synth_eval"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)}: must be at least 1")
        if self.workers < 0 or self.steps_per_epoch < 0 or self.max_steps < 0:
            raise ValueError("--workers, --steps_per_epoch and --max_steps must be >= 0")
        if not self.au_names:
            raise ValueError("--aus is empty")
        if self.init not in INITS:
            raise ValueError(f"--init={self.init!r}: expected one of {INITS}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"--compute_dtype={self.compute_dtype!r}: expected one of "
                             f"{COMPUTE_DTYPES}")
        for name in PRESET_FIELDS:
            value = self.preset(name)
            if name.startswith("lambda_") and not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"--{name}={value}: must be a finite number >= 0")
        if self.model == "source_only":
            extra = [f for f in PRESET_FIELDS if f != "lambda_au" and self.preset(f)]
            if extra:
                raise ValueError(f"--{extra[0]}={self.preset(extra[0])} has no effect with "
                                 "--model=source_only (E_f + E_au alone)")
        if self.target_eval_path not in ("target", "source"):
            raise ValueError(f"--target_eval_path={self.target_eval_path!r}: expected target or "
                             "source")
        if self.aligned_size and self.aligned_size < self.crop:
            raise ValueError(f"--aligned_size={self.aligned_size}: must be 0 or at least --crop "
                             f"({self.crop})")
        self._validate_processes()
        if self.phase == "eval" and not self.checkpoint:
            raise ValueError("--phase=eval needs --checkpoint=DIR")
        self._validate_reliability()

    def _validate_reliability(self) -> None:
        """Values that would otherwise fail deep inside a run, after its long work began."""
        for name in ("max_bad_images", "skip_nonfinite", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}={getattr(self, name)}: must be >= 0")
        for group in ("task", "gen", "disc", "landmark"):
            lr, b1, b2 = (getattr(self, f"{k}_{group}") for k in ("lr", "b1", "b2"))
            if not lr > 0:
                raise ValueError(f"--lr_{group}={lr}: must be positive")
            for name, beta in ((f"b1_{group}", b1), (f"b2_{group}", b2)):
                if not 0 <= beta < 1:
                    raise ValueError(f"--{name}={beta}: must be in [0, 1)")
        if not self.data_root and self.synth_image_size < max(self.crop, 32):
            raise ValueError(f"--synth_image_size={self.synth_image_size}: SynthAU images must "
                             f"be at least --crop={self.crop} (and 32)")

    def _validate_processes(self) -> None:
        if self.mesh_data < 0:
            raise ValueError(f"--mesh_data={self.mesh_data}: must be >= 0 (0 = every device)")
        if self.num_processes < 1:
            raise ValueError(f"--num_processes={self.num_processes}: must be at least 1")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"--process_id={self.process_id}: must be in 0 .. "
                             f"{self.num_processes - 1} (--num_processes={self.num_processes})")
        if self.num_processes > 1 and not self.coordinator_address:
            raise ValueError(f"--num_processes={self.num_processes} needs "
                             "--coordinator_address=HOST:PORT (or --distributed alone under "
                             "a cluster launcher)")
        host, _, port = self.coordinator_address.rpartition(":")
        if self.coordinator_address and not (host and port.isdigit()):
            raise ValueError(f"--coordinator_address={self.coordinator_address!r}: expected "
                             "HOST:PORT")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """The effective configuration (preset fields filled in) as JSON."""
        return json.dumps(dataclasses.asdict(self.effective()), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        return cls(**d)


def list_prefixes(config: Config) -> dict[str, str]:
    """The six list prefixes: the flags where given, else SynthAU's or ADLD's names."""
    adld = {"source": "BP4D", "target": "emotioNet"}
    out = {}
    for domain in ("source", "target"):
        for split in ("train", "val", "test"):
            key = f"{domain}_{split}"
            default = (f"list/{adld[domain]}_{split}" if config.data_root else f"list/{key}")
            out[key] = getattr(config, key) or default
    return out
