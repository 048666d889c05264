"""ADLD list files: read, validate and write them.

A data set split is named by a *prefix* P (a path without suffix, e.g. `ROOT/list/source_train`)
and stored as parallel text files, one sample a line, in the same order in every file
(docs/design.md §6):

    P_path.txt     the image's path, relative to a data root
    P_land.txt     2L numbers x1 y1 x2 y2 ...: the landmarks in the aligned image's pixels
    P_AUoccur.txt  K labels, one per AU: 1 present, 0 absent, 999 unknown
    P_weight.txt   optional: the K AU loss weights, on one line

Every problem found while reading raises `ListError`, whose message starts with the file and the
1-based line ("FILE:LINE: ...") or just the file ("FILE: ...") for whole-file problems, so that a
bad line in a 200,000-line list can be found and fixed.

An image can be used for training when it decodes, is at least as large as the crop, and holds
its landmarks (`sample_problem`). The check below decodes every image (slow on a big list; the
trainer itself only decodes the first one before it starts and skips the others as it meets them):

    audjax check ROOT/list/source_train --data_root ROOT --crop 176
"""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass

import numpy as np

from audjax.data.images import read_sample
from audjax.errors import InputError
from audjax.files import atomic_write
from audjax.labels import LABEL_VALUES, UNKNOWN
from audjax.landmarks import AU_NAMES

# printf format of landmark coordinates: 9 significant digits bring every float32 back bit for
# bit (IEEE 754 binary32 needs at most 9), and '%g' drops trailing zeros ("99.5", not "99.500000").
LANDMARK_FORMAT = "%.9g"


class ListError(InputError):
    """A list file is missing, malformed, or disagrees with the other files of its prefix."""


@dataclass(frozen=True, eq=False)
class Lists:
    """The samples of one prefix, as read by `read_lists`.

    Attributes:
      paths: N image paths, relative to the data root.
      landmarks: (N, L, 2) float32, (x, y) in the aligned image's pixels.
      au: (N, K) int32 labels in {0, 1, 999}.
      weights: (K,) float32 AU loss weights from P_weight.txt, or None when there is no such file.
      prefix: the prefix the files were read from.
    """

    paths: tuple[str, ...]
    landmarks: np.ndarray
    au: np.ndarray
    weights: np.ndarray | None
    prefix: str

    def __len__(self):
        return len(self.paths)


def list_file(prefix, kind):
    """The file of `prefix` holding `kind` ("path", "land", "AUoccur" or "weight")."""
    return f"{os.fspath(prefix)}_{kind}.txt"


# ---------------------------------------------------------------------------------------------
# Reading


def read_lists(prefix, *, data_root=None, num_landmarks=49, num_aus=None, check_images=False,
               crop=None):
    """Reads and validates the list files of `prefix`.

    Args:
      prefix: the path shared by the files, without the `_path.txt` etc. suffixes.
      data_root: the folder the image paths are relative to (default: the working directory);
        only used with `check_images`.
      num_landmarks: L, the number of (x, y) pairs each line of P_land.txt must hold.
      num_aus: K, the number of labels each line of P_AUoccur.txt must hold; None takes the
        count of the first line.
      check_images: also decode every image with OpenCV (slow on big lists: it reads them all)
        and check it with `sample_problem`.
      crop: with `check_images`, the crop side every image must allow.

    Returns:
      A `Lists`.

    Raises:
      ListError: naming the file and line of the first problem found.
    """
    prefix = os.fspath(prefix)
    path_file, land_file, au_file = (list_file(prefix, k) for k in ("path", "land", "AUoccur"))

    path_lines = read_lines(path_file)
    for i, line in enumerate(path_lines):
        if not line.strip():
            raise ListError(f"{path_file}:{i + 1}: empty image path")
    paths = tuple(line.strip() for line in path_lines)

    land_lines = read_lines(land_file)
    _check_same_length(land_file, land_lines, path_file, path_lines)
    # Checked after the cast to float32: a huge number only becomes inf there.
    with np.errstate(over="ignore"):
        landmarks = parse_table(land_file, land_lines, 2 * num_landmarks).astype(np.float32)
    check_finite(land_file, landmarks)

    au_lines = read_lines(au_file)
    _check_same_length(au_file, au_lines, path_file, path_lines)
    if num_aus is None:
        num_aus = len(au_lines[0].split())
        if num_aus == 0:
            raise ListError(f"{au_file}:1: no labels")
    au = parse_table(au_file, au_lines, num_aus)
    check_labels(au_file, au)

    weights = None
    weight_file = list_file(prefix, "weight")
    if os.path.exists(weight_file):
        weight_lines = read_lines(weight_file)
        if len(weight_lines) > 1:
            raise ListError(f"{weight_file}:2: expected the {num_aus} weights on one line")
        weights = parse_table(weight_file, weight_lines, num_aus)[0]
        check_finite(weight_file, weights[None])

    lists = Lists(
        paths=paths,
        landmarks=landmarks.reshape(len(paths), num_landmarks, 2),
        au=au.astype(np.int32),
        weights=None if weights is None else weights.astype(np.float32),
        prefix=prefix,
    )
    if check_images:
        check_image_files(lists, data_root, crop=crop)
    return lists


# The helpers below also validate the input files of `audjax.data.prepare`.


def read_lines(file):
    """The lines of a UTF-8 text file, without line ends; a missing or empty file is an error."""
    try:
        with open(file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ListError(f"{file}: file not found") from None
    except UnicodeDecodeError as e:
        raise ListError(f"{file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not lines:
        raise ListError(f"{file}: empty list")
    return lines


def _check_same_length(file, lines, reference_file, reference_lines):
    if len(lines) != len(reference_lines):
        raise ListError(f"{file}: {len(lines)} lines, but {reference_file} has "
                        f"{len(reference_lines)}: the files of a prefix must match line for line")


def parse_table(file, lines, columns):
    """Parses `lines` of `file` (whitespace-separated numbers) into an (N, columns) float64 array.

    np.loadtxt parses in C, which matters for 200,000-line lists, but its errors do not say which
    line of *our* file is wrong (and it silently skips blank lines); so on any failure the lines
    are parsed again one by one, which finds and reports the first bad line.
    """
    try:
        table = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        table = None
    if table is None or table.shape != (len(lines), columns):
        table = _parse_table_slowly(file, lines, columns)
    return table


def _parse_table_slowly(file, lines, columns):
    table = np.empty((len(lines), columns), np.float64)
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) != columns:
            raise ListError(f"{file}:{i + 1}: expected {columns} values, found {len(fields)}")
        for j, field in enumerate(fields):
            try:
                table[i, j] = float(field)
            except ValueError:
                raise ListError(f"{file}:{i + 1}: value {j + 1}: {field!r} is not a number") \
                    from None
    return table


def check_finite(file, table):
    """Raises a ListError at the first row of `table` (row i = line i + 1) with a NaN or inf."""
    finite = np.isfinite(table)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ListError(f"{file}:{row + 1}: value {col + 1}: {table[row, col]} is not finite")


def check_labels(file, table):
    """Raises a ListError at the first row of `table` with a label outside {0, 1, 999}."""
    valid = np.isin(table, LABEL_VALUES)
    if not valid.all():
        row, col = np.argwhere(~valid)[0]
        raise ListError(f"{file}:{row + 1}: value {col + 1}: label {table[row, col]:g} is not "
                        f"one of {', '.join(map(str, LABEL_VALUES))}")


def check_image_files(lists, data_root, *, crop=None, decode="all"):
    """Every image of `lists` must exist; the decoded ones (`decode`: "all" or "first") must
    also pass `sample_problem`. Raises ListError at the first failing line of P_path.txt.

    Files are looked at in threads (OpenCV releases the GIL), and at the first failure the rest
    of a big list is not decoded before reporting it.
    """
    root = os.fspath(data_root) if data_root is not None else os.getcwd()
    path_file = list_file(lists.prefix, "path")

    def problem(i):
        full = os.path.join(root, lists.paths[i])
        if not os.path.isfile(full):
            return f"image not found: {full}"
        if decode == "all" or i == 0:
            why = read_sample(full, lists.landmarks[i], crop)[1]
            if why is not None:
                return f"{full}: {why}"
        return None

    pool = concurrent.futures.ThreadPoolExecutor(min(32, 4 * (os.cpu_count() or 1)))
    try:
        for i, message in enumerate(pool.map(problem, range(len(lists)))):
            if message is not None:
                raise ListError(f"{path_file}:{i + 1}: {message}")
    finally:
        pool.shutdown(cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# Writing


def write_lists(prefix, paths, landmarks, au, weights=None):
    """Writes the list files of `prefix` (each one atomically, see `atomic_write`).

    Args:
      prefix: the path shared by the files; its folder is created if needed.
      paths: N image paths, relative to the data root.
      landmarks: (N, L, 2) coordinates, written with `LANDMARK_FORMAT` (float32 round-trips).
      au: (N, K) labels in {0, 1, 999}.
      weights: optional (K,) AU weights for P_weight.txt. Without them an existing P_weight.txt
        is removed, so that stale weights never pair with new labels.

    Raises:
      ValueError: on mismatched lengths, an empty list, a path with a line break, a non-finite
        landmark or a label outside {0, 1, 999} -- anything `read_lists` would reject.
    """
    paths = [os.fspath(p) for p in paths]
    landmarks = np.asarray(landmarks, np.float32)
    au = np.asarray(au)
    n = len(paths)
    if n == 0:
        raise ValueError(f"{prefix}: refusing to write an empty list")
    if landmarks.ndim != 3 or landmarks.shape[0] != n or landmarks.shape[2] != 2:
        raise ValueError(f"landmarks must be ({n}, L, 2), got {landmarks.shape}")
    if au.ndim != 2 or au.shape[0] != n:
        raise ValueError(f"au must be ({n}, K), got {au.shape}")
    for p in paths:
        if not p.strip() or p != p.strip() or p.splitlines() != [p]:
            raise ValueError(f"image path {p!r} cannot be written on one line of a list")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks must be finite")
    if not np.isin(au, LABEL_VALUES).all():
        raise ValueError(f"AU labels must be in {LABEL_VALUES}")

    land_format = " ".join([LANDMARK_FORMAT] * (2 * landmarks.shape[1])) + "\n"
    atomic_write(list_file(prefix, "path"), "".join(p + "\n" for p in paths))
    atomic_write(list_file(prefix, "land"),
                 "".join(land_format % tuple(row) for row in landmarks.reshape(n, -1).tolist()))
    atomic_write(list_file(prefix, "AUoccur"),
                 "".join(" ".join(map(str, row)) + "\n" for row in au.astype(int).tolist()))
    if weights is not None:
        write_weights(prefix, weights)
    elif os.path.exists(list_file(prefix, "weight")):
        os.remove(list_file(prefix, "weight"))


def write_weights(prefix, weights):
    """Writes P_weight.txt: the (K,) AU loss weights on one line."""
    weights = np.asarray(weights, np.float32)
    if weights.ndim != 1 or not np.isfinite(weights).all():
        raise ValueError(f"weights must be a finite (K,) vector, got {weights}")
    atomic_write(list_file(prefix, "weight"),
                 " ".join(LANDMARK_FORMAT % w for w in weights.tolist()) + "\n")


# ---------------------------------------------------------------------------------------------
# Command line helpers (`audjax check`, audjax.cli.check)


def check_command(prefix, data_root, crop) -> str:
    """The command that checks every image of a list, for messages that suggest it."""
    return f"audjax check {prefix} --data_root {data_root} --crop {crop}"



def summary(lists, *, images_checked=False):
    """A few lines describing `lists`: sizes, label rates per AU, weights."""
    n, num_landmarks, _ = lists.landmarks.shape
    num_aus = lists.au.shape[1]
    names = AU_NAMES if num_aus == len(AU_NAMES) else [f"AU#{k + 1}" for k in range(num_aus)]
    lines = [f"{lists.prefix}: {n} samples, {num_landmarks} landmarks, {num_aus} AUs"]
    for k, name in enumerate(names):
        column = lists.au[:, k]
        known = column[column != UNKNOWN]
        rate = f"{(known == 1).mean():.3f}" if len(known) else "n/a"
        weight = "" if lists.weights is None else f", weight {lists.weights[k]:.4g}"
        lines.append(f"  {name}: {len(known)} labelled, positive rate {rate}{weight}")
    if lists.weights is None:
        lines.append("  no weight file (weights come from the source training labels)")
    if images_checked:
        lines.append(f"  all {n} images decode")
    return "\n".join(lines)

