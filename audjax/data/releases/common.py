"""What the release importers share: AU choice, subject folds, writing a split, the summary.

An importer turns a release into `Split`s (RawItems plus the frames it dropped before any
alignment, e.g. a labelled frame missing on disk) and hands each to `write_split`, which runs
`audjax.data.prepare.prepare` once, adds the early drops to the split's `_dropped.txt`, writes
the AU weights of a source training split and returns the numbers the summary prints.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from audjax.data.lists import list_file, read_lists, write_weights
from audjax.data.prepare import IMAGE_SUFFIXES, PrepareReport, RawItem, prepare
from audjax.files import atomic_write
from audjax.labels import UNKNOWN, au_weights

# The paper's six AUs (audjax.landmarks.AU_NAMES), the default of every importer.
PAPER_AUS = (1, 2, 4, 6, 12, 17)

# A hook for callers that know the landmarks (tests, or landmarks from elsewhere): given a
# source image's path, its (68, 2) or (49, 2) points, or None to leave the image to dlib.
LandmarksFor = Callable[[str], "np.ndarray | None"]

MISSING_FRAME = "frame missing on disk"


def parse_aus(text: str | Sequence[int], available: Sequence[int], what: str) -> tuple[int, ...]:
    """The AU numbers of `text` ("1,2,4" or "1 2 4", or a sequence), each one of `available`
    (the AUs `what`, a release, codes), in the order given."""
    if isinstance(text, str):
        fields = [f for f in re.split(r"[,\s]+", text.strip()) if f]
        try:
            aus = tuple(int(f.upper().removeprefix("AU")) for f in fields)
        except ValueError:
            raise ValueError(f"--aus {text!r}: expected AU numbers such as 1,2,4") from None
    else:
        aus = tuple(int(a) for a in text)
    if not aus:
        raise ValueError("--aus: no AU given")
    unknown = [a for a in aus if a not in available]
    if unknown:
        raise ValueError(f"--aus: {what} does not code AU {', '.join(map(str, unknown))}; it "
                         f"codes {' '.join(map(str, available))}")
    if len(set(aus)) != len(aus):
        raise ValueError(f"--aus {text!r}: an AU is given twice")
    return aus


def fold_subjects(parts: Sequence[Sequence[str]], fold: int) -> dict[str, tuple[str, ...]]:
    """JAA-Net's three-fold protocol (also ME-GraphAU's): fold 1 trains on parts 1 and 2 and
    tests on part 3, fold 2 trains on 1 and 3 and tests on 2, fold 3 trains on 2 and 3 and tests
    on 1. {"train": subjects, "test": subjects}."""
    test = {1: 2, 2: 1, 3: 0}[fold]
    train = tuple(s for i, part in enumerate(parts) if i != test for s in part)
    return {"train": train, "test": tuple(parts[test])}


@dataclass
class Split:
    """One split to write: its list prefix name, its items, and what was dropped before them.

    Attributes:
      name: the prefix name, e.g. "BP4D_train" (lists at OUT/list/<name>_*.txt).
      items: the RawItems, in list order.
      dropped: (name, reason) of frames left out before alignment (missing on disk, ...).
      weights: write OUT/list/<name>_weight.txt (the source training split).
    """

    name: str
    items: list[RawItem] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    weights: bool = False


@dataclass(frozen=True)
class SplitReport:
    """What `write_split` wrote: the prepare report, the early drops and the AU base rates."""

    name: str
    prepared: PrepareReport
    dropped: tuple[tuple[str, str], ...]   # all of them: early ones first, then prepare's
    rates: tuple[float | None, ...]        # positive rate per AU among labelled images
    labelled: tuple[int, ...]              # labelled (not 999) images per AU
    weights: tuple[float, ...] | None
    copy_of: str | None = None             # the split whose lists these are a copy of

    @property
    def num_kept(self) -> int:
        return self.prepared.num_kept


@dataclass(frozen=True)
class ImportReport:
    """Every split an importer wrote, and notes for the user (which protocol, what to pass)."""

    release: str
    aus: tuple[int, ...]
    splits: tuple[SplitReport, ...]
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """Images per split, drops with reasons, AU base rates per split."""
        lines = [f"{self.release}: AUs {' '.join(map(str, self.aus))}"]
        for s in self.splits:
            if s.copy_of:
                lines.append(f"{s.name}: a copy of {s.copy_of}'s lists ({s.num_kept} images)")
                continue
            lines.append(f"{s.name}: {s.num_kept} images ({s.prepared.num_reused} from an "
                         f"earlier run), {len(s.dropped)} dropped")
            for reason, count in collections.Counter(r for _, r in s.dropped).most_common():
                lines.append(f"  dropped, {reason}: {count}")
            if s.dropped:
                lines.append(f"  dropped images are listed in {s.prepared.dropped_file}")
            rates = ["n/a" if r is None else f"{r:.3f}" for r in s.rates]
            if any(n > 0 for n in s.labelled):
                lines.append("  base rates: " + "  ".join(
                    f"AU{a} {r}" for a, r in zip(self.aus, rates, strict=True)))
            else:
                lines.append("  unlabelled")
            if s.weights is not None:
                lines.append("  weights: " + "  ".join(
                    f"AU{a} {w:.4g}" for a, w in zip(self.aus, s.weights, strict=True)))
        lines += list(self.notes)
        return "\n".join(lines)


def write_split(split: Split, out, *, landmarks_for: LandmarksFor | None = None,
                **prepare_kwargs) -> SplitReport:
    """Aligns `split`'s items with `prepare` (dlib finds the landmarks of items without any),
    writes its `_dropped.txt` with the early drops first and, for a source training split, its
    `_weight.txt` (`audjax.labels.au_weights` of the kept labels)."""
    if not split.items:
        raise ValueError(f"{split.name}: no frame to prepare ({len(split.dropped)} dropped: "
                         f"{_reasons(split.dropped)})")
    items = split.items
    if landmarks_for is not None:
        items = [item if item.landmarks is not None else
                 replace(item, landmarks=landmarks_for(os.fspath(item.image))) for item in items]
    report = prepare(items, out, split.name, annotate=True, **prepare_kwargs)
    dropped = tuple(split.dropped) + report.dropped
    atomic_write(report.dropped_file, "".join(f"{n}\t{r}\n" for n, r in dropped))

    prefix = Path(out) / "list" / split.name
    labels = read_lists(prefix).au
    weights = None
    if split.weights:
        try:
            weights = au_weights(labels)
        except ValueError as e:
            raise ValueError(f"{split.name}: {e}") from None
        write_weights(prefix, weights)
    known = labels != UNKNOWN
    counts = known.sum(axis=0)
    positives = ((labels == 1) & known).sum(axis=0)
    rates = tuple(None if n == 0 else float(p / n) for p, n in zip(positives, counts, strict=True))
    return SplitReport(name=split.name, prepared=report, dropped=dropped, rates=rates,
                       labelled=tuple(int(n) for n in counts),
                       weights=None if weights is None else tuple(map(float, weights)))


def copy_split(report: SplitReport, out, name: str) -> SplitReport:
    """Writes the lists of `report`'s split again under the prefix `name` (the same images):
    for protocols without a validation split, whose trainer still reads one."""
    source, target = Path(out) / "list" / report.name, Path(out) / "list" / name
    # The drops too: an earlier run's _dropped.txt of another protocol must not stay beside them.
    for kind in ("path", "land", "AUoccur", "dropped"):
        atomic_write(list_file(target, kind), Path(list_file(source, kind)).read_bytes())
    if os.path.exists(list_file(target, "weight")):
        os.remove(list_file(target, "weight"))  # never stale weights beside copied labels
    return replace(report, name=name, copy_of=report.name, weights=None)


def _reasons(dropped) -> str:
    counts = collections.Counter(r for _, r in dropped).most_common()
    return ", ".join(f"{reason}: {count}" for reason, count in counts) or "none"


def frame_index(folder: Path, suffixes=IMAGE_SUFFIXES) -> dict[int, Path]:
    """{frame number: file} of the image files in `folder` named by a number, whatever their
    zero padding (0001.jpg, 2440.jpg, 00001.jpg); {} when the folder does not exist."""
    if not folder.is_dir():
        return {}
    index = {}
    for entry in os.scandir(folder):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() in suffixes and stem.isdigit():
            index[int(stem)] = Path(entry.path)
    return index

