"""Grain input pipelines: the infinite, augmented training streams and the one-pass eval batches.

Batches are dicts of numpy arrays (the shapes a jitted step sees, always the same):

    image      (B, S, S, 3) float32 in [-1, 1]   RGB, (x / 255 - 0.5) / 0.5 as ADLD's Normalize
    landmarks  (B, L, 2)    float32             (x, y) in crop pixels
    au         (B, K)       int32               1, 0 or 999 (unknown), passed through
    mask       (B,)         bool                eval only: False on padding and unusable rows
    bad        (B,)         int32 / bool        training: list entries skipped to make the row;
                                                eval: True where the image could not be used
    bad_index  (B,)         int32               training only: the first skipped entry, or -1

The trainer pops `bad` and `bad_index` before the batch reaches the jitted step.

Training (docs/design.md §6, ADLD's `data_list.py` / `pre_process.py`): a random S×S crop whose
offsets are uniform over every valid position (ADLD's inclusive `random.randint(0, W - S)`), then a
horizontal flip with probability 1/2 that mirrors the image and renumbers the landmarks with
`FLIP_PERM`. The stream is `shuffle().repeat()` of a grain `MapDataset`, so

- every epoch is a fresh permutation (grain folds the epoch number into the shuffle seed) and
  every epoch's augmentation differs (`random_map` seeds each element's Generator from the
  pipeline seed and the element's index in the infinite stream);
- the stream never ends. A shorter target set simply cycles while the source set runs through
  its epoch: the two domains are independent streams with their own seeds
  (`audjax.seeds.stream_seed`), and "an epoch" is a number of steps the trainer chooses (e.g.
  len(source) // batch_size);
- batching happens before `to_iter_dataset`, so a batch is a pure function of (seed, step):
  the batches do not depend on the number of worker processes, and `get_state()` /
  `set_state()` resume exactly (the state is a small JSON-able dict, what orbax's grain
  checkpoint handler stores). The state itself does depend on the number of workers: grain
  cannot load a 0-worker state into N workers, and loads an N-worker state into M workers
  without an error but at other batches; so a resumed run keeps its worker count
  (`audjax.preflight`). Batches run on across epoch boundaries when B does not divide N.

Evaluation: the centre crop at offset `int(round((W - S) / 2.0))`, torchvision's `CenterCrop`
(which ADLD's `image_test` uses; Python's `round` rounds halves to even, so a 9-pixel margin
gives offset 4, not 5). Every image once, in list order; the last batch is padded to the full
batch size by repeating the last image with mask False, so a jitted step never sees a short batch.

Images are decoded with OpenCV (BGR -> RGB). An aligned image may have any size at least S×S.

Unusable images (missing, undecodable, smaller than the crop, landmarks far off the image: see
`read_sample`) never stop a pipeline. In training, the source replaces list entry i by the next
usable entry (i+1, i+2, ... wrapping around), so batch shapes stay fixed and a batch is still a
pure function of (seed, step); the row records how many entries were skipped and the first of
them, and the trainer warns, counts and stops past its limit (worker processes cannot warn for
it: the news travels in the batch). In evaluation, an unusable image becomes a masked row with
`bad` True, so it is left out of the metrics and reported, not replaced.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import Any

import cv2
import grain
import numpy as np

from audjax import seeds
from audjax.data.images import read_sample
from audjax.data.lists import Lists
from audjax.landmarks import FLIP_PERM, flip_landmarks

# Batches each prefetching thread or worker keeps ready. Two hide the jitter of one slow batch;
# more only hold memory (a 16 x 176 x 176 x 3 float32 batch is 6 MB).
_BUFFER = 2


# ---------------------------------------------------------------------------------------------
# Per-image operations, shared by the training and the eval paths
# ---------------------------------------------------------------------------------------------


def _worker_init(worker_index: int, worker_count: int) -> None:
    """Worker processes leave SIGINT and SIGTERM to the trainer, which finishes its step and
    saves before it stops them (a Ctrl-C reaches the whole process group, and a worker killed
    by it would take the batch the last step needs with it). They do not outlive the trainer:
    a thread ends the worker within a second of the trainer's death (a SIGKILL gives the
    trainer no chance to stop them)."""
    del worker_index, worker_count
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trainer = os.getppid()

    def watch():
        while os.getppid() == trainer:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="audjax-trainer-watch").start()


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1], as ToTensor (x / 255) then Normalize(0.5, 0.5).

    >>> normalize(np.array([0, 255], np.uint8)).tolist()
    [-1.0, 1.0]
    """
    out = image.astype(np.float32)
    # In place, in the same order as torchvision, so the values match it bit for bit.
    out /= 255.0
    out -= 0.5
    out /= 0.5
    return out


def centre_offset(size: int, crop: int) -> int:
    """torchvision CenterCrop's offset: `int(round((size - crop) / 2.0))` (halves to even).

    >>> centre_offset(200, 176), centre_offset(73, 64), centre_offset(75, 64)
    (12, 4, 6)
    """
    return int(round((size - crop) / 2.0))


# ---------------------------------------------------------------------------------------------
# Grain pieces
# ---------------------------------------------------------------------------------------------


class _Samples:
    """The random-access source: record i = list line i, decoded, or the next usable line.

    An entry that cannot be used (`read_sample`) is replaced by entry i+1, i+2, ... (wrapping
    around): a deterministic choice, so the stream stays a pure function of the seed. "bad" says
    how many entries were skipped, "bad_index" which one was first (-1: none). The source holds
    plain numpy arrays and strings, so pickling it into worker processes is cheap.
    """

    def __init__(self, lists: Lists, data_root: str | os.PathLike | None, crop: int):
        if len(lists.paths) == 0:
            raise ValueError(f"{lists.prefix}: the list is empty")
        root = os.fspath(data_root) if data_root is not None else ""
        self._paths = [os.path.join(root, p) for p in lists.paths]
        self._landmarks = np.asarray(lists.landmarks, np.float32)
        self._au = np.asarray(lists.au, np.int32)
        self._crop = crop
        self._prefix = lists.prefix

    def __len__(self) -> int:
        return len(self._paths)

    def _record(self, j: int, image: np.ndarray) -> dict[str, Any]:
        return {"image": image, "landmarks": self._landmarks[j], "au": self._au[j]}

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self._paths)
        for skipped in range(n):
            j = (index + skipped) % n
            image, _ = read_sample(self._paths[j], self._landmarks[j], self._crop)
            if image is not None:
                return {**self._record(j, image), "bad": np.int32(skipped),
                        "bad_index": np.int32(index if skipped else -1)}
        raise ValueError(f"{self._prefix}: no image of the list can be used")


class _PaddedSamples(_Samples):
    """`_Samples` for evaluation, padded to a multiple of `batch_size` by repeating the last
    record. Records carry "mask": True for the real, usable ones; an unusable image is not
    replaced but becomes a grey masked row with "bad" True."""

    def __init__(self, lists: Lists, data_root: str | os.PathLike | None, crop: int,
                 batch_size: int):
        super().__init__(lists, data_root, crop)
        self._num_real = len(self._paths)
        self._length = math.ceil(self._num_real / batch_size) * batch_size

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        j = min(index, self._num_real - 1)
        image, _ = read_sample(self._paths[j], self._landmarks[j], self._crop)
        bad = image is None
        if bad:
            image = np.full((self._crop, self._crop, 3), 128, np.uint8)
        real = index < self._num_real
        return {**self._record(j, image), "mask": np.bool_(real and not bad),
                "bad": np.bool_(real and bad)}


class _RandomCropFlip(grain.transforms.RandomMap):
    """ADLD's training augmentation: a uniform random S×S crop, then a flip with p = 1/2.

    All randomness comes from the Generator grain passes in, which grain seeds from the pipeline
    seed and the element's index: the same element of the stream always gets the same crop.
    """

    def __init__(self, crop: int, flip: bool):
        self._crop = crop
        self._flip = flip

    def random_map(self, record: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image = record["image"]
        height, width = image.shape[:2]
        s = self._crop
        # `integers` excludes its upper bound: offsets 0 .. W - S inclusive, as ADLD's randint.
        y = int(rng.integers(0, height - s + 1))
        x = int(rng.integers(0, width - s + 1))
        image = image[y:y + s, x:x + s]
        landmarks = record["landmarks"] - np.array([x, y], np.float32)
        if self._flip and rng.random() < 0.5:
            image = image[:, ::-1]
            landmarks = flip_landmarks(landmarks, s)
        return {**record, "image": image, "landmarks": landmarks.astype(np.float32)}


class _CentreCrop(grain.transforms.Map):
    """The eval crop: torchvision's CenterCrop, landmarks shifted with it."""

    def __init__(self, crop: int):
        self._crop = crop

    def map(self, record: dict[str, Any]) -> dict[str, Any]:
        image = record["image"]
        height, width = image.shape[:2]
        y, x = centre_offset(height, self._crop), centre_offset(width, self._crop)
        image = image[y:y + self._crop, x:x + self._crop]
        landmarks = record["landmarks"] - np.array([x, y], np.float32)
        return {**record, "image": image, "landmarks": landmarks}


class _Normalize(grain.transforms.Map):
    def map(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "image": normalize(record["image"])}


def _shard_batches(ds: grain.MapDataset, batch_size: int, shard: tuple[int, int]):
    """Batches of `batch_size`, or block i of n of each (`shard` = (i, n)): batches of B/n
    consecutive elements, every n-th one from the i-th. Elements are made lazily, so only the
    block's are decoded; their augmentation is seeded by their place in the unsliced stream."""
    index, count = shard
    if batch_size % count or not 0 <= index < count:
        raise ValueError(f"shard {shard} of a batch of {batch_size}: need 0 <= i < n, n | B")
    return ds.batch(batch_size // count, drop_remainder=True)[index::count]


# ---------------------------------------------------------------------------------------------
# Public pipelines
# ---------------------------------------------------------------------------------------------


def train_iter(lists: Lists, data_root: str | os.PathLike | None, *, crop: int, batch_size: int,
               seed: int, workers: int = 2, threads: int = 2, flip: bool = True,
               shard: tuple[int, int] = (0, 1)) -> grain.DatasetIterator:
    """The infinite, reshuffled, augmented training stream of `lists` (see the module doc).

    Args:
      lists: the samples (`audjax.data.lists.Lists`); paths are relative to `data_root`
        (None: used as they are).
      crop: S, the side of the square crop; smaller images are skipped (see the module doc).
      batch_size: B; every batch is full.
      seed: this stream's seed, e.g. `audjax.seeds.stream_seed(run_seed, "source")`.
      workers: worker processes (grain `mp_prefetch`); 0 runs everything in this process.
        The batches are the same for any number of workers.
      threads: prefetching threads in this process when `workers == 0` (OpenCV decodes without
        the GIL, so threads help); ignored otherwise, each worker then makes one batch at a time.
      flip: random horizontal flips (needs the 49-point layout of `FLIP_PERM`).
      shard: (i, n) for several processes: this process reads block i of n of every batch
        (rows i*B/n .. (i+1)*B/n - 1; `audjax.parallel.process_block`). The blocks are cut from
        the one stream of B-image batches, so the n processes' blocks of a step together are
        exactly the batch that one process reading everything gets, and each process decodes
        only its own images.

    Returns:
      A grain DatasetIterator of batch dicts; checkpoint it with `get_state()` / `set_state()`
      (a state only fits an iterator built with the same arguments). Call `close()` when done
      with a multi-worker iterator to stop its processes promptly.
    """
    if flip and lists.landmarks.shape[1] != len(FLIP_PERM):
        raise ValueError(f"{lists.prefix}: flipping needs {len(FLIP_PERM)} landmarks, the list "
                         f"has {lists.landmarks.shape[1]}")
    ds = (
        grain.MapDataset.source(_Samples(lists, data_root, crop))
        .seed(seed)
        .shuffle()
        .repeat()
        .random_map(_RandomCropFlip(crop, flip))
    )
    ds = _shard_batches(ds, batch_size, shard)
    if workers > 0:
        stream = (
            ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
            .mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                      per_worker_buffer_size=_BUFFER),
                         worker_init_fn=_worker_init)
        )
    else:
        stream = ds.to_iter_dataset(
            grain.ReadOptions(num_threads=threads, prefetch_buffer_size=_BUFFER * threads))
    # Workers hand batches over through fresh shared memory: for a 16 x 176^2 float32 batch that
    # costs 4 ms against 6 ms to make it. uint8 is a quarter of that, so the [-1, 1] scaling
    # (0.4 ms a batch) runs here, in this process, on the whole batch.
    return iter(stream.map(_Normalize()))


def eval_batches(lists: Lists, data_root: str | os.PathLike | None, *, crop: int,
                 batch_size: int, threads: int = 4,
                 shard: tuple[int, int] = (0, 1)) -> grain.DatasetIterator:
    """One pass over `lists` in order, centre-cropped, in full batches with a "mask" key.

    There are ceil(N / B) batches; the padding rows of the last one repeat the last image and
    have mask False, as do unusable images (which also have "bad" True). `threads` decode in
    parallel (order is kept). `shard` as in `train_iter`: block i of n of each batch.
    """
    ds = (
        grain.MapDataset.source(_PaddedSamples(lists, data_root, crop, batch_size))
        .map(_CentreCrop(crop))
    )
    ds = _shard_batches(ds, batch_size, shard)
    return iter(ds.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=_BUFFER * threads))
        .map(_Normalize()))


# ---------------------------------------------------------------------------------------------
# Benchmark helpers (`audjax bench --what=pipeline`)
# ---------------------------------------------------------------------------------------------


def synthetic_lists(out_dir: str, count: int, size: int = 200, num_aus: int = 6) -> Lists:
    """Write `count` smooth random size×size JPEGs (face-like entropy, not white noise, so the
    decode cost is realistic) and return their Lists with random landmarks and labels."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        paths.append(f"{i:06d}.jpg")
        cv2.imwrite(os.path.join(out_dir, paths[-1]), image)
    landmarks = rng.uniform(0.3 * size, 0.7 * size, (count, len(FLIP_PERM), 2))
    return Lists(paths=tuple(paths), landmarks=landmarks.astype(np.float32),
                 au=rng.integers(0, 2, (count, num_aus)).astype(np.int32), weights=None,
                 prefix=os.path.join(out_dir, "synthetic"))


def measure(lists: Lists, data_root: str | None, *, crop: int, batch_size: int, workers: int,
            threads: int = 2, steps: int = 200, warmup: int = 10) -> dict[str, float]:
    """Time one training stream: {"images_per_s", "startup_s"}. The first `warmup` batches pay
    for starting workers and filling buffers; they are timed apart (`startup_s`)."""
    it = train_iter(lists, data_root, crop=crop, batch_size=batch_size,
                    seed=seeds.stream_seed(0, "bench"), workers=workers, threads=threads)
    try:
        start = time.perf_counter()
        for _ in range(warmup):
            next(it)
        warm = time.perf_counter()
        for _ in range(steps):
            next(it)
        end = time.perf_counter()
    finally:
        it.close()  # stops the workers and frees their shared memory, also after an error
    return {"images_per_s": steps * batch_size / (end - warm), "startup_s": warm - start}

