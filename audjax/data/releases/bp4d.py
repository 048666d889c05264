"""BP4D-Spontaneous as shipped -> ADLD's BP4D lists (docs/data.md).

    audjax prepare bp4d RAW --out DATA [--split adld|fold1|fold2|fold3] [--aus 1,2,4,6,12,17]

Two layouts are recognised under RAW: the full release (frames in `2D+3D/`, labels in
`AUCoding/AU_OCC/`) and FERA 2015's training set (frames in `BP4D-training/`, labels in
`AUCoding/`, possibly `AUCoding/AU_OCC/`); --frames and --labels point elsewhere.

Labels: one CSV per subject and task, `<subject>_<task>.csv` (F001_T1.csv), CRLF line ends. Its
header row holds AU numbers, column `0` the frame number; each value is 0, 1 or 9 (not coded,
written 999). Frames: `<subject>/<task>/<frame>.jpg`, the number zero-padded as the files are
(found from the files themselves: 0001.jpg, 2440.jpg and 00001.jpg are all frame numbers).
"""

from __future__ import annotations

import csv
from pathlib import Path

from audjax.data.lists import ListError
from audjax.data.prepare import RawItem
from audjax.data.releases.common import (
    MISSING_FRAME,
    PAPER_AUS,
    ImportReport,
    LandmarksFor,
    Split,
    copy_split,
    fold_subjects,
    frame_index,
    parse_aus,
    write_split,
)
from audjax.labels import UNKNOWN

# The twelve AUs BP4D codes for occurrence.
BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)

# JAA-Net's three parts of the 41 subjects (the same in ME-GraphAU's BP4D_Sequence_split).
PARTS = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016",
     "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020",
     "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017",
     "M015", "F014"),
)
# ADLD's split: training on parts 1 and 2 (28 subjects), part 3 halved into validation and test.
ADLD_VAL = ("F004", "F012", "F014", "F017", "F021", "M003", "M015")
ADLD_TEST = ("F006", "F007", "F015", "F019", "M006", "M009")
SPLITS = ("adld", "fold1", "fold2", "fold3")

# Where each layout keeps its frames and its labels, relative to RAW.
FRAME_FOLDERS = ("2D+3D", "BP4D-training")
LABEL_FOLDERS = ("AUCoding/AU_OCC", "AUCoding")
CSV_CODES = {"0": 0, "1": 1, "9": UNKNOWN}
# The smallest face dlib looks for (`audjax.data.annotate.detect_faces`): the frames are
# 1392x1040 with one face of some 400 px and more, so a search for faces of 160 px and up
# (10-15x faster than the full-resolution one, the same boxes: docs/performance.md)
# misses none.
MIN_FACE = 160


def subject_splits(split: str) -> dict[str, tuple[str, ...]]:
    """{"train", "val", "test": subjects} of `split` ("adld" or "fold1".."fold3"); the folds
    have no validation subjects (their "val" is empty)."""
    if split == "adld":
        return {"train": PARTS[0] + PARTS[1], "val": ADLD_VAL, "test": ADLD_TEST}
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    return {**fold_subjects(PARTS, int(split[-1])), "val": ()}


def find_folders(root, frames=None, labels=None) -> tuple[Path, Path]:
    """(frames folder, labels folder) under the release root `root`, or as given."""
    root = Path(root)

    def first(given, candidates, what, flag, ok):
        if given is not None:
            if not Path(given).is_dir():
                raise ValueError(f"{flag} {given} is not a folder")
            return Path(given)
        for c in candidates:
            if ok(root / c):
                return root / c
        raise ValueError(f"no BP4D {what} under {root} (looked for "
                         f"{', '.join(candidates)}); give {flag} FOLDER")

    return (first(frames, FRAME_FOLDERS, "frame folder", "--frames", Path.is_dir),
            first(labels, LABEL_FOLDERS, "AU occurrence CSVs", "--labels",
                  lambda p: p.is_dir() and any(p.glob("*_*.csv"))))


def read_occurrence(file, aus) -> list[tuple[int, list[int], int]]:
    """The rows of one AU_OCC CSV: (frame number, the labels of `aus` in 1 / 0 / 999, line).

    Raises ListError naming the file and line of a missing column, a bad or repeated frame
    number or a label other than 0, 1 and 9 (only the columns of `aus` are read)."""
    with open(file, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if "0" not in header:
            raise ListError(f"{file}:1: no column 0 (the frame number) in the header")
        missing = [a for a in aus if str(a) not in header]
        if missing:
            raise ListError(f"{file}:1: no column for AU {', '.join(map(str, missing))}")
        frame_col, cols = header.index("0"), [header.index(str(a)) for a in aus]
        rows, seen = [], {}
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) < len(header):
                raise ListError(f"{file}:{line}: {len(fields)} values, the header has "
                                f"{len(header)}")
            try:
                frame = int(fields[frame_col])
            except ValueError:
                raise ListError(f"{file}:{line}: frame number {fields[frame_col]!r} is not an "
                                "integer") from None
            if frame in seen:
                raise ListError(f"{file}:{line}: frame {frame} is already on line {seen[frame]}")
            seen[frame] = line
            labels = []
            for a, c in zip(aus, cols, strict=True):
                value = fields[c].strip()
                if value not in CSV_CODES:
                    raise ListError(f"{file}:{line}: AU {a}: {value!r} is not 0, 1 or 9")
                labels.append(CSV_CODES[value])
            rows.append((frame, labels, line))
    return rows


def build_splits(frames_dir, labels_dir, *, split="adld", aus=PAPER_AUS,
                 name="BP4D") -> tuple[list[Split], tuple[str, ...]]:
    """The splits of `split` (items with the labels of `aus`, landmarks None) and notes.

    Every labelled frame of a split's subjects becomes an item
    `<subject>/<task>/<file name>`; a labelled frame with no image is dropped as
    MISSING_FRAME."""
    aus = parse_aus(aus, BP4D_AUS, "BP4D")
    frames_dir, labels_dir = Path(frames_dir), Path(labels_dir)
    by_subject: dict[str, list[Path]] = {}
    for csv_file in sorted(labels_dir.glob("*_*.csv")):
        by_subject.setdefault(csv_file.stem.split("_", 1)[0], []).append(csv_file)
    subjects = subject_splits(split)
    splits, notes = [], []
    for role in ("train", "val", "test"):
        if not subjects[role]:
            continue
        absent = sorted(s for s in subjects[role] if s not in by_subject)
        if len(absent) == len(subjects[role]):
            raise ValueError(f"{labels_dir}: no label CSV of any {role} subject "
                             f"({' '.join(subjects[role])})")
        if absent:
            notes.append(f"{name}_{role}: no label CSV for {' '.join(absent)} in {labels_dir}")
        out = Split(f"{name}_{role}", weights=role == "train")
        for subject in sorted(subjects[role]):
            for csv_file in by_subject.get(subject, []):
                task = csv_file.stem.split("_", 1)[1]
                index = frame_index(frames_dir / subject / task)
                for frame, labels, _ in read_occurrence(csv_file, aus):
                    file = index.get(frame)
                    if file is None:
                        out.dropped.append((f"{subject}/{task}/{frame}", MISSING_FRAME))
                    else:
                        out.items.append(RawItem(image=str(file), au=labels,
                                                 name=f"{subject}/{task}/{file.name}"))
        splits.append(out)
    if split != "adld":
        notes.append(f"{split}: JAA-Net's protocol has no validation subjects; {name}_val is a "
                     f"copy of {name}_test (a checkpoint picked by it is picked on the test "
                     "subjects)")
    return splits, tuple(notes)


def import_bp4d(root, out, *, frames=None, labels=None, split="adld", aus=PAPER_AUS,
                name="BP4D", landmarks_for: LandmarksFor | None = None, min_face=MIN_FACE,
                **prepare_kwargs) -> ImportReport:
    """Writes OUT/list/<name>_{train,val,test}_* from the release at `root` (module doc).

    `prepare_kwargs` go to `audjax.data.prepare.prepare` (out_size, box_enlarge, workers,
    progress), with `min_face` (default MIN_FACE); `landmarks_for` see `common.LandmarksFor`."""
    frames_dir, labels_dir = find_folders(root, frames, labels)
    splits, notes = build_splits(frames_dir, labels_dir, split=split, aus=aus, name=name)
    reports = [write_split(s, out, landmarks_for=landmarks_for, min_face=min_face,
                           **prepare_kwargs) for s in splits]
    if split != "adld":
        reports.insert(1, copy_split(reports[-1], out, f"{name}_val"))
    return ImportReport(release=f"BP4D ({split}; frames {frames_dir}, labels {labels_dir})",
                        aus=parse_aus(aus, BP4D_AUS, "BP4D"), splits=tuple(reports),
                        notes=notes)

