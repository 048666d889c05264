"""EmotioNet as distributed -> ADLD's emotioNet_{train,val,test} lists (docs/data.md).

    audjax prepare emotionet RAW --out DATA [--labels TABLE] [--unlabelled DIR]
        [--url_to_file basename|strip:PREFIX] [--train_size 200000]

The labelled table (CSV, or XLSX when openpyxl is installed; found under RAW when it is the only
.csv / .xlsx there with a `URL` column, else --labels) has the columns `URL`, `URL orig`, then
one per AU, named e.g. `'AU 1'` (quotes and spaces are ignored); a label is 0, 1 or 999
(unknown). Each URL names a downloaded image under --frames (default RAW): `basename` takes the
URL's last path component, found anywhere under --frames; `strip:PREFIX` removes PREFIX from the
URL and reads the rest as a path relative to --frames.

ADLD's validation and test sets are the halves of the labelled table (10,544 + 10,544): the rows
ordered by the SHA-256 of their URL, the first half (rounded up) validation, the rest test, so
that the halving depends on the table alone. The training set is --train_size images of
--unlabelled (default RAW/unlabelled; 0: all), the ones with the smallest SHA-256 of their path
relative to that folder; labelled images found there are left out.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from audjax.data import annotate
from audjax.data.lists import ListError
from audjax.data.prepare import IMAGE_SUFFIXES, RawItem
from audjax.data.releases.common import (
    MISSING_FRAME,
    PAPER_AUS,
    ImportReport,
    LandmarksFor,
    Split,
    parse_aus,
    write_split,
)
from audjax.labels import LABEL_VALUES

# Any AU a table may have a column for; the table itself says which it codes.
EMOTIONET_AUS = range(1, 100)
TRAIN_SIZE = 200_000  # the paper's unlabelled training images
UNLABELLED_FOLDER = "unlabelled"
TABLE_SUFFIXES = (".csv", ".xlsx")
# The smallest face dlib looks for (`audjax.data.annotate.detect_faces`): web photos of any
# size with faces of any size, so the full-resolution search (faces of 40 px and up).
MIN_FACE = annotate.MIN_FACE


def column_name(header: str) -> str:
    """A header cell without quotes and spaces around it: `'AU 1'` -> `AU 1`."""
    return str(header).strip().strip("'\"").strip()


def au_number(header: str) -> int | None:
    """The AU a column is for (`AU 1`, `AU1`, `au 12`), None for other columns."""
    match = re.fullmatch(r"AU\s*(\d+)", column_name(header), re.IGNORECASE)
    return int(match.group(1)) if match else None


def table_rows(file) -> list[tuple[int, list]]:
    """(line number, cells) of every row of a CSV or XLSX table, the header first."""
    file = Path(file)
    if file.suffix.lower() == ".xlsx":
        if importlib.util.find_spec("openpyxl") is None:
            raise ValueError(f"{file}: reading XLSX needs openpyxl (pip install openpyxl), or "
                             "save the table as CSV")
        import openpyxl

        book = openpyxl.load_workbook(file, read_only=True, data_only=True)
        try:
            return [(i + 1, ["" if v is None else v for v in row])
                    for i, row in enumerate(book.worksheets[0].iter_rows(values_only=True))]
        finally:
            book.close()
    with open(file, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            return [(reader.line_num, row) for row in reader]
        except UnicodeDecodeError:
            pass
    data = file.read_bytes()  # the line of the first byte that is not UTF-8, for the message
    try:
        data.decode("utf-8")
        start = len(data)
    except UnicodeDecodeError as e:
        start = e.start
    line = data.count(b"\n", 0, start) + 1
    raise ListError(f"{file}:{line}: not UTF-8 text; save the table as UTF-8 CSV")


def read_table(file, aus) -> list[tuple[str, list[int], int]]:
    """(URL, the labels of `aus`, line) of each labelled row of the table `file`.

    Raises ListError naming the file (and line) of a missing column, a row without a URL, a
    URL given twice, or a label other than 0, 1, 999."""
    rows = [(line, cells) for line, cells in table_rows(file)
            if any(str(c).strip() for c in cells)]
    if not rows:
        raise ListError(f"{file}: empty table")
    header = [column_name(h) for h in rows[0][1]]
    if "URL" not in header:
        raise ListError(f"{file}:{rows[0][0]}: no column URL in the header")
    columns = {au_number(h): i for i, h in enumerate(header) if au_number(h) is not None}
    missing = [a for a in aus if a not in columns]
    if missing:
        raise ListError(f"{file}:{rows[0][0]}: no column "
                        f"{', '.join(f'AU {a}' for a in missing)} in the header")
    url_col = header.index("URL")
    out, seen = [], {}
    for line, cells in rows[1:]:
        cells = list(cells) + [""] * (len(header) - len(cells))
        url = str(cells[url_col]).strip()
        if not url:
            raise ListError(f"{file}:{line}: no URL")
        if url in seen:
            raise ListError(f"{file}:{line}: URL {url} is already on line {seen[url]}")
        seen[url] = line
        labels = []
        for a in aus:
            value = _label(cells[columns[a]])
            if value is None:
                raise ListError(f"{file}:{line}: AU {a}: {cells[columns[a]]!r} is not one of "
                                f"{', '.join(map(str, LABEL_VALUES))}")
            labels.append(value)
        out.append((url, labels, line))
    return out


def _label(cell) -> int | None:
    """A cell as 0 / 1 / 999 ("1", 1, 1.0 and "1.0" alike), None when it is none of them."""
    try:
        value = float(str(cell).strip())
    except ValueError:
        return None
    return int(value) if value in LABEL_VALUES else None


def url_mapper(spec: str, images_dir, exclude=None) -> Callable[[str], Path | None]:
    """The local file of a URL under `images_dir` by `spec` (module doc), None when absent;
    `basename` looks at no file under the folder `exclude` (the unlabelled images)."""
    images_dir = Path(images_dir)
    if spec == "basename":
        skip = None if exclude is None else Path(exclude).resolve()
        by_name: dict[str, Path] = {}
        for folder, dirs, files in os.walk(images_dir):
            # Pruned, not filtered: the unlabelled folder may hold a million images.
            dirs[:] = sorted(d for d in dirs if Path(folder, d).resolve() != skip)
            for file in sorted(files):
                path = Path(folder, file)
                if file in by_name:
                    raise ValueError(f"--url_to_file=basename: {path} and {by_name[file]} "
                                     "have the same name; use --url_to_file=strip:PREFIX")
                by_name[file] = path
        return lambda url: by_name.get(unquote(PurePosixPath(urlsplit(url).path).name))
    if spec.startswith("strip:"):
        prefix = spec.removeprefix("strip:")

        def strip(url):
            if not url.startswith(prefix):
                return None
            path = images_dir / unquote(url[len(prefix):]).lstrip("/")
            return path if path.is_file() else None

        return strip
    raise ValueError(f"--url_to_file {spec!r}: expected basename or strip:PREFIX")


def find_table(root) -> Path:
    """The one table under `root` (.csv / .xlsx) whose header has a URL column."""
    found, skipped = [], []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() in TABLE_SUFFIXES and path.is_file():
            try:
                rows = table_rows(path)
            except (ValueError, OSError) as e:
                skipped.append(str(e) if str(path) in str(e) else f"{path}: {e}")
                continue
            if rows and "URL" in [column_name(h) for h in rows[0][1]]:
                found.append(path)
            else:
                skipped.append(f"{path}:{rows[0][0] if rows else 1}: no column URL in the "
                               "header")
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(map(str, found))})"
        looked = "" if found or not skipped else f" (skipped: {'; '.join(skipped)})"
        raise ValueError(f"{what} labelled EmotioNet table with a URL column under {root}"
                         f"{looked}; give --labels FILE")
    return found[0]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_splits(table, images_dir, unlabelled_dir, *, aus=PAPER_AUS, url_to_file="basename",
                 train_size=TRAIN_SIZE, name="emotioNet") -> tuple[list[Split], tuple[str, ...]]:
    """emotioNet_train (unlabelled), emotioNet_val and emotioNet_test (module doc) and notes."""
    aus = parse_aus(aus, EMOTIONET_AUS, "EmotioNet")
    unlabelled_dir = Path(unlabelled_dir)
    if not unlabelled_dir.is_dir():
        raise ValueError(f"{unlabelled_dir} is not a folder of unlabelled training images; give "
                         "--unlabelled FOLDER")
    rows = read_table(table, aus)
    local = url_mapper(url_to_file, images_dir, exclude=unlabelled_dir)
    rows.sort(key=lambda row: _digest(row[0]))
    half = (len(rows) + 1) // 2
    labelled_files: dict[Path, int] = {}  # resolved file: its table line
    splits = []
    for role, part in (("val", rows[:half]), ("test", rows[half:])):
        out = Split(f"{name}_{role}")
        for url, labels, line in sorted(part, key=lambda row: row[2]):  # table order
            file = local(url)
            if file is None:
                out.dropped.append((url, MISSING_FRAME))
                continue
            if file.resolve() in labelled_files:
                raise ListError(f"{table}:{line}: {url} is the file {file}, as is the URL on "
                                f"line {labelled_files[file.resolve()]}")
            labelled_files[file.resolve()] = line
            item_name = file.relative_to(images_dir).as_posix()
            if Path(item_name).suffix.lower() not in IMAGE_SUFFIXES:
                out.dropped.append((url, f"not a {'/'.join(IMAGE_SUFFIXES)} image"))
                continue
            out.items.append(RawItem(image=os.fspath(file), name=item_name, au=labels))
        splits.append(out)

    found = sorted((p.relative_to(unlabelled_dir).as_posix(), p)
                   for p in unlabelled_dir.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    inside = unlabelled_dir.resolve()
    if any(f.is_relative_to(inside) for f in labelled_files):  # --frames overlaps it
        found = [(rel, p) for rel, p in found if p.resolve() not in labelled_files]
    chosen = sorted(found, key=lambda f: _digest(f[0]))[:train_size or None]
    train = Split(f"{name}_train", items=[RawItem(image=os.fspath(p), name=rel)
                                         for rel, p in sorted(chosen)])
    notes = [f"{name}_val / {name}_test: the {len(rows)} labelled rows of {table} halved "
             f"({half} + {len(rows) - half}) by the SHA-256 of their URL",
             f"{name}_train: {len(train.items)} of the {len(found)} unlabelled images in "
             f"{unlabelled_dir}"]
    if train_size and len(found) < train_size:
        notes.append(f"{name}_train: fewer unlabelled images than --train_size={train_size}")
    return [train, *splits], tuple(notes)


def import_emotionet(root, out, *, frames=None, labels=None, unlabelled=None, aus=PAPER_AUS,
                     url_to_file="basename", train_size=TRAIN_SIZE, name="emotioNet",
                     landmarks_for: LandmarksFor | None = None, min_face=MIN_FACE,
                     **prepare_kwargs) -> ImportReport:
    """Writes OUT/list/<name>_{train,val,test}_* from the release at `root` (module doc);
    `min_face` (default MIN_FACE) and `prepare_kwargs` go to `audjax.data.prepare.prepare`."""
    root = Path(root)
    aus = parse_aus(aus, EMOTIONET_AUS, "EmotioNet")
    table = Path(labels) if labels is not None else find_table(root)
    if not table.is_file():
        raise ValueError(f"--labels {table} is not a file (the labelled table, .csv or .xlsx)")
    images_dir = Path(frames) if frames is not None else root
    if not images_dir.is_dir():
        raise ValueError(f"--frames {images_dir} is not a folder")
    unlabelled = Path(unlabelled) if unlabelled is not None else root / UNLABELLED_FOLDER
    splits, notes = build_splits(table, images_dir, unlabelled, aus=aus,
                                 url_to_file=url_to_file, train_size=train_size, name=name)
    reports = [write_split(s, out, landmarks_for=landmarks_for, num_aus=len(aus),
                           min_face=min_face, **prepare_kwargs) for s in splits]
    return ImportReport(release=f"EmotioNet (table {table}, images {images_dir})",
                        aus=aus, splits=tuple(reports),
                        notes=notes)
