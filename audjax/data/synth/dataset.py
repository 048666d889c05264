"""SynthAU's data-set writer: `generate` writes the lists, images and synthau.json of every split,
`ensure` keeps a finished set made with the same parameters.

`generate` hands `audjax.data.prepare.prepare` one `RawItem` per image: the 68 landmarks up front
and the pixels as a callable that renders them in prepare's worker process, so the images go
through exactly the alignment real data goes through without a round trip through the disk.
Aligned images are stored as JPEG (OpenCV's default quality, 95). The data set is a function of
the seed, the sizes, the image size and the target shift alone, whatever the number of workers.
"""

from __future__ import annotations

import ctypes
import functools
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from audjax.data.lists import read_lists, write_weights
from audjax.data.prepare import RawItem, prepare
from audjax.data.synth.drawing import ONE, SHIFT
from audjax.data.synth.face import occurrence
from audjax.data.synth.image import SPLITS, TARGET_SHIFTS, plan_image, render
from audjax.data.synth.scene import BOX_ENLARGE, raw_size
from audjax.files import atomic_write
from audjax.labels import UNKNOWN, au_weights
from audjax.landmarks import AU_NAMES

VERSION = 1

# 10,000 images in all: 3,500 training, 500 validation and 1,000 test images per domain.
DEFAULT_SIZES = {
    "source_train": 3500, "source_val": 500, "source_test": 1000,
    "target_train": 3500, "target_val": 500, "target_test": 1000,
}


def _raw_image(seed: int, split: str, index: int, image_size: int, shift: str) -> np.ndarray:
    """`prepare`'s image source: picklable (a module-level function under functools.partial),
    so each raw image is drawn in the worker that aligns it and never touches the disk."""
    _keep_freed_memory()
    return render(seed, split, index, image_size, shift).image


@functools.cache
def _keep_freed_memory() -> None:
    """In a worker process, stop glibc from handing freed memory back to the kernel.

    Why: rendering a large image allocates several megabytes of short-lived arrays; by default
    glibc unmaps them on free and the next image faults the pages in again, a cost that shows in
    the rendering time. Only worker processes are tuned (they are short-lived); elsewhere, or
    without glibc, nothing changes but the speed.
    """
    if multiprocessing.parent_process() is None:
        return
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter itself uses
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: keep up to 256 MB of free heap
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: big arrays from the heap, not mmap
    except (OSError, AttributeError, TypeError):
        pass


def _item(seed: int, split: str, index: int, image_size: int, shift: str) -> RawItem:
    """The `prepare` record of one image: its landmarks and labels now, its pixels on demand."""
    plan = plan_image(seed, split, index, image_size, shift)
    return RawItem(
        image=functools.partial(_raw_image, seed, split, index, image_size, shift),
        name=f"{index:06d}.jpg",
        landmarks=plan.pose.project(plan.landmarks),
        # The target training set is the unlabelled one (all UNKNOWN), as EmotioNet's 200k images.
        au=None if split == "target_train" else occurrence(plan.intensity),
    )


def _resolve_sizes(sizes: dict[str, int] | None) -> dict[str, int]:
    resolved = dict(DEFAULT_SIZES)
    for split, count in (sizes or {}).items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the splits are {', '.join(SPLITS)}")
        if int(count) < 1:
            raise ValueError(f"{split}: need at least one image, got {count}")
        resolved[split] = int(count)
    return resolved


def _params(sizes: dict[str, int] | None, image_size: int, seed: int,
            target_shift: str = "full") -> dict:
    """What the data set is a function of; `ensure` regenerates when any of it changes."""
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if target_shift not in TARGET_SHIFTS:
        raise ValueError(f"target_shift {target_shift!r}: expected one of {TARGET_SHIFTS}")
    params = {"version": VERSION, "seed": int(seed), "image_size": int(image_size),
              "raw_size": raw_size(image_size), "sizes": _resolve_sizes(sizes)}
    if target_shift != "full":  # recorded only when set, so earlier sets stay valid caches
        params["target_shift"] = target_shift
    return params


def generate(out_dir, *, sizes: dict[str, int] | None = None, image_size: int = 200,
             seed: int = 0, target_shift: str = "full", workers: int | None = None,
             progress: bool = True) -> dict:
    """Generates SynthAU under `out_dir` (replacing what is there) and returns its synthau.json.

    Args:
      out_dir: the data root. It receives list/<split>_{path,land,AUoccur}.txt for every split
        of SPLITS, list/source_train_weight.txt, images/<split>/NNNNNN.jpg (the list paths are
        relative to out_dir), contact_source.png, contact_target.png and synthau.json.
      sizes: images per split, overriding DEFAULT_SIZES split by split.
      image_size: side of the aligned images (200 for the paper's 176 crop; keep the crop /
        image ratio for small runs, e.g. 72 for a 64 crop).
      seed: the data set is a pure function of (seed, sizes, image_size, target_shift).
      target_shift: "full" or "appearance" (`TARGET_SHIFTS`: what sets the target apart).
      workers: processes (default: one per core), passed to `prepare`.
      progress: show progress lines on stderr.

    Everything is written into a temporary folder beside out_dir, which replaces out_dir only when
    complete, so out_dir is never half-written; synthau.json marks a finished data set. An
    existing out_dir must be empty or an earlier SynthAU (it has a synthau.json).

    Raises:
      FileExistsError: out_dir holds something other than SynthAU.
      ValueError: bad sizes or image size, or a source_train so small that an AU has no
        positive example to weigh (`audjax.labels.au_weights`).
    """
    params = _params(sizes, image_size, seed, target_shift)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and load_params(out_dir) is None:
        raise FileExistsError(f"{out_dir} is not empty and holds no synthau.json; refusing to "
                              "replace what may not be a SynthAU data set")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    start = time.monotonic()
    try:
        for split in SPLITS:
            items = [_item(seed, split, i, image_size, target_shift)
                     for i in range(params["sizes"][split])]
            report = prepare(items, work, split, out_size=image_size, box_enlarge=BOX_ENLARGE,
                             workers=workers, progress=progress)
            if report.dropped:  # SynthAU's landmarks are exact, so alignment cannot fail
                raise RuntimeError(report.summary())
        source_train = read_lists(work / "list" / "source_train")
        weights = au_weights(source_train.au)
        write_weights(work / "list" / "source_train", weights)
        for domain in ("source", "target"):
            cv2.imwrite(str(work / f"contact_{domain}.png"),
                        contact_sheet(work, f"{domain}_test"))
        info = dict(params, au_names=list(AU_NAMES), au_weights=weights.tolist(),
                    label_rates=_label_rates(work), seconds=round(time.monotonic() - start, 1))
        atomic_write(work / "synthau.json", json.dumps(info, indent=2) + "\n")
        _replace_folder(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return info


def _label_rates(data_dir: Path) -> dict[str, list[float]]:
    rates = {}
    for split in SPLITS:
        if split != "target_train":
            au = read_lists(data_dir / "list" / split).au
            rates[split] = [round(float(r), 4) for r in au.mean(0)]
    return rates


def _replace_folder(new: Path, old: Path) -> None:
    """Puts folder `new` where `old` is; an existing `old` is moved aside first, then deleted."""
    if old.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{old.name}.", suffix=".old", dir=old.parent))
        os.replace(old, trash / old.name)
        os.replace(new, old)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, old)


def load_params(out_dir) -> dict | None:
    """The synthau.json of a finished data set under `out_dir`, or None."""
    try:
        return json.loads((Path(out_dir) / "synthau.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def ensure(out_dir, *, sizes: dict[str, int] | None = None, image_size: int = 200,
           seed: int = 0, target_shift: str = "full", workers: int | None = None,
           progress: bool = True) -> dict:
    """Like `generate`, but keeps a finished data set made with the same parameters (a cache)."""
    found = load_params(out_dir)
    wanted = _params(sizes, image_size, seed, target_shift)
    if found is not None and all(found.get(k) == v for k, v in wanted.items()) and (
            found.get("target_shift", "full") == target_shift):
        return found
    return generate(out_dir, sizes=sizes, image_size=image_size, seed=seed,
                    target_shift=target_shift, workers=workers, progress=progress)


def contact_sheet(data_dir, split: str, rows: int = 6, cols: int = 6) -> np.ndarray:
    """A grid of the first rows x cols aligned images of `split` with their 49 landmarks and
    their active AUs written underneath (BGR uint8), for eyeballing a data set."""
    lists = read_lists(Path(data_dir) / "list" / split)
    n = min(rows * cols, len(lists))
    first = cv2.imread(str(Path(data_dir) / lists.paths[0]), cv2.IMREAD_COLOR)
    tile = max(first.shape[0], 144)  # small images are enlarged so the text stays legible
    band = 18
    sheet = np.full((rows * (tile + band), cols * tile, 3), 255, np.uint8)
    for i in range(n):
        image = cv2.imread(str(Path(data_dir) / lists.paths[i]), cv2.IMREAD_COLOR)
        zoom = tile / image.shape[0]
        image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_LINEAR)
        for x, y in (lists.landmarks[i] + 0.5) * zoom - 0.5:
            cv2.circle(image, (int(round(x * ONE)), int(round(y * ONE))), 1 * ONE,
                       (0, 255, 0), -1, cv2.LINE_AA, SHIFT)
        r, c = divmod(i, cols)
        sheet[r * (tile + band):r * (tile + band) + tile, c * tile:(c + 1) * tile] = image
        labels = lists.au[i]
        text = ("AU " + " ".join(name[2:] for name, on in zip(AU_NAMES, labels, strict=True)
                                 if on == 1)) if (labels == 1).any() else "-"
        if (labels == UNKNOWN).all():
            text = "unlabelled"
        cv2.putText(sheet, text, (c * tile + 4, r * (tile + band) + tile + band - 5),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet

