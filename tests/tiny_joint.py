"""The tiny joint-phase models of the step tests (tests/test_steps.py, test_precision.py and
test_parallel.py): a config, random batches, and each model's networks, fresh state and jitted
step, made once per process so that the tests in one worker share their traces and compiled
programs (conftest.py runs test_steps and test_precision in one worker). The model is always
named, so that each setup has one cache entry."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np

from audjax import state as state_lib
from audjax import steps
from audjax.config import Config

K = 6
# The quick start's learning rates: test_precision trains with them.
CONFIG = Config(crop=64, width=0.25, batch_size=2, model="C", lr_task=1e-3, lr_landmark=1e-3,
                lr_gen=5e-4, lr_disc=5e-4)


def batch(seed, b=2, crop=64):
    rng = np.random.default_rng(seed)

    def domain():
        return {"image": rng.uniform(-1, 1, (b, crop, crop, 3)).astype(np.float32),
                "landmarks": rng.uniform(8, crop - 8, (b, 49, 2)).astype(np.float32),
                "au": rng.integers(0, 2, (b, K)).astype(np.int32)}

    return {"source": domain(), "target": domain()}


@functools.cache
def networks(model, **weights):
    """(config, networks, optimizers, the fresh state's shapes) of a joint-phase model."""
    config = CONFIG.replace(model=model, **weights)
    nets = state_lib.build_networks(config, K)
    names = state_lib.network_names(config, "joint")
    txs = state_lib.make_optimizers(config, names, 10, "joint")
    shapes = jax.eval_shape(lambda: state_lib.create_state(config, nets, names, txs,
                                                           jax.random.PRNGKey(0)))
    return config, nets, txs, shapes


@functools.cache
def setup(model, **weights):
    """`networks` with the fresh state itself."""
    config, nets, txs, _ = networks(model, **weights)
    names = state_lib.network_names(config, "joint")
    state = state_lib.create_state(config, nets, names, txs, jax.random.PRNGKey(0))
    return config, nets, txs, state


TRACES = collections.Counter()


@functools.cache
def train_step(model, **weights):
    """The jitted joint-phase step of `networks(model, **weights)` (source-only training for
    "source_only"), made once: the tests that run it or lower it share one trace and one
    compiled program. `TRACES[model, weights]` counts its traces (weights as sorted items)."""
    config, nets, txs, _ = networks(model, **weights)
    body = steps.source_only_step if model == "source_only" else steps.joint_step
    fn = functools.partial(body, config=config, nets=nets, txs=txs, au_weights=jnp.ones(K))

    def counted(state, b):
        TRACES[model, tuple(sorted(weights.items()))] += 1
        return fn(state, b)

    return jax.jit(counted, donate_argnums=0)
