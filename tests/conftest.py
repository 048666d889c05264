"""Test setup: several virtual CPU devices, fast compiles, absl flags parsed for grain workers."""

import os

# Before jax is imported anywhere: four host devices let the tests exercise data parallelism.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
from absl import flags  # noqa: E402

# Tests compile many tiny programs once each; optimisation time would dominate their run time.
jax.config.update("jax_disable_most_optimizations", True)

# grain's worker processes read an absl flag; under pytest nobody parses flags.
flags.FLAGS.mark_as_parsed()
