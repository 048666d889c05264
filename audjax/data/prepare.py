"""Data set preparation: raw face images -> aligned images + ADLD list files.

    audjax prepare --images RAW --landmarks RAW_land.txt --out DATA --name src_train
    audjax prepare --images RAW --annotate --labels RAW_au.txt --out DATA --name tgt

Every image (searched recursively under --images: .jpg, .jpeg, .png, .bmp) gets 68 or 49
landmarks (from --landmarks, else from dlib with --annotate), is aligned by `audjax.data.align`
(docs/design.md §6) and written to DATA/images/NAME/<its path under --images>. The list files
DATA/list/NAME_{path,land,AUoccur}.txt collect, in sorted path order, the image paths (relative
to DATA), the 49 aligned landmarks and the AU labels. Images without landmarks (no face found)
are dropped and listed, with the reason, in DATA/list/NAME_dropped.txt.

Input files, one image a line, the path relative to --images and free of whitespace:

    --landmarks  `path x1 y1 ... x68 y68` (or 49 points, the same on every line), in source
                 pixels with pixel centres at integer coordinates (dlib's convention)
    --labels     `path l1 ... lK`, labels 1 / 0 / 999 (unknown); unlisted images get all 999

Re-running is cheap: DATA/list/NAME_manifest.jsonl records each finished image with a
fingerprint of its inputs (the source file's path, size and modification time, its landmarks,
out_size, box_enlarge), the landmarks dlib found (the expensive part) or why it was dropped. An
image whose fingerprint is unchanged and whose aligned file exists is not processed again, so an
interrupted run resumes and a finished one only rewrites the lists (the aligned landmarks are
recomputed from the source landmarks: a cheap, deterministic 2x3 transform). Aligned images of
items that are no longer given stay on disk but leave the lists.

The Python API, `prepare(items, ...)`, takes `RawItem` records; SynthAU uses it so that its
generated faces go through exactly the alignment real data goes through.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from audjax.data.align import align_face, alignment_matrix, transform_points
from audjax.data.annotate import MIN_FACE, detect_landmarks
from audjax.data.lists import (
    ListError,
    check_finite,
    check_labels,
    list_file,
    parse_table,
    read_lines,
    write_lists,
)
from audjax.files import atomic_write
from audjax.labels import LABEL_VALUES, UNKNOWN
from audjax.landmarks import AU_NAMES, select_49
from audjax.tools.progress import StatusLine

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True, eq=False)
class RawItem:
    """One raw face image for `prepare`.

    Attributes:
      image: the source: an image file's path, a uint8 array (HxWx3 BGR, HxW grey or HxWx4
        BGRA), or a zero-argument callable returning such an array. A callable runs in the
        worker process, so it must be picklable when there are several workers (a module-level
        function or a functools.partial of one), and it must be deterministic: re-runs
        fingerprint a file by its size and modification time and an array by its bytes, but a
        callable only by the item's name and landmarks.
      name: the aligned image's path relative to OUT/images/<prefix_name>/ ('/'-separated, no
        '..'); its suffix (.png, .jpg, .jpeg or .bmp) picks the file format.
      landmarks: (68, 2) or (49, 2) (x, y) points in the source's pixels (integer = pixel
        centre); None to detect them with dlib, which needs `prepare(..., annotate=True)`.
      au: the K labels (1, 0, or 999 = unknown); None for all unknown.
    """

    image: str | os.PathLike | np.ndarray | Callable[[], np.ndarray]
    name: str
    landmarks: np.ndarray | None = None
    au: Sequence[int] | None = None


@dataclass(frozen=True)
class PrepareReport:
    """What `prepare` did.

    Attributes:
      prefix: the list prefix written, OUT/list/<prefix_name>.
      num_items: the items given.
      num_kept: the items in the lists.
      num_reused: of those, the ones an earlier run had already aligned.
      dropped: (name, reason) of every item left out, in item order.
      dropped_file: where `dropped` is written, one "name<TAB>reason" a line.
      seconds: wall time.
    """

    prefix: str
    num_items: int
    num_kept: int
    num_reused: int
    dropped: tuple[tuple[str, str], ...]
    dropped_file: str
    seconds: float

    def summary(self):
        """A few lines for people: counts, drop reasons, where the drop list is."""
        lines = [f"{self.prefix}: {self.num_items} images, {self.num_kept} aligned "
                 f"({self.num_reused} from an earlier run), {len(self.dropped)} dropped, "
                 f"{self.seconds:.1f} s"]
        for reason, count in collections.Counter(r for _, r in self.dropped).most_common():
            lines.append(f"  dropped, {reason}: {count}")
        if self.dropped:
            lines.append(f"  dropped images are listed in {self.dropped_file}")
        return "\n".join(lines)


def prepare(items: Iterable[RawItem], out_root, prefix_name, *, out_size=200, box_enlarge=2.8,
            workers=None, annotate=False, num_aus=None, progress=True, min_face=MIN_FACE):
    """Aligns `items` and writes the images and the list files of one split.

    Args:
      items: `RawItem`s; their order is the order of the lists.
      out_root: the data root: images go to out_root/images/<prefix_name>/<item.name>, lists to
        out_root/list/<prefix_name>_{path,land,AUoccur}.txt with paths relative to out_root.
      prefix_name: the split's name, e.g. "source_train".
      out_size, box_enlarge: see `audjax.data.align.alignment_matrix`.
      workers: processes to align in (default: one per available core); 1 works in-process.
        Several are started with multiprocessing's "spawn", which re-imports the calling script:
        a script calling `prepare` must do so under `if __name__ == "__main__":`.
      annotate: detect the landmarks of items that have none with dlib (else they are dropped).
      min_face: with `annotate`, the smallest face to find, in pixels (larger is faster on large
        images: `audjax.data.annotate.detect_faces`).
      num_aus: K when no item has labels (default: len(AU_NAMES)).
      progress: show a progress line on stderr.

    Returns:
      A `PrepareReport`.

    Raises:
      ValueError: on a malformed item (bad name, landmark shape or labels), or when no image is
        left to write lists of (the drop report is written first).
    """
    start = time.monotonic()
    items = list(items)
    if not prefix_name or "/" in prefix_name or prefix_name in (".", ".."):
        raise ValueError(f"prefix_name must be a plain name, got {prefix_name!r}")
    for item in items:
        _check_item(item)
    repeated = [n for n, c in collections.Counter(item.name for item in items).items() if c > 1]
    if repeated:
        raise ValueError(f"item names must be unique; repeated: {', '.join(repeated[:5])}")
    labels = _label_matrix(items, num_aus)

    out_root = Path(out_root)
    image_dir = out_root / "images" / prefix_name
    prefix = out_root / "list" / prefix_name
    manifest_file = Path(f"{prefix}_manifest.jsonl")
    earlier = _read_manifest(manifest_file)

    # One entry per item: {"name", "key": fingerprint, "detected": dlib's 68 points or None,
    # "reason": why the item was dropped, or None when its aligned image is on disk}.
    entries = [None] * len(items)
    tasks = []
    num_reused = 0
    for i, item in enumerate(items):
        if item.landmarks is None and not annotate:
            # Cheap to decide again, so not recorded in the manifest (no "key").
            entries[i] = {"name": item.name, "reason": "no landmarks given"}
            continue
        key = _fingerprint(item, out_size, box_enlarge, min_face)
        entry = earlier.get(item.name)
        if entry is not None and entry["key"] == key and (
                entry["reason"] is not None or (image_dir / item.name).is_file()):
            entries[i] = entry
            num_reused += entry["reason"] is None
        else:
            tasks.append((i, item, str(image_dir / item.name), key, out_size, box_enlarge,
                          min_face))

    manifest_file.parent.mkdir(parents=True, exist_ok=True)
    bar = _Progress(f"prepare {prefix_name}", len(tasks), enabled=progress)
    with open(manifest_file, "a", encoding="utf-8") as manifest:
        for i, entry in _run(tasks, workers):
            entries[i] = entry
            # Appended as soon as the image is on disk, so that a crash loses no finished work.
            manifest.write(json.dumps(entry) + "\n")
            manifest.flush()
            bar.update()
    bar.close()
    # Compacted to the current items, so the manifest does not grow with every re-run.
    atomic_write(manifest_file, "".join(json.dumps(e) + "\n" for e in entries if "key" in e))

    kept = [i for i, e in enumerate(entries) if e["reason"] is None]
    dropped = tuple((e["name"], e["reason"]) for e in entries if e["reason"] is not None)
    dropped_file = list_file(prefix, "dropped")
    atomic_write(dropped_file, "".join(f"{name}\t{reason}\n" for name, reason in dropped))
    if not kept:
        raise ValueError(f"{prefix_name}: no image could be aligned; see {dropped_file}")
    write_lists(
        prefix,
        [f"images/{prefix_name}/{items[i].name}" for i in kept],
        np.array([_aligned_49(entries[i]["detected"] if items[i].landmarks is None
                              else items[i].landmarks, out_size, box_enlarge) for i in kept]),
        labels[kept],
    )
    return PrepareReport(prefix=str(prefix), num_items=len(items), num_kept=len(kept),
                         num_reused=num_reused, dropped=dropped, dropped_file=dropped_file,
                         seconds=time.monotonic() - start)


def _check_item(item):
    name = PurePosixPath(item.name)
    if (not item.name or item.name != item.name.strip() or item.name.splitlines() != [item.name]
            or name.is_absolute() or ".." in name.parts
            or name.suffix.lower() not in IMAGE_SUFFIXES):
        raise ValueError(f"item name {item.name!r} must be a relative path ending in one of "
                         f"{', '.join(IMAGE_SUFFIXES)}")
    if item.landmarks is not None:
        shape = np.shape(item.landmarks)
        if shape not in ((68, 2), (49, 2)):
            raise ValueError(f"{item.name}: landmarks must be (68, 2) or (49, 2), got {shape}")


def _label_matrix(items, num_aus):
    """(N, K) int32 labels, 999 rows for items without labels."""
    given = [np.asarray(item.au) for item in items if item.au is not None]
    if num_aus is None:
        num_aus = len(given[0]) if given else len(AU_NAMES)
    labels = np.full((len(items), num_aus), UNKNOWN, np.int32)
    for i, item in enumerate(items):
        if item.au is not None:
            au = np.asarray(item.au)
            if au.shape != (num_aus,) or not np.isin(au, LABEL_VALUES).all():
                raise ValueError(f"{item.name}: AU labels must be {num_aus} values in "
                                 f"{LABEL_VALUES}, got {item.au}")
            labels[i] = au
    return labels


def _fingerprint(item, out_size, box_enlarge, min_face):
    """A hash of everything that determines an item's aligned image and landmarks."""
    h = hashlib.sha256(repr((item.name, out_size, float(box_enlarge))).encode())
    source = item.image
    if isinstance(source, np.ndarray):
        h.update(repr((source.shape, source.dtype.str)).encode())
        h.update(np.ascontiguousarray(source).tobytes())
    elif not callable(source):
        path = os.path.abspath(source)
        try:
            stat = os.stat(path)
            h.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{path}|missing".encode())
    if item.landmarks is None:
        # The default min_face is the detection of manifests written before it existed, so
        # their entries stay valid; other values name the search on the full run's pyramid
        # levels, whose landmarks differ from those of the earlier scaled copy.
        h.update(b"dlib" if min_face == MIN_FACE else
                 f"dlib min_face={min_face:g} levels".encode())
    else:
        h.update(np.asarray(item.landmarks, np.float64).tobytes())
    return h.hexdigest()


def _read_manifest(file):
    """{name: entry} from an earlier run's manifest; an unreadable line (a crash mid-write) is
    skipped, which only means that image is processed again."""
    entries = {}
    if file.exists():
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entries[entry["name"]] = entry
    return entries


# ---------------------------------------------------------------------------------------------
# The work on one item, in a worker process


def available_cores() -> int:
    """The cores this process may run on: the default number of worker processes."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1)


def _run(tasks, workers):
    """Yields (index, entry) for each task, in completion order."""
    if workers is None:
        workers = available_cores()
    workers = min(workers, len(tasks))
    if workers <= 1:
        yield from map(_process, tasks)
        return
    # spawn, not fork: the parent may run JAX (or other threaded libraries), and forking a
    # multithreaded process can deadlock the child.
    context = multiprocessing.get_context("spawn")
    chunksize = max(1, min(16, len(tasks) // (4 * workers)))
    with context.Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap_unordered(_process, tasks, chunksize)


def _init_worker():
    # One process per core already; OpenCV's own threads would only compete with the others.
    cv2.setNumThreads(1)


def _process(task):
    index, item, out_file, key, out_size, box_enlarge, min_face = task
    entry = {"name": item.name, "key": key, "detected": None, "reason": None}
    image = _load(item.image)
    if image is None:
        entry["reason"] = "unreadable image"
        return index, entry
    landmarks = item.landmarks
    if landmarks is None:
        landmarks = detect_landmarks(image, min_face)
        if landmarks is None:
            entry["reason"] = "no face detected"
            return index, entry
        entry["detected"] = landmarks.tolist()
    try:
        aligned, _ = align_face(image, landmarks, out_size, box_enlarge)
    except ValueError as e:
        entry["reason"] = f"degenerate landmarks ({e})"
        return index, entry
    ok, encoded = cv2.imencode(Path(out_file).suffix, aligned)
    if not ok:
        raise OSError(f"OpenCV cannot encode {out_file}")
    atomic_write(out_file, encoded.tobytes())
    return index, entry


def _aligned_49(landmarks, out_size, box_enlarge):
    """The 49 points of the list: the source landmarks under the alignment `_process` used."""
    points = np.asarray(landmarks, np.float64)
    aligned = transform_points(alignment_matrix(points, out_size, box_enlarge), points)
    return select_49(aligned) if len(aligned) == 68 else aligned


def _load(source):
    """The source image as HxWx3 BGR uint8, or None when a file cannot be read."""
    if isinstance(source, np.ndarray):
        image = source
    elif callable(source):
        image = np.asarray(source())
    else:
        image = cv2.imread(os.fspath(source), cv2.IMREAD_COLOR)
        if image is None:
            return None
    if image.dtype != np.uint8 or image.shape[2:] not in ((), (3,), (4,)):
        raise ValueError(f"expected a uint8 HxW, HxWx3 or HxWx4 image, got {image.dtype} "
                         f"{image.shape}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class _Progress:
    """done/total, images per second and time left, as a `StatusLine`."""

    def __init__(self, label, total, enabled):
        self.label, self.total, self.done = label, total, 0
        self.status = StatusLine(enabled and total > 0)

    def update(self):
        self.done += 1
        self.status.update(self._line, force=self.done == self.total)

    def _line(self):
        rate = self.done / max(self.status.elapsed(), 1e-9)
        left = int((self.total - self.done) / rate)
        return (f"{self.label}: {self.done}/{self.total}  {rate:.1f} images/s  "
                f"ETA {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}")

    def close(self):
        self.status.close()


# ---------------------------------------------------------------------------------------------
# Command line


def _read_keyed_table(file, images, columns, check):
    """Reads lines `path v1 ... vC` into {path: (C,) float64}.

    `columns` lists the allowed C (None: the first line's); `check(file, table)` validates the
    (N, C) values; every path must be one of `images` and appear once.
    """
    lines = read_lines(file)
    paths, values = [], []
    for i, line in enumerate(lines):
        fields = line.split(None, 1)
        if not fields:
            raise ListError(f"{file}:{i + 1}: empty line")
        paths.append(fields[0])
        values.append(fields[1] if len(fields) > 1 else "")
    count = len(values[0].split())
    if columns is not None and count not in columns:
        raise ListError(f"{file}:1: expected {' or '.join(map(str, columns))} values after the "
                        f"path, found {count}")
    table = parse_table(file, values, count)
    check(file, table)
    seen = {}
    for i, path in enumerate(paths):
        if path not in images:
            raise ListError(f"{file}:{i + 1}: {path}: no such image under --images")
        if path in seen:
            raise ListError(f"{file}:{i + 1}: {path} is already on line {seen[path]}")
        seen[path] = i + 1
    return dict(zip(paths, table, strict=True))



def prepare_folder(images, out, name, *, landmarks=None, labels=None, annotate=False,
                   out_size=200, box_enlarge=2.8, workers=None,
                   image_format="keep", min_face=MIN_FACE) -> PrepareReport:
    """`prepare` every image under the folder `images` (module doc), with the landmarks and
    labels of the files `landmarks` and `labels`; `image_format` "png" or "jpg" renames the
    aligned images to that format, "keep" keeps the source's. Raises ValueError naming the
    folder, a ListError naming the file and line of a bad table."""
    if not landmarks and not annotate:
        raise ValueError("give --landmarks FILE, --annotate, or both")
    root = Path(images)
    if not root.is_dir():
        raise ValueError(f"--images {root} is not a folder")
    found = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    points = _read_keyed_table(landmarks, found, (98, 136), check_finite) if landmarks else {}
    au = _read_keyed_table(labels, found, None, check_labels) if labels else {}
    items = []
    for path, file in found.items():
        item_points = points.get(path)
        item_name = path if image_format == "keep" else str(PurePosixPath(path).with_suffix(
            "." + image_format))
        items.append(RawItem(image=str(file), name=item_name,
                             landmarks=None if item_points is None else item_points.reshape(-1, 2),
                             au=None if path not in au else au[path].astype(int)))
    return prepare(items, out, name, out_size=out_size, box_enlarge=box_enlarge,
                   workers=workers, annotate=annotate, min_face=min_face)


def bench(images, out, name, *, min_face, workers=1) -> dict:
    """Times `audjax prepare --annotate` on the images under the folder `images` twice, in one
    run: with `min_face` and with the full-resolution detection (min_face 40, as before
    min_face existed), into OUT/list/NAME_{fast,full}; prints and returns images/s of both and
    the mean and largest distance of the landmarks where both found a face."""
    import platform

    root = Path(images)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {root}: no images")
    items = [RawItem(str(p), p.relative_to(root).as_posix()) for p in files]
    results = {}
    for label, face in (("full", MIN_FACE), ("fast", min_face)):
        manifest_file = Path(f"{Path(out) / 'list' / name}_{label}_manifest.jsonl")
        # A bench times the work: an earlier run's manifest would let it skip every image.
        manifest_file.unlink(missing_ok=True)
        report = prepare(items, out, f"{name}_{label}", annotate=True, min_face=face,
                         workers=workers, progress=False)
        manifest = _read_manifest(manifest_file)
        results[label] = (report, {k: e["detected"] for k, e in manifest.items()})
    both = [k for k, v in results["full"][1].items() if v is not None
            and results["fast"][1].get(k) is not None]
    distances = [np.linalg.norm(np.subtract(results["fast"][1][k], results["full"][1][k]),
                                axis=1) for k in both]
    rates = {label: len(items) / r.seconds for label, (r, _) in results.items()}
    shape = cv2.imread(str(files[0])).shape
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; {len(items)} images "
          f"({shape[1]}x{shape[0]} the first), {workers} worker(s)")
    for label, (report, _) in results.items():
        reach = MIN_FACE if label == "full" else min_face
        print(f"  min_face {reach:g}: {rates[label]:.2f} images/s, {report.num_kept} aligned")
    mean = float(np.mean(np.concatenate(distances))) if distances else math.nan
    worst = max((float(d.mean()) for d in distances), default=math.nan)
    print(f"  speed-up {rates['fast'] / rates['full']:.1f}x; landmarks of the {len(both)} images "
          f"both found: {mean:.2f} px apart on average (worst image {worst:.2f} px)")
    return {"rates": rates, "mean_px": mean, "worst_px": worst, "compared": len(both)}
