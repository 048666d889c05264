"""The run configuration: one frozen dataclass, the single source of every setting and default.

`experiments/run.py` turns each field into an absl flag (same name, same default, the field's
`help`), so the paper's values live here once. Library code takes a `Config`; it never reads
flags. Tests build small configs directly, e.g. `Config(crop=64, width=0.25, batch_size=4)`.
"""

import dataclasses
import json
from dataclasses import dataclass, field

PHASES = ("pretrain", "joint", "all", "eval")
MODELS = ("C", "B", "A", "source_only")


def _f(default, help_text):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Config:
    # -- what to run -----------------------------------------------------------------------------
    phase: str = _f("joint", "pretrain (landmark net, L_fl), joint (DESIGN §3), all (pretrain "
                             "then joint in WORKDIR/pretrain and WORKDIR/joint) or eval")
    model: str = _f("C", "C = paper (multitask + alignment L_c), B = ADLD losses + multitask "
                         "(transplant, shared E_f, L_fl), A = ADLD baseline (E_f from scratch), "
                         "source_only = E_f + E_au on source labels alone")
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
    lambda_c: float = _f(100.0, "weight of L_c (model C)")
    lambda_l: float = _f(0.6, "weight of L_l")
    lambda_adl: float = _f(400.0, "weight of L_adl")
    lambda_adf: float = _f(1.2, "weight of L_adf")
    lambda_au: float = _f(1.0, "weight of L_au")
    lambda_fl: float = _f(0.1, "weight of L_fl (models B and C)")
    lambda_cyc: float = _f(40.0, "weight of ADLD's cross-cycle L1 (models A and B)")
    lambda_self: float = _f(3.0, "weight of ADLD's self-reconstruction L1 (models A and B)")
    # -- checkpoints and logging -------------------------------------------------------------------
    init_from: str = _f("", "joint: a pretrain run directory (transplant into E_f and the "
                            "landmark head) or a joint run directory (fine-tune all weights "
                            "with fresh optimizer states)")
    checkpoint: str = _f("", "eval: run directory (its best checkpoint) or checkpoint directory")
    resume: bool = _f(True, "continue from the workdir's latest checkpoint when it has one")
    keep: int = _f(2, "latest checkpoints kept (the best one is kept apart)")
    checkpoint_every: int = _f(0, "also save every this many steps (0 = once per epoch)")
    log_every: int = _f(50, "steps between progress lines and metric records")
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
    def uses_transplant(self) -> bool:
        return self.model in ("B", "C")

    @property
    def uses_alignment(self) -> bool:
        """L_c replaces ADLD's L_cyc and L_self in model C."""
        return self.model == "C"

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

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

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
