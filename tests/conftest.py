"""Test setup: several virtual CPU devices, fast compiles, absl flags parsed for grain workers,
and one tiny SynthAU shared by the tests that train."""

import os

# Before jax is imported anywhere: four host devices let the tests exercise data parallelism.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

# Tests compile many tiny programs once each; optimisation time would dominate their run time.
jax.config.update("jax_disable_most_optimizations", True)

# grain's worker processes read an absl flag; under pytest nobody parses flags.
flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny SynthAU (72x72 images; 32 training images per domain, 16 per evaluation set),
    made once per test session. Tests that damage data copy it first."""
    from audjax.data import synth

    out = tmp_path_factory.mktemp("synthau")
    sizes = {"source_train": 32, "target_train": 32, "source_val": 16, "source_test": 16,
             "target_val": 16, "target_test": 16}
    synth.generate(out, sizes=sizes, image_size=72, seed=0, workers=1, progress=False)
    return out
