"""DISFA as shipped -> DISFA_{train,val,test} lists by JAA-Net's subject folds (docs/data.md).

    audjax prepare disfa RAW --out DATA [--split fold1|fold2|fold3] [--threshold 2]

Under RAW: the left camera's videos, `Videos_LeftCamera/LeftVideoSN001_comp.avi` ..., and the
AU intensities, `ActionUnit_Labels/SN001/SN001_au1.txt` ... (--frames and --labels point
elsewhere). An intensity file has one line `frame,intensity` (0-5) per video frame, read in
line order from the video's frame 0; an AU is present at intensity >= --threshold (2, as
JAA-Net and ME-GraphAU binarise it).

The videos are decoded once to DECODED/<subject>/<frame:05d>.jpg (default DATA/decoded/DISFA),
each frame written whole (`audjax.files.atomic_write`); a marker file records a finished video,
so a re-run decodes nothing, and an interrupted one only decodes the frames not yet on disk.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from audjax.data.lists import ListError
from audjax.data.prepare import RawItem
from audjax.data.releases.common import (
    PAPER_AUS,
    ImportReport,
    LandmarksFor,
    Split,
    copy_split,
    fold_subjects,
    parse_aus,
    write_split,
)
from audjax.files import atomic_write

# The twelve AUs DISFA codes for intensity.
DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)

# JAA-Net's three parts of the 27 subjects (ME-GraphAU's DISFA_Sequence_split).
PARTS = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)
SPLITS = ("fold1", "fold2", "fold3")
VIDEO_FOLDERS = ("Videos_LeftCamera", "Video_LeftCamera")
LABEL_FOLDER = "ActionUnit_Labels"
MARKER = ".decoded.json"
JPEG_QUALITY = 95  # decoded frames are an intermediate: near-lossless, a tenth of PNG's size
# The smallest face dlib looks for (`audjax.data.annotate.detect_faces`): the frames are
# 1024x768 with one face of some 300 px, so a search for faces of 120 px and up (the same
# boxes as the full-resolution one, about 10x faster) misses none.
MIN_FACE = 120


def find_folders(root, frames=None, labels=None) -> tuple[Path, Path]:
    """(videos folder, intensity labels folder) under the release root `root`, or as given."""
    root = Path(root)
    videos = Path(frames) if frames is not None else next(
        (root / c for c in VIDEO_FOLDERS if (root / c).is_dir()), None)
    if videos is None or not videos.is_dir():
        raise ValueError(f"no DISFA left-camera videos: {frames or root / VIDEO_FOLDERS[0]} is "
                         "not a folder; give --frames FOLDER")
    label_dir = Path(labels) if labels is not None else root / LABEL_FOLDER
    if not label_dir.is_dir():
        raise ValueError(f"no DISFA labels: {label_dir} is not a folder; give --labels FOLDER")
    return videos, label_dir


def read_intensities(file) -> np.ndarray:
    """The intensities (0-5) of one `SNxxx_auN.txt`, in line order. Raises ListError naming
    the file and line of a malformed line."""
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ListError(f"{file}: file not found") from None
    while lines and not lines[-1].strip():  # a trailing blank line is not a frame
        lines.pop()
    values = np.empty(len(lines), np.int32)
    for i, line in enumerate(lines):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2 or not fields[0].isdigit():
            raise ListError(f"{file}:{i + 1}: expected `frame,intensity`, got {line!r}")
        if fields[1] not in ("0", "1", "2", "3", "4", "5"):
            raise ListError(f"{file}:{i + 1}: intensity {fields[1]!r} is not one of 0-5")
        values[i] = int(fields[1])
    if not len(values):
        raise ListError(f"{file}: empty")
    return values


def subject_intensities(label_dir, subject, aus) -> tuple[np.ndarray, Path]:
    """(frames, len(aus)) intensities of `subject`, and the first file read (to name in
    messages). Every AU file must have as many lines as the others."""
    files = [Path(label_dir) / subject / f"{subject}_au{a}.txt" for a in aus]
    columns = [read_intensities(f) for f in files]
    for f, c in zip(files[1:], columns[1:], strict=True):
        if len(c) != len(columns[0]):
            raise ListError(f"{f}: {len(c)} frames, but {files[0]} has {len(columns[0])}")
    return np.stack(columns, axis=1), files[0]


@dataclass(frozen=True)
class Decoded:
    """A video decoded to `folder`: `frames` of its `total` are on disk (fewer: decoding
    failed at frame `frames`)."""

    folder: Path
    frames: int
    total: int


def decode_video(video, folder, label_file, label_frames) -> Decoded:
    """Decodes `video` to folder/<frame:05d>.jpg, frames already there kept (only grabbed).

    Raises ListError when the video's frame count differs from `label_frames`, the length of
    `label_file`; a decoding failure midway keeps the frames before it."""
    video, folder = Path(video), Path(folder)
    stat = video.stat()
    stamp = {"video": str(video.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    marker = folder / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if {k: done.get(k) for k in stamp} == stamp and done.get("frames") == label_frames:
            return Decoded(folder, label_frames, label_frames)
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise ListError(f"{video}: OpenCV cannot open the video")
    try:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total != label_frames:
            raise ListError(f"{label_file}: {label_frames} frames, but {video} has {total}")
        frames = 0
        while frames < total:
            file = folder / f"{frames:05d}.jpg"
            if file.is_file():
                ok = capture.grab()  # advances without the colour conversion and the encode
            else:
                ok, image = capture.read()
                if ok:
                    encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY,
                                                           JPEG_QUALITY])[1]
                    atomic_write(file, encoded.tobytes())
            if not ok:
                break
            frames += 1
    finally:
        capture.release()
    if frames == total:
        atomic_write(marker, json.dumps({**stamp, "frames": total}))
    return Decoded(folder, frames, total)


def check_frame_count(video, label_file, label_frames) -> None:
    """Raises ListError when `video` cannot be opened or its frame count differs from
    `label_frames`, the length of `label_file` (what `decode_video` checks, without decoding)."""
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise ListError(f"{video}: OpenCV cannot open the video")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    if total != label_frames:
        raise ListError(f"{label_file}: {label_frames} frames, but {video} has {total}")


def find_video(videos_dir, subject) -> Path:
    """LeftVideo<subject>_comp.avi (or another LeftVideo<subject>*.avi) in `videos_dir`."""
    found = sorted(Path(videos_dir).glob(f"LeftVideo{subject}*.avi"))
    if not found:
        raise ValueError(f"{videos_dir}: no LeftVideo{subject}_comp.avi")
    return found[0]


def build_splits(videos_dir, label_dir, decoded_dir, *, split="fold1", aus=PAPER_AUS,
                 threshold=2, name="DISFA", progress=True) -> tuple[list[Split], tuple[str, ...]]:
    """Decodes the videos of `split`'s subjects and returns its train and test splits (items
    `<subject>/<frame:05d>.jpg` with labels intensity >= `threshold`) and notes."""
    aus = parse_aus(aus, DISFA_AUS, "DISFA")
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if not 1 <= threshold <= 5:
        raise ValueError(f"--threshold {threshold}: expected an intensity 1-5")
    subjects = fold_subjects(PARTS, int(split[-1]))
    # Every label file and video is checked before any video is decoded (minutes each), so
    # that a bad file of the last subject stops the import before the work, not after it.
    found = {}
    for role in ("train", "test"):
        found[role] = []
        for subject in sorted(subjects[role]):
            if not (Path(label_dir) / subject).is_dir():
                continue
            intensities, label_file = subject_intensities(label_dir, subject, aus)
            video = find_video(videos_dir, subject)
            check_frame_count(video, label_file, len(intensities))
            found[role].append((subject, intensities, label_file, video))
    splits, notes = [], []
    for role in ("train", "test"):
        out = Split(f"{name}_{role}", weights=role == "train")
        absent = sorted(set(subjects[role]) - {s for s, *_ in found[role]})
        if absent:
            notes.append(f"{name}_{role}: no labels for {' '.join(absent)} in {label_dir}")
        for subject, intensities, label_file, video in found[role]:
            if progress:
                print(f"decoding {subject} ({len(intensities)} frames)", file=sys.stderr)
            decoded = decode_video(video, Path(decoded_dir) / subject, label_file,
                                   len(intensities))
            labels = (intensities >= threshold).astype(int)
            for i in range(len(intensities)):
                frame = f"{subject}/{i:05d}.jpg"
                if i < decoded.frames:
                    out.items.append(RawItem(image=os.fspath(decoded.folder / f"{i:05d}.jpg"),
                                             name=frame, au=labels[i].tolist()))
                else:
                    out.dropped.append((frame, f"video decoding failed at frame "
                                               f"{decoded.frames}"))
            if decoded.frames < decoded.total:
                notes.append(f"{video}: decoding failed at frame "
                             f"{decoded.frames} of {decoded.total}; the frames before it are kept")
        splits.append(out)
    notes.append(f"{split}: JAA-Net's protocol has no validation subjects; {name}_val is a copy "
                 f"of {name}_test (a checkpoint picked by it is picked on the test subjects)")
    return splits, tuple(notes)


def import_disfa(root, out, *, frames=None, labels=None, decoded=None, split="fold1",
                 aus=PAPER_AUS, threshold=2, name="DISFA",
                 landmarks_for: LandmarksFor | None = None, min_face=MIN_FACE,
                 **prepare_kwargs) -> ImportReport:
    """Writes OUT/list/<name>_{train,val,test}_* from the release at `root` (module doc);
    `decoded` is where the frames go (default OUT/decoded/<name>); `min_face` (default
    MIN_FACE) and `prepare_kwargs` go to `audjax.data.prepare.prepare`."""
    videos_dir, label_dir = find_folders(root, frames, labels)
    decoded = Path(decoded) if decoded is not None else Path(out) / "decoded" / name
    splits, notes = build_splits(videos_dir, label_dir, decoded, split=split, aus=aus,
                                 threshold=threshold, name=name,
                                 progress=prepare_kwargs.get("progress", True))
    reports = [write_split(s, out, landmarks_for=landmarks_for, min_face=min_face,
                           **prepare_kwargs) for s in splits]
    reports.insert(1, copy_split(reports[-1], out, f"{name}_val"))
    return ImportReport(release=f"DISFA ({split}; videos {videos_dir}, labels {label_dir}, "
                                f"present at intensity >= {threshold})",
                        aus=parse_aus(aus, DISFA_AUS, "DISFA"), splits=tuple(reports),
                        notes=notes)
