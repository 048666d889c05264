"""audjax bench: time the training step (--what=step: pairs/s, FLOP/s against a matmul, ADLD's
PyTorch step with --compare=torch, the input pipeline) or the input pipeline alone
(--what=pipeline, on --prefix lists or --synthetic=N generated JPEGs). The library is
`audjax.tools.bench`.

    audjax bench                                  # model A at the paper's shapes
    audjax bench --compare=torch --json=a.json    # and ADLD's PyTorch step
    audjax bench --what=pipeline --synthetic=512 --workers=2
"""

from __future__ import annotations

import sys
import tempfile

from absl import flags

from audjax.cli.common import fail, parse
from audjax.config import COMPUTE_DTYPES, MODELS, Config
from audjax.tools import malloc as hostmem

USAGE = "[--what=step|pipeline] [flags]"
FLAGS = flags.FlagValues()
flags.DEFINE_enum("what", "step", ["step", "pipeline"], "what to time", flag_values=FLAGS)
flags.DEFINE_enum("phase", "joint", ["joint", "pretrain"], "which step", flag_values=FLAGS)
flags.DEFINE_enum("model", "A", MODELS, "joint-phase model", flag_values=FLAGS)
flags.DEFINE_integer("crop", 176, "crop size", flag_values=FLAGS)
flags.DEFINE_float("width", 1.0, "width multiplier", flag_values=FLAGS)
flags.DEFINE_integer("batch", 16, "images per domain per step (pipeline: per batch)",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_enum("compute_dtype", "float32", list(COMPUTE_DTYPES),
                  "dtype of convolutions and matmuls (parameters stay float32)", flag_values=FLAGS)
flags.DEFINE_integer("steps", None, "timed steps, the median reported (default 5); pipeline: "
                     "timed batches (default 200)", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("warmup", None, "untimed steps first (default 1); pipeline: warm-up batches "
                     "(default 10)", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("matmul", 2048, "side of the square float32 matmul baseline",
                     flag_values=FLAGS)
flags.DEFINE_enum("compare", "", ["", "torch"], "also time ADLD's PyTorch step (model A)",
                  flag_values=FLAGS)
flags.DEFINE_enum("torch_device", "auto", ["auto", "cpu", "cuda"],
                  "where the PyTorch step runs; auto: CUDA when JAX runs on a GPU and torch "
                  "sees one", flag_values=FLAGS)
flags.DEFINE_boolean("pipeline", True, "step: also time the training input pipeline",
                     flag_values=FLAGS)
flags.DEFINE_integer("workers", Config().workers, "pipeline worker processes (0: in-process)",
                     lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("pipeline_steps", 50, "step: pipeline batches timed (after 5 warm-up "
                     "batches)", flag_values=FLAGS)
flags.DEFINE_string("json", "", "step: write every figure to this JSON file", flag_values=FLAGS)
flags.DEFINE_integer("mesh_data", 1, "devices the batch is split over (0 = all), as in training; "
                     "XLA_FLAGS=--xla_force_host_platform_device_count=N gives N CPU devices",
                     flag_values=FLAGS)
flags.DEFINE_string("prefix", None, "pipeline: list prefix, e.g. DATA/list/source_train",
                    flag_values=FLAGS)
flags.DEFINE_string("data_root", None, "pipeline: root the list paths are relative to",
                    flag_values=FLAGS)
flags.DEFINE_integer("synthetic", None, "pipeline: instead of a list, time N generated 200x200 "
                     "JPEGs", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("threads", 2, "pipeline: in-process threads (--workers=0)",
                     flag_values=FLAGS)


def main(argv) -> int:
    parse(FLAGS, argv, "bench", USAGE, __doc__)
    f = FLAGS
    if f.what == "pipeline":
        return _pipeline()
    # Side by side, PyTorch's step churns memory between audjax's steps; keeping freed memory
    # in the process (hostmem.KEEP_FREED) times audjax's step as it runs in training.
    torch = f.compare == "torch"
    hostmem.tune_malloc(keep_freed=torch, force=torch)
    note = hostmem.restart_note()
    if note:
        print(note, flush=True)
    from audjax.tools import bench

    config = Config(phase=f.phase, model=f.model, crop=f.crop, width=f.width,
                    batch_size=f.batch, pretrain_batch_size=f.batch,
                    compute_dtype=f.compute_dtype, mesh_data=f.mesh_data)
    try:
        config.validate()
        figures = bench.measure_step(
            config, batch=f.batch, steps=f.steps or 5, warmup=1 if f.warmup is None else f.warmup,
            matmul=f.matmul, compare=f.compare, torch_device=f.torch_device,
            pipeline_workers=f.workers if f.pipeline else None, pipeline_steps=f.pipeline_steps)
    except (ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if f.json:
        bench.write_json(f.json, figures)
        print(f"wrote {f.json}")
    return 0


def _pipeline() -> int:
    f = FLAGS
    if (f.prefix is None) == (f.synthetic is None):
        raise fail("bench", "--what=pipeline: give exactly one of --prefix and --synthetic")
    from audjax.data import lists, pipeline
    from audjax.tools import bench

    timing = dict(crop=f.crop, batch=f.batch, workers=f.workers, threads=f.threads,
                  steps=f.steps or 200, warmup=10 if f.warmup is None else f.warmup)
    if f.synthetic is not None:
        with tempfile.TemporaryDirectory() as tmp:
            bench.measure_pipeline(pipeline.synthetic_lists(tmp, f.synthetic), tmp, **timing)
        return 0
    try:
        data = lists.read_lists(f.prefix, data_root=f.data_root)
    except lists.ListError as e:
        print(f"error: --prefix={f.prefix}: {e}", file=sys.stderr)
        return 2
    bench.measure_pipeline(data, f.data_root, **timing)
    return 0
