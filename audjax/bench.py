"""Benchmark a training step: images/s, and achieved FLOP/s against this machine's matmul peak.

    python -m audjax.bench --phase=joint --model=C --crop=176 --width=1.0 --batch=16

The baseline, measured in the same run, is a float32 matmul large enough to run near the
device's peak; the step's FLOPs come from XLA's cost analysis of the compiled step. Inputs are
random (no input pipeline: `python -m audjax.data.pipeline --bench` measures that).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from audjax import parallel, steps
from audjax import state as state_lib
from audjax.config import Config

flags.DEFINE_enum("phase", "joint", ["joint", "pretrain"], "which step")
flags.DEFINE_enum("model", "C", ["C", "B", "A", "source_only"], "joint-phase model")
flags.DEFINE_integer("crop", 176, "crop size")
flags.DEFINE_float("width", 1.0, "width multiplier")
flags.DEFINE_integer("batch", 16, "images per domain per step")
flags.DEFINE_integer("steps", 20, "timed steps (after one warm-up step)")
flags.DEFINE_integer("matmul", 2048, "side of the square matmul baseline")
flags.DEFINE_integer("mesh_data", 1, "devices the batch is split over (0 = all), as in training; "
                     "XLA_FLAGS=--xla_force_host_platform_device_count=N gives N CPU devices")
FLAGS = flags.FLAGS


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


def time_calls(fn, n: int) -> float:
    """Seconds per call of `fn` (which returns arrays), after one warm-up call."""
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / n


def matmul_flops_per_s(n: int) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / time_calls(lambda: f(a), 10)


def main(argv):
    del argv
    config = Config(phase=FLAGS.phase, model=FLAGS.model, crop=FLAGS.crop, width=FLAGS.width,
                    batch_size=FLAGS.batch, pretrain_batch_size=FLAGS.batch,
                    mesh_data=FLAGS.mesh_data)
    config.validate()
    mesh = parallel.make_mesh(config)
    parallel.check_batch_sizes(config, mesh)
    nets = state_lib.build_networks(config, len(config.au_names))
    names = state_lib.network_names(config, config.phase)
    txs = state_lib.make_optimizers(config, names, 100, config.phase)
    state = parallel.replicate(
        mesh, state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(0)))
    step = steps.make_train_step(config, config.phase, nets, txs,
                                 np.ones(len(config.au_names), np.float32), mesh)
    batch = parallel.global_batch(mesh, random_batch(config, FLAGS.batch))

    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # A step partitioned over the mesh reports one device's share of the FLOPs.
    flops = float(cost.get("flops", float("nan"))) * mesh.size

    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics

    seconds = time_calls(one_step, FLAGS.steps)
    images = FLAGS.batch * (2 if config.phase == "joint" and config.model != "source_only" else 1)
    peak = matmul_flops_per_s(FLAGS.matmul)
    achieved = flops / seconds
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"batch split over {mesh.size} of {jax.device_count()} device(s)")
    print(f"{config.phase} step, model {config.model}, crop {config.crop}, width {config.width}, "
          f"batch {FLAGS.batch} per domain; compile {compile_s:.1f} s")
    print(f"step: {seconds * 1e3:.1f} ms = {images / seconds:.1f} images/s; "
          f"{flops / 1e9:.2f} GFLOP/step -> {achieved / 1e9:.1f} GFLOP/s")
    print(f"baseline: {FLAGS.matmul}^2 float32 matmul {peak / 1e9:.1f} GFLOP/s; "
          f"step / matmul = {achieved / peak:.2f}")


if __name__ == "__main__":
    app.run(main)
