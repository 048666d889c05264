"""Several devices and several hosts: the data mesh, its shardings, global batches, processes.

One device or many, the program is the same (docs/devices.md "The devices of one machine"): a
1-D mesh whose axis `data` spans the devices; parameters, batch statistics and optimizer states are
replicated on it, and each batch is split over it along its first axis. `jax.jit` with these
shardings partitions the step (GSPMD): a mean over the batch, such as batch norm's, is a mean over
the *global* batch, so N devices compute what one device computes on the whole batch (to float
rounding), with no pmap and no axis names in the networks.

Several hosts (docs/devices.md "Several hosts"): `initialize` starts `jax.distributed` before
anything touches a device; then every process sees every device and runs the same program. Each
process reads only its own block of rows of each global batch (`process_block` says which; the grain
pipelines take it as `shard=`) and `global_batch` joins the blocks into global arrays with
`jax.make_array_from_process_local_data`. The batches of the pipelines are cut from one shared
stream, so the global batch of a run does not depend on how many processes read it.
"""

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from audjax.config import Config

AXIS = "data"


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def initialize(config: Config) -> None:
    """Start `jax.distributed` when the config asks for several processes; call it before
    anything touches a device. Explicit flags (--coordinator_address, --num_processes,
    --process_id) or, with --distributed alone, what the cluster's launcher set (JAX detects
    SLURM, Open MPI and Cloud TPU environments). A no-op for a single process, or when already
    started (a second run in the same process)."""
    if not (config.coordinator_address or config.distributed):
        return
    if jax.distributed.is_initialized():
        return
    if config.coordinator_address:
        jax.distributed.initialize(coordinator_address=config.coordinator_address,
                                   num_processes=config.num_processes,
                                   process_id=config.process_id)
    else:
        jax.distributed.initialize()


def is_main() -> bool:
    """Whether this process writes the records (metrics, TensorBoard, results) and prints."""
    return jax.process_index() == 0


def in_turn(fn):
    """Call `fn()` in process 0, then in process 1, ..., each after the previous one finished;
    returns its result. For work on a cache that processes may share (SynthAU): the first one
    fills it, the others find it (or fill their own host's)."""
    result = None
    for p in range(jax.process_count()):
        if p == jax.process_index():
            result = fn()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"audjax.parallel.in_turn {p}")
    return result


def agreed_signal(received: str | None) -> str | None:
    """The stop signal this process received (`guards.StopSignals.received`), agreed between
    processes so that all stop, and save, at the same step: with several, a signal that any of
    them got (a small all-gather per call); with one, `received` itself."""
    if jax.process_count() == 1:
        return received
    got = multihost_utils.process_allgather(np.int32(received is not None))
    if not np.any(got):
        return None
    return received or "a signal to another process"


# ---------------------------------------------------------------------------------------------
# The mesh and its shardings
# ---------------------------------------------------------------------------------------------


def make_mesh(config: Config) -> Mesh:
    """The 1-D `data` mesh of --mesh_data devices (0: every device of every process)."""
    available = jax.device_count()
    n = config.mesh_data or available
    if n > available:
        raise ValueError(f"--mesh_data={config.mesh_data}: there are only {available} devices")
    if jax.process_count() > 1 and n != available:
        raise ValueError(f"--mesh_data={config.mesh_data}: with {jax.process_count()} processes "
                         f"the data axis spans every device (--mesh_data=0 or {available})")
    return jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def check_batch_sizes(config: Config, mesh: Mesh) -> None:
    """Each training batch the phase uses must split evenly over the data axis."""
    n = mesh.size
    for phase in config.training_phases:
        flag, size = config.batch_flag(phase), config.phase_batch_size(phase)
        if size % n:
            raise ValueError(f"--{flag}={size} does not split over the {n} devices of the data "
                             f"axis (--mesh_data={config.mesh_data}; 0 = every device): use a "
                             f"multiple of {n}, or another --mesh_data")


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer states, metrics)."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The first axis is split over the data axis (every array of a batch)."""
    return NamedSharding(mesh, P(AXIS))


def eval_batch_size(config: Config, mesh: Mesh | None) -> int:
    """--eval_batch_size rounded up to a multiple of the data axis (the padding rows are masked
    out like those of the last batch), so any value works on any number of devices."""
    n = mesh.size if mesh is not None else 1
    return math.ceil(config.eval_batch_size / n) * n


def replicate(mesh: Mesh, tree):
    """Put a pytree (the same in every process: fresh or restored weights) on every device.

    Through host memory, because `device_put` of host values onto devices of other processes
    is what JAX supports across processes."""
    return jax.device_put(jax.device_get(tree), replicated(mesh))


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def process_block(mesh: Mesh | None, batch_size: int) -> tuple[int, int]:
    """(i, n): this process holds rows i*B/n .. (i+1)*B/n - 1 of every global batch of B rows,
    on its own devices; the grain pipelines read exactly that block (their `shard`).

    >>> process_block(None, 8)  # one process, no mesh: everything
    (0, 1)
    """
    if mesh is None:
        return 0, 1
    indices = batch_sharded(mesh).addressable_devices_indices_map((batch_size,))
    rows = sorted(index[0].indices(batch_size)[:2] for index in indices.values())
    start, stop = rows[0][0], rows[-1][1]
    if any(a[1] != b[0] for a, b in zip(rows, rows[1:], strict=False)) or (
            batch_size % (stop - start)):
        raise ValueError(f"process {jax.process_index()}'s devices hold rows {rows} of a batch "
                         f"of {batch_size}, not one contiguous block")
    size = stop - start
    return start // size, batch_size // size


def global_batch(mesh: Mesh, local_batch):
    """A process's block of rows (a pytree of host arrays, see `process_block`) -> global arrays
    split over the data axis. With one process the block is the whole batch."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                        local_batch)


def fetch_rows(x) -> np.ndarray:
    """The whole of a global batch-split array as a host array, in every process."""
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
