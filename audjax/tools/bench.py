"""Benchmark the training step: pairs/s, FLOP/s against the machine's matmul rate, ADLD's PyTorch
step side by side, and the input pipeline (the library of `audjax bench`).

    audjax bench                                  # model A at the paper's shapes
    audjax bench --compare=torch --json=a.json    # and ADLD's PyTorch step
    audjax bench --model=C --compute_dtype=bfloat16
    audjax bench --what=pipeline --synthetic=512  # the input pipeline alone

Everything is measured in one process run, so a busy machine slows every figure alike:

- the compiled step on random inputs (no input pipeline), and with `--compare=torch` ADLD's
  PyTorch step of model A (`audjax.adld.torch_reference.ADLDStep`) on the same shapes, timed
  in turns
  (audjax, torch, audjax, torch, ...): medians over `--steps` steps after `--warmup` steps.
  On the CPU, PyTorch gets as many threads as XLA's CPU thread pool (one per core); when JAX
  runs on a GPU, PyTorch's step runs on it too (`--torch_device`);
- on the CPU, the step's FLOPs (XLA's cost analysis of the compiled step) per second, as a
  fraction of a float32 matmul timed in the same run (the machine's practical peak);
- the training input pipeline (`audjax.data.pipeline`, one stream with the default workers) on
  generated 200x200 JPEGs, as a multiple of the images/s the step consumes.

A "pair" is one source and one target image (a joint step of batch B is B pairs); the pretrain
phase and the source-only model read source images only, and their pairs/s are images/s.
`measure_step` returns every figure (`--json OUT` writes them), with `pairs_per_s` (and
`torch_pairs_per_s`) at the top level.
"""

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from audjax import parallel, steps
from audjax import state as state_lib
from audjax.config import Config
from audjax.data import pipeline
from audjax.files import atomic_write
from audjax.tools import malloc as hostmem


def random_batch(config: Config, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = config.crop

    def domain():
        return {"image": rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32),
                "landmarks": rng.uniform(0.2 * s, 0.8 * s, (batch, config.num_landmarks, 2))
                .astype(np.float32),
                "au": rng.integers(0, 2, (batch, len(config.au_names))).astype(np.int32)}

    if config.phase == "pretrain":
        return domain()
    return {"source": domain(), "target": domain()}


def time_interleaved(fns: dict[str, Callable], steps: int, warmup: int) -> dict[str, list]:
    """Seconds of each call of each function, calling them in turns (a, b, a, b, ...) so that
    load from elsewhere on the machine falls on all of them alike. Each function returns what
    to wait for (arrays, or plain values for synchronous code)."""
    for _ in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(steps):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return times


def matmul_flops_per_s(n: int) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    seconds = time_interleaved({"matmul": lambda: f(a)}, 10, 1)["matmul"]
    return 2 * n**3 / statistics.median(seconds)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_count() -> int:
    """Cores this process may run on: what XLA's CPU thread pool uses."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def audjax_step(config: Config, batch, mesh):
    """(compiled step as a no-argument function, compile seconds, FLOPs per step), the batch
    split over the devices of `mesh`."""
    nets = state_lib.build_networks(config, len(config.au_names))
    names = state_lib.network_names(config, config.phase)
    txs = state_lib.make_optimizers(config, names, 100, config.phase)
    state = state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(0))
    step = steps.make_train_step(config, config.phase, nets, txs,
                                 np.ones(len(config.au_names), np.float32), mesh)
    state = parallel.replicate(mesh, state)
    batch = parallel.global_batch(mesh, batch)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    flops = float("nan")
    # XLA's GPU cost analysis leaves out what it hands to cuDNN and cuBLAS (every convolution),
    # so the FLOPs, and the fraction of the matmul rate, are counted on the CPU only.
    if jax.default_backend() == "cpu":
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        flops = float(cost.get("flops", flops))
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch)
        return holder["state"], metrics

    # A step partitioned over the mesh reports one device's share of the FLOPs.
    return run, compile_s, flops * mesh.size


def torch_step(config: Config, batch, threads: int, device: str):
    """ADLD's PyTorch step of model A on the same shapes and `device`, as a no-argument
    function."""
    try:
        import torch

        from audjax.adld import torch_reference as adld_torch
    except ImportError:
        raise ImportError("--compare=torch needs PyTorch, the `bench` extra: "
                          "pip install -e '.[bench]'") from None
    if config.phase != "joint" or config.model == "source_only":
        raise ValueError("--compare=torch times ADLD's joint step: use --phase=joint and a model "
                         "with the domain separation (A, B or C)")
    if config.width != 1.0 or config.crop < 128:
        raise ValueError("--compare=torch needs --width=1.0 and --crop >= 128 (ADLD's networks "
                         "have one width, and its domain discriminators need feature maps of 32 "
                         "or more)")
    if device == "auto":
        device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--torch_device=cuda, but PyTorch {torch.__version__} sees no CUDA "
                         "device")
    torch.set_num_threads(threads)
    # cuDNN picks its fastest algorithm per shape, as XLA's autotuner does for audjax.
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    num_aus = len(config.au_names)
    nets = adld_torch.build_networks(config.num_landmarks, num_aus)
    step = adld_torch.ADLDStep({k: v.to(device) for k, v in nets.items()},
                               np.ones(num_aus, np.float32))
    src, tgt = (adld_torch.to_torch(batch[d], config.crop, device=device)
                for d in ("source", "target"))
    # The step returns Python floats (`.item()`), so it has finished on the device when it
    # returns, as `block_until_ready` waits for audjax's.
    return lambda: step(src, tgt), device


def measure_step(config: Config, *, batch: int, steps: int = 5, warmup: int = 1,
                 matmul: int = 2048, compare: str = "", torch_device: str = "auto",
                 pipeline_workers: int | None = None, pipeline_steps: int = 50) -> dict:
    """Every figure of the module doc for `config`'s step on random batches of `batch` per
    domain, printing them as they come; `pipeline_workers` None leaves the pipeline out."""
    mesh = parallel.make_mesh(config)
    parallel.check_batch_sizes(config, mesh)
    threads = cpu_count()
    inputs = random_batch(config, batch)
    fns = {}
    if compare == "torch":
        fns["torch"], torch_device = torch_step(config, inputs, threads, torch_device)
    fns["audjax"], compile_s, flops = audjax_step(config, inputs, mesh)
    times = time_interleaved(fns, steps, warmup)
    peak = matmul_flops_per_s(matmul)

    step_s = statistics.median(times["audjax"])
    counted = not np.isnan(flops)
    two_streams = config.phase == "joint" and config.model != "source_only"
    images_per_step = batch * (2 if two_streams else 1)
    r = {
        "pairs_per_s": batch / step_s,
        "images_per_s": images_per_step / step_s,
        "step_s": step_s,
        "step_s_each": times["audjax"],
        "compile_s": compile_s,
        "flops_per_step": flops if counted else None,
        "flops_per_s": flops / step_s if counted else None,
        "matmul_flops_per_s": peak,
        "fraction_of_matmul": flops / step_s / peak if counted else None,
        "config": {"phase": config.phase, "model": config.model, "crop": config.crop,
                   "width": config.width, "batch": batch,
                   "compute_dtype": config.compute_dtype, "steps": steps,
                   "warmup": warmup, "devices": mesh.size},
        "machine": {"device": f"{jax.devices()[0].device_kind} ({jax.default_backend()})",
                    "cpu": cpu_name(), "cores": threads, "jax": jax.__version__,
                    **hostmem.describe()},
    }
    print(f"device: {r['machine']['device']}, batch split over {mesh.size} of "
          f"{jax.device_count()} device(s); "
          f"CPU {r['machine']['cpu']}, {threads} cores; huge pages "
          f"{r['machine']['huge_pages']}; freed memory {r['machine']['freed_memory']}")
    print(f"{config.phase} step, model {config.model}, crop {config.crop}, width {config.width}, "
          f"batch {batch} per domain, {config.compute_dtype}; compile {compile_s:.1f} s; "
          f"median of {steps} steps after {warmup}")
    print(f"audjax: {step_s:.3f} s/step = {r['pairs_per_s']:.2f} pairs/s "
          f"({r['images_per_s']:.1f} images/s)")
    if counted:
        print(f"{flops / 1e9:.1f} GFLOP/step -> {r['flops_per_s'] / 1e9:.1f} GFLOP/s; baseline: "
              f"{matmul}^2 float32 matmul {peak / 1e9:.1f} GFLOP/s; step / matmul = "
              f"{r['fraction_of_matmul']:.2f}")
    else:
        print(f"FLOPs not counted on {jax.default_backend()} (XLA's cost analysis there leaves "
              f"out cuDNN and cuBLAS); {matmul}^2 float32 matmul {peak / 1e9:.1f} GFLOP/s")

    if "torch" in times:
        import torch

        torch_s = statistics.median(times["torch"])
        r.update(torch_pairs_per_s=batch / torch_s, torch_step_s=torch_s,
                 torch_step_s_each=times["torch"], torch_threads=torch.get_num_threads(),
                 torch_device=torch_device, torch_version=torch.__version__,
                 speedup_vs_torch=torch_s / step_s)
        where = (f"{torch.get_num_threads()} threads as XLA" if torch_device == "cpu"
                 else f"on {torch.cuda.get_device_name()}")
        print(f"PyTorch {torch.__version__} (ADLD's model-A step, {where}): "
              f"{torch_s:.3f} s/step = {r['torch_pairs_per_s']:.2f} pairs/s")
        print(f"audjax / PyTorch = {r['speedup_vs_torch']:.2f}x (pairs/s)")

    if pipeline_workers is not None:
        with tempfile.TemporaryDirectory() as tmp:
            lists = pipeline.synthetic_lists(tmp, 8 * batch, num_aus=len(config.au_names))
            p = pipeline.measure(lists, tmp, crop=config.crop, batch_size=batch,
                                 workers=pipeline_workers, steps=pipeline_steps, warmup=5)
        r.update(pipeline_images_per_s=p["images_per_s"], pipeline_workers=pipeline_workers,
                 pipeline_over_step=p["images_per_s"] / r["images_per_s"])
        print(f"pipeline (one stream, {pipeline_workers} workers, 200x200 JPEGs, crop "
              f"{config.crop}): {p['images_per_s']:.0f} images/s = "
              f"{r['pipeline_over_step']:.1f}x what the step consumes")
    return r


def write_json(path, figures: dict) -> None:
    atomic_write(path, json.dumps(figures, indent=2) + "\n")


def measure_pipeline(lists, data_root, *, crop: int, batch: int, workers: int, threads: int,
                     steps: int, warmup: int) -> dict:
    """Time one training stream of `lists` (`pipeline.measure`) and print its figures."""
    result = pipeline.measure(lists, data_root, crop=crop, batch_size=batch, workers=workers,
                              threads=threads, steps=steps, warmup=warmup)
    mode = f"workers {workers}" if workers else f"in-process, threads {threads}"
    print(f"images {len(lists.paths)}  crop {crop}  batch {batch}  {mode}  cpus {os.cpu_count()}")
    print(f"startup + {warmup} warm-up batches: {result['startup_s']:.2f} s")
    print(f"{steps} batches -> {result['images_per_s']:.0f} images/s "
          f"(float32 images of {crop}x{crop}x3)")
    return result
