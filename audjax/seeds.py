"""Seeds derived from the run's one `--seed` and a name: the same in every process and on resume.

One seed drives everything random in a run: the networks' initial weights (a key per network,
`jax.random.fold_in(key, name_id(name))`, and under `--init=torch` a key per re-drawn kernel and
bias, folded from that with `path_id(path)`) and each training data stream's order and
augmentation (`stream_seed(seed, "source")`, `stream_seed(seed, "target")`). Names never go
through Python's `hash()`, which is randomised per process. The three derivations differ only
for history: each fixes the numbers of runs already made, so none is replaced by another.
"""

import hashlib

import numpy as np


def name_id(name: str) -> int:
    """A small integer from a name, to fold into a JAX key.

    >>> name_id("E_f"), name_id("E_l")
    (565, 583)
    """
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name))


def path_id(path: str) -> int:
    """A 31-bit integer from a parameter path such as "/conv0/kernel", to fold into a network's
    key: each kernel and bias that `--init=torch` draws again gets its own key.

    >>> path_id("/conv0/kernel") == path_id("/conv0/kernel") != path_id("/conv0/bias")
    True
    """
    h = 0
    for ch in path:
        h = (h * 131 + ord(ch)) % 2_147_483_647
    return h


def stream_seed(seed: int, name: str) -> int:
    """A stable 32-bit seed for the stream `name` of a run seeded with `seed`.

    The name enters through SHA-256, not `hash()`, which Python randomises per process, so a
    resumed run (or a worker process) derives the same seeds; numpy's SeedSequence mixes it with
    `seed`, so different names or run seeds give unrelated streams.

    >>> stream_seed(0, "source") == stream_seed(0, "source") != stream_seed(0, "target")
    True
    """
    name_key = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(name_key,))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])
