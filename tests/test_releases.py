"""The release importers (audjax.data.releases): small trees in each release's own layout.

Parsing, splitting and list writing are tested with a `landmarks_for` hook (no dlib); one
command-line run per release-independent path uses dlib on SynthAU faces (skipped without it).
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from audjax.data.lists import ListError, read_lists
from audjax.data.releases import (
    bp4d,
    disfa,
    emotionet,
    import_bp4d,
    import_disfa,
    import_emotionet,
)
from audjax.labels import au_weights

REPO = Path(__file__).resolve().parents[1]
SIZE = 40          # raw test images: SIZE x SIZE
OUT_SIZE = 32      # aligned side
KWARGS = {"out_size": OUT_SIZE, "workers": 1, "progress": False}
LANDMARKS = np.random.default_rng(0).uniform(0.3 * SIZE, 0.7 * SIZE, (68, 2))


def landmarks_for(path):
    """Every test image has the same (non-degenerate) face; the hook sees real paths."""
    assert os.path.isfile(path), path
    return LANDMARKS


def write_image(file, seed=0, size=SIZE):
    file.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    assert cv2.imwrite(str(file), image)


# ---------------------------------------------------------------------------------------------
# BP4D

# The full CSV header: frame number, then AU columns (more than the twelve, as shipped).
BP4D_HEADER = ["0", "1", "2", "3", "4", "5", "6", "7", "9", "10", "11", "12", "14", "15", "17",
               "23", "24"]


def write_occ(file, rows):
    """An AU_OCC CSV as BP4D ships it: CRLF line ends; `rows` are {column: value} with the
    frame under "0" and 0 for the AUs not given."""
    file.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(BP4D_HEADER)]
    lines += [",".join(str(row.get(c, 0)) for c in BP4D_HEADER) for row in rows]
    file.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def bp4d_tree(root, frames="2D+3D", labels="AUCoding/AU_OCC"):
    """F001 and M001 (training), F004 (validation), F006 (test); frame numbers padded as on
    disk (4 digits for F001 and F004, 5 for M001, none needed for F006's 2440)."""
    occ = root / labels
    write_occ(occ / "F001_T1.csv", [{"0": 1, "1": 1, "6": 1}, {"0": 2, "2": 1, "4": 9},
                                    {"0": 3, "12": 1}])  # frame 3 has no image
    write_occ(occ / "M001_T2.csv", [{"0": 10, "17": 1, "4": 1}, {"0": 11, "3": 7, "12": 1}])
    write_occ(occ / "F004_T1.csv", [{"0": 5, "1": 1}])
    write_occ(occ / "F006_T8.csv", [{"0": 2440, "12": 1}])
    for rel in ["F001/T1/0001.jpg", "F001/T1/0002.jpg", "M001/T2/00010.jpg", "M001/T2/00011.jpg",
                "F004/T1/0005.jpg", "F006/T8/2440.jpg"]:
        write_image(root / frames / rel)


def test_bp4d_full_release(tmp_path):
    raw, out = tmp_path / "BP4D", tmp_path / "data"
    bp4d_tree(raw)
    report = import_bp4d(raw, out, landmarks_for=landmarks_for, **KWARGS)
    train = read_lists(out / "list" / "BP4D_train", data_root=out, check_images=True)
    assert train.paths == ("images/BP4D_train/F001/T1/0001.jpg",
                           "images/BP4D_train/F001/T1/0002.jpg",
                           "images/BP4D_train/M001/T2/00010.jpg",
                           "images/BP4D_train/M001/T2/00011.jpg")
    # Columns AU 1 2 4 6 12 17; 9 (not coded) became 999; column 3's 7 is not read.
    np.testing.assert_array_equal(train.au, [[1, 0, 0, 1, 0, 0], [0, 1, 999, 0, 0, 0],
                                             [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 1, 0]])
    assert train.landmarks.shape == (4, 49, 2)
    np.testing.assert_allclose(train.weights, au_weights(train.au), rtol=1e-6)
    assert [s.name for s in report.splits] == ["BP4D_train", "BP4D_val", "BP4D_test"]
    # The prefixes are the ones a run with --data_root reads by default (audjax.config).
    from audjax.config import Config, list_prefixes

    prefixes = list_prefixes(Config(data_root=str(out)))
    for key in ("source_train", "source_val", "source_test"):
        assert read_lists(out / prefixes[key]).paths


def test_bp4d_splits_weights_drops_and_summary(tmp_path):
    raw, out = tmp_path / "BP4D", tmp_path / "data"
    bp4d_tree(raw)
    report = import_bp4d(raw, out, aus="1,2,4,6,17", landmarks_for=landmarks_for, **KWARGS)
    train = read_lists(out / "list" / "BP4D_train")
    assert train.au.tolist()[1] == [0, 1, 999, 0, 0] and train.weights.shape == (5,)
    val, test = (read_lists(out / "list" / f"BP4D_{s}") for s in ("val", "test"))
    assert val.paths == ("images/BP4D_val/F004/T1/0005.jpg",) and val.weights is None
    assert test.paths == ("images/BP4D_test/F006/T8/2440.jpg",)
    assert (out / "list" / "BP4D_train_dropped.txt").read_text() == (
        "F001/T1/3\tframe missing on disk\n")
    text = report.summary()
    assert "BP4D_train: 4 images (0 from an earlier run), 1 dropped" in text
    assert "dropped, frame missing on disk: 1" in text
    # Base rates among labelled frames: AU4 is 999 on one frame, so 1 of 3.
    assert "base rates: AU1 0.250  AU2 0.250  AU4 0.333  AU6 0.250  AU17 0.250" in text
    assert "BP4D_val: 1 images" in text and "BP4D_test: 1 images" in text
    # Every training subject but F001 and M001 is absent, and says so.
    assert "BP4D_train: no label CSV for F002 F003" in text
    # A second run reuses every aligned image.
    again = import_bp4d(raw, out, aus="1,2,4,6,17", landmarks_for=landmarks_for, **KWARGS)
    assert [s.prepared.num_reused for s in again.splits] == [4, 1, 1]


def test_bp4d_fold_and_fera_layout(tmp_path):
    raw, out = tmp_path / "FERA", tmp_path / "data"
    bp4d_tree(raw, frames="BP4D-training", labels="AUCoding")
    assert bp4d.find_folders(raw) == (raw / "BP4D-training", raw / "AUCoding")
    stale = out / "list" / "BP4D_val_dropped.txt"  # as an earlier --split=adld run left it
    stale.parent.mkdir(parents=True)
    stale.write_text("F004/T1/0001.jpg\tno face detected\n")
    # Fold 3 trains on parts 2 and 3 (F004, F006) and tests on part 1 (F001, M001).
    report = import_bp4d(raw, out, split="fold3", aus="1,12", landmarks_for=landmarks_for,
                         **KWARGS)
    assert [s.name for s in report.splits] == ["BP4D_train", "BP4D_val", "BP4D_test"]
    assert read_lists(out / "list" / "BP4D_train").paths == (
        "images/BP4D_train/F004/T1/0005.jpg", "images/BP4D_train/F006/T8/2440.jpg")
    test = read_lists(out / "list" / "BP4D_test")
    assert len(test) == 4
    val = read_lists(out / "list" / "BP4D_val")
    assert val.paths == test.paths and val.weights is None
    assert stale.read_text() == (out / "list" / "BP4D_test_dropped.txt").read_text()
    assert "BP4D_val: a copy of BP4D_test's lists (4 images)" in report.summary()
    assert "no validation subjects" in report.summary()


def test_bp4d_subject_splits():
    everyone = set(bp4d.PARTS[0] + bp4d.PARTS[1] + bp4d.PARTS[2])
    assert len(everyone) == 41
    adld = bp4d.subject_splits("adld")
    assert [len(adld[k]) for k in ("train", "val", "test")] == [28, 7, 6]
    assert set(adld["train"]) | set(adld["val"]) | set(adld["test"]) == everyone
    assert set(adld["val"]) | set(adld["test"]) == set(bp4d.PARTS[2])
    tests = [set(bp4d.subject_splits(f"fold{k}")["test"]) for k in (1, 2, 3)]
    assert tests == [set(bp4d.PARTS[2]), set(bp4d.PARTS[1]), set(bp4d.PARTS[0])]
    for k in (1, 2, 3):
        folds = bp4d.subject_splits(f"fold{k}")
        assert set(folds["train"]) | set(folds["test"]) == everyone and not folds["val"]
    with pytest.raises(ValueError, match="--split 'fold4'"):
        bp4d.subject_splits("fold4")


@pytest.mark.parametrize(("row", "message"), [
    ("2,1,0,0,2,0,0,0,0,0,0,0,0,0,0,0,0", ":3: AU 4: '2' is not 0, 1 or 9"),
    ("x,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0", ":3: frame number 'x' is not an integer"),
    ("2,1,0", ":3: 3 values, the header has 17"),
    ("1," + ",".join(["0"] * 16), ":3: frame 1 is already on line 2"),
])
def test_bp4d_bad_csv_names_file_and_line(tmp_path, row, message):
    file = tmp_path / "F001_T1.csv"
    good = "1," + ",".join(["0"] * 16)
    file.write_bytes(f"{','.join(BP4D_HEADER)}\r\n{good}\r\n{row}\r\n".encode())
    with pytest.raises(ListError) as error:
        bp4d.read_occurrence(file, (1, 4))
    assert str(error.value) == f"{file}{message}"


def test_bp4d_missing_pieces_are_named(tmp_path):
    with pytest.raises(ValueError, match="no BP4D frame folder under .*2D\\+3D, BP4D-training"):
        bp4d.find_folders(tmp_path)
    (tmp_path / "2D+3D").mkdir()
    with pytest.raises(ValueError, match="no BP4D AU occurrence CSVs .*give --labels"):
        bp4d.find_folders(tmp_path)
    file = tmp_path / "F001_T1.csv"
    file.write_text("0,1,2\n1,0,0\n")
    with pytest.raises(ListError, match=f"{file}:1: no column for AU 4, 6"):
        bp4d.read_occurrence(file, (1, 4, 6))
    with pytest.raises(ValueError, match="--aus: BP4D does not code AU 5"):
        bp4d.build_splits(tmp_path, tmp_path, aus="1,5")


# ---------------------------------------------------------------------------------------------
# DISFA


def write_video(file, frames, seed=0):
    """An MJPG AVI of `frames` random frames."""
    file.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"MJPG"), 20, (SIZE, SIZE))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    writer.release()


def write_intensities(root, subject, au, values):
    """SNxxx_auN.txt as DISFA ships it: `frame,intensity` lines, frames counted from 1."""
    file = root / "ActionUnit_Labels" / subject / f"{subject}_au{au}.txt"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("".join(f"{i + 1},{v}\n" for i, v in enumerate(values)))
    return file


def disfa_tree(root, frames=5):
    """SN002 (fold 1 training) and SN003 (fold 1 test), `frames` frames each."""
    for subject, seed in (("SN002", 1), ("SN003", 2)):
        write_video(root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi", frames, seed)
        for k, au in enumerate(disfa.DISFA_AUS):
            write_intensities(root, subject, au, [(i + k) % 6 for i in range(frames)])


def test_disfa_decodes_binarises_and_resumes(tmp_path):
    raw, out = tmp_path / "DISFA", tmp_path / "data"
    disfa_tree(raw)
    report = import_disfa(raw, out, landmarks_for=landmarks_for, **KWARGS)
    train = read_lists(out / "list" / "DISFA_train", data_root=out, check_images=True)
    assert train.paths == tuple(f"images/DISFA_train/SN002/{i:05d}.jpg" for i in range(5))
    # AU k of DISFA_AUS has intensity (frame + k) % 6 on each frame; present at >= 2.
    columns = [disfa.DISFA_AUS.index(a) for a in (1, 2, 4, 6, 12, 17)]
    expected = [[int((i + k) % 6 >= 2) for k in columns] for i in range(5)]
    np.testing.assert_array_equal(train.au, expected)
    np.testing.assert_allclose(train.weights, au_weights(train.au), rtol=1e-6)
    test = read_lists(out / "list" / "DISFA_test")
    assert read_lists(out / "list" / "DISFA_val").paths == test.paths and len(test) == 5
    decoded = out / "decoded" / "DISFA" / "SN002"
    assert sorted(p.name for p in decoded.iterdir()) == [
        ".decoded.json", "00000.jpg", "00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"]
    assert "DISFA_train: no labels for SN001" in report.summary()

    # A finished video is not decoded again; an interrupted one only writes what is missing.
    stamps = {p.name: p.stat().st_mtime_ns for p in decoded.iterdir()}
    (decoded / ".decoded.json").unlink()
    (decoded / "00003.jpg").unlink()
    again = import_disfa(raw, out, threshold=3, landmarks_for=landmarks_for, **KWARGS)
    after = {p.name: p.stat().st_mtime_ns for p in decoded.iterdir()}
    assert sorted(n for n in after if after[n] != stamps[n]) == [".decoded.json", "00003.jpg"]
    assert read_lists(out / "list" / "DISFA_train").au[:, 0].tolist() == [0, 0, 0, 1, 1]
    assert again.splits[0].prepared.num_reused == 4  # only the re-decoded frame is aligned
    sn003 = out / "decoded" / "DISFA" / "SN003"
    before = {p.name: p.stat().st_mtime_ns for p in sn003.iterdir()}
    import_disfa(raw, out, landmarks_for=landmarks_for, **KWARGS)
    assert {p.name: p.stat().st_mtime_ns for p in sn003.iterdir()} == before


def test_disfa_length_mismatch_names_both(tmp_path):
    raw, out = tmp_path / "DISFA", tmp_path / "data"
    disfa_tree(raw)
    label = write_intensities(raw, "SN002", 1, [0] * 6)
    with pytest.raises(ListError) as error:
        import_disfa(raw, out, aus="1,4", landmarks_for=landmarks_for, **KWARGS)
    au4 = raw / "ActionUnit_Labels" / "SN002" / "SN002_au4.txt"
    assert str(error.value) == f"{au4}: 5 frames, but {label} has 6"
    for au in disfa.DISFA_AUS:
        write_intensities(raw, "SN002", au, [0] * 6)
    video = raw / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi"
    with pytest.raises(ListError) as error:
        import_disfa(raw, out, aus="1,4", landmarks_for=landmarks_for, **KWARGS)
    assert str(error.value) == f"{label}: 6 frames, but {video} has 5"


def test_disfa_checks_every_subject_before_decoding_any(tmp_path):
    raw, out = tmp_path / "DISFA", tmp_path / "data"
    disfa_tree(raw)
    for au in disfa.DISFA_AUS:  # the test subject's labels, read after SN002's: one too few
        label = write_intensities(raw, "SN003", au, [0] * 4)
    video = raw / "Videos_LeftCamera" / "LeftVideoSN003_comp.avi"
    with pytest.raises(ListError, match=f"SN003_au1.txt: 4 frames, but {video} has 5"):
        import_disfa(raw, out, landmarks_for=landmarks_for, **KWARGS)
    assert label.is_file() and not out.exists()  # SN002's video was not decoded first


def test_disfa_bad_label_line(tmp_path):
    file = write_intensities(tmp_path, "SN001", 1, [0, 7])
    with pytest.raises(ListError, match=f"{file}:2: intensity '7' is not one of 0-5"):
        disfa.read_intensities(file)
    file.write_text("1,0\n\n3,1\n")
    with pytest.raises(ListError, match=f"{file}:2: expected `frame,intensity`, got ''"):
        disfa.read_intensities(file)


class HalfBrokenCapture:
    """cv2.VideoCapture over a video whose frame 3 of 5 does not decode."""

    def __init__(self, path):
        self.done = 0

    def isOpened(self):
        return True

    def get(self, prop):
        return 5.0

    def read(self):
        ok = self.grab()
        return ok, np.full((SIZE, SIZE, 3), 100, np.uint8) if ok else None

    def grab(self):
        self.done += 1
        return self.done <= 3

    def release(self):
        pass


def test_disfa_decoding_failure_keeps_the_frames_before(tmp_path, monkeypatch):
    raw = tmp_path / "DISFA"
    disfa_tree(raw)
    monkeypatch.setattr(disfa.cv2, "VideoCapture", HalfBrokenCapture)
    splits, notes = disfa.build_splits(raw / "Videos_LeftCamera", raw / "ActionUnit_Labels",
                                       tmp_path / "decoded", progress=False)
    train = splits[0]
    assert [i.name for i in train.items] == [f"SN002/{i:05d}.jpg" for i in range(3)]
    assert train.dropped == [("SN002/00003.jpg", "video decoding failed at frame 3"),
                             ("SN002/00004.jpg", "video decoding failed at frame 3")]
    video = raw / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi"
    assert f"{video}: decoding failed at frame 3 of 5; the frames before it are kept" in notes
    assert not (tmp_path / "decoded" / "SN002" / ".decoded.json").exists()  # retried next run


# ---------------------------------------------------------------------------------------------
# EmotioNet

EMOTIONET_HEADER = "URL,URL orig,'AU 1','AU 2','AU 4','AU 5','AU 6','AU 12','AU 17'"


def emotionet_tree(root, rows=8):
    """A labelled table of `rows` photos (the last one never downloaded) and 5 unlabelled
    images; returns the URLs."""
    urls = [f"http://example.com/photos/p{i}.jpg" for i in range(rows)]
    lines = [EMOTIONET_HEADER]
    for i, url in enumerate(urls):
        labels = [i % 2, 1 - i % 2, 999 if i == 2 else 1, 0, i % 3 == 0, 1, 0 if i else 1]
        lines.append(f"{url},http://orig.example/{i},{','.join(str(int(v)) for v in labels)}")
        if i < rows - 1:
            write_image(root / "images" / f"p{i}.jpg", seed=i)
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    for i in range(5):
        write_image(root / "unlabelled" / f"batch{i % 2}" / f"u{i}.jpg", seed=100 + i)
    return urls


def test_emotionet_halves_training_sample_and_summary(tmp_path):
    raw, out = tmp_path / "EmotioNet", tmp_path / "data"
    urls = emotionet_tree(raw)
    report = import_emotionet(raw, out, train_size=3, landmarks_for=landmarks_for, **KWARGS)
    # The halves: the rows ordered by the SHA-256 of their URL, the first half validation.
    ordered = sorted(range(8), key=lambda i: hashlib.sha256(urls[i].encode()).hexdigest())
    val_rows, test_rows = sorted(ordered[:4]), sorted(ordered[4:])
    val, test = (read_lists(out / "list" / f"emotioNet_{s}") for s in ("val", "test"))
    assert val.paths == tuple(f"images/emotioNet_val/images/p{i}.jpg" for i in val_rows if i < 7)
    assert test.paths == tuple(f"images/emotioNet_test/images/p{i}.jpg"
                               for i in test_rows if i < 7)
    labels, paths = (val.au, val.paths) if 2 in val_rows else (test.au, test.paths)
    index = [p.endswith("/p2.jpg") for p in paths].index(True)
    assert labels[index].tolist() == [0, 1, 999, 0, 1, 0]  # AUs 1 2 4 6 12 17 of row 2
    # Three of the five unlabelled images, chosen by the SHA-256 of their relative path.
    found = [f"batch{i % 2}/u{i}.jpg" for i in range(5)]
    chosen = sorted(sorted(found, key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:3])
    train = read_lists(out / "list" / "emotioNet_train")
    assert train.paths == tuple(f"images/emotioNet_train/{p}" for p in chosen)
    assert (train.au == 999).all() and train.au.shape == (3, 6) and train.weights is None
    dropped_in = "val" if 7 in val_rows else "test"
    assert (out / "list" / f"emotioNet_{dropped_in}_dropped.txt").read_text() == (
        f"{urls[7]}\tframe missing on disk\n")
    text = report.summary()
    assert "emotioNet_train: 3 images" in text and "  unlabelled" in text
    assert "the 8 labelled rows of" in text and "halved (4 + 4)" in text
    assert "3 of the 5 unlabelled images" in text


def test_emotionet_strip_prefix_and_table_errors(tmp_path):
    raw = tmp_path / "EmotioNet"
    urls = emotionet_tree(raw)
    strip = emotionet.url_mapper("strip:http://example.com/", raw)
    assert strip(urls[1]) is None  # no RAW/photos/p1.jpg yet
    write_image(raw / "photos" / "p1.jpg")
    assert strip(urls[1]) == raw / "photos" / "p1.jpg" and strip("https://other/p1.jpg") is None
    with pytest.raises(ValueError, match="--url_to_file 'path': expected basename or strip"):
        emotionet.url_mapper("path", raw)

    # Labelled images inside the unlabelled folder stay out of the training set.
    both = tmp_path / "both.csv"
    both.write_text(f"{EMOTIONET_HEADER}\n" + "".join(
        f"http://example.com/photos/batch{i}/u{i}.jpg,o,1,1,1,1,1,1,1\n" for i in (0, 1)))
    splits, _ = emotionet.build_splits(both, raw / "unlabelled", raw / "unlabelled",
                                       url_to_file="strip:http://example.com/photos/",
                                       train_size=0)
    assert [i.name for i in splits[0].items] == ["batch0/u2.jpg", "batch0/u4.jpg",
                                                 "batch1/u3.jpg"]
    assert sorted(i.name for s in splits[1:] for i in s.items) == ["batch0/u0.jpg",
                                                                   "batch1/u1.jpg"]

    table = raw / "labels.csv"
    with pytest.raises(ListError, match=f"{table}:1: no column AU 9, AU 10 in the header"):
        emotionet.read_table(table, (1, 9, 10))
    lines = table.read_text().splitlines()
    table.write_text("\n".join([lines[0], lines[1], lines[2].replace(",1,", ",2,", 1)]) + "\n")
    with pytest.raises(ListError, match=f"{table}:3: AU 1: '2' is not one of 0, 1, 999"):
        emotionet.read_table(table, (1, 2, 4))
    table.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(ListError, match=f"{table}:3: URL {urls[0]} is already on line 2"):
        emotionet.read_table(table, (1,))
    table.write_text(lines[0].replace("URL,", "Link,", 1) + "\n" + lines[1] + "\n")
    with pytest.raises(ListError, match=f"{table}:1: no column URL"):
        emotionet.read_table(table, (1,))
    with pytest.raises(ValueError, match="no labelled EmotioNet table with a URL column") as e:
        emotionet.find_table(raw)
    assert f"{table}:1: no column URL in the header" in str(e.value)  # the near miss is named

    # A table that is not UTF-8 names its line; a --labels file that is not there is named.
    table.write_bytes(lines[0].encode() + b"\n" + lines[1].encode() + b"\n\xe9,o,1\n")
    with pytest.raises(ListError, match=f"{table}:3: not UTF-8 text"):
        emotionet.read_table(table, (1,))
    with pytest.raises(ValueError, match=f"--labels {tmp_path / 'none.csv'} is not a file"):
        import_emotionet(raw, tmp_path / "data", labels=tmp_path / "none.csv")
    assert not (tmp_path / "data").exists()


def test_emotionet_xlsx(tmp_path):
    table = tmp_path / "labels.xlsx"
    try:
        import openpyxl
    except ImportError:
        table.write_bytes(b"PK\x03\x04")
        with pytest.raises(ValueError, match="reading XLSX needs openpyxl"):
            emotionet.read_table(table, (1,))
        return
    book = openpyxl.Workbook()
    book.active.append(["URL", "URL orig", "'AU 1'", "'AU 2'"])
    book.active.append(["http://x/a.jpg", "o", 1, 999])
    book.active.append(["http://x/b.jpg", "o", 0.0, 3])
    book.save(table)
    with pytest.raises(ListError, match=f"{table}:3: AU 2: 3 is not one of"):
        emotionet.read_table(table, (1, 2))
    assert emotionet.read_table(table, (1,)) == [("http://x/a.jpg", [1], 2),
                                                 ("http://x/b.jpg", [0], 3)]


# ---------------------------------------------------------------------------------------------
# Command line


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audjax", "prepare", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_help_lists_each_importers_own_flags(capsys):
    from audjax import cli

    for release, own, other in (("bp4d", "--split", "--url_to_file"),
                                ("disfa", "--threshold", "--train_size"),
                                ("emotionet", "--url_to_file", "--threshold")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["audjax", "prepare", release, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: audjax prepare {release} RAW --out DATA")
        assert own in text and "--aus" in text and other not in text
        assert "--images" not in text  # the folder mode's flags stay out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["audjax", "prepare", "bp4d", "--out", "x"])  # no RAW
    assert exit_.value.code == 2
    assert "missing arguments" in capsys.readouterr().err


def test_min_face_defaults_fit_each_release_and_reach_prepare(tmp_path, monkeypatch):
    """--min_face defaults to each importer's MIN_FACE (BP4D's large frames 160, DISFA's 120,
    EmotioNet's web photos 40: the full-resolution search), the CLI passes the flag on, the
    importers pass it to `prepare`; the folder mode and predict keep 40."""
    from audjax import cli
    from audjax.cli import predict as predict_cli
    from audjax.cli import prepare as prepare_cli
    from audjax.cli import releases as releases_cli
    from audjax.data.releases import IMPORTERS, bp4d, common, disfa, emotionet

    assert (bp4d.MIN_FACE, disfa.MIN_FACE, emotionet.MIN_FACE) == (160, 120, 40)
    for release, module in (("bp4d", bp4d), ("disfa", disfa), ("emotionet", emotionet)):
        assert releases_cli.FLAGS[release]["min_face"].default == module.MIN_FACE
    assert prepare_cli.FLAGS["min_face"].default == 40
    assert predict_cli.FLAGS["min_face"].default == 40

    seen = []
    real = common.prepare

    def recording(*args, **kwargs):
        seen.append(kwargs["min_face"])
        return real(*args, **kwargs)

    monkeypatch.setattr(common, "prepare", recording)
    raw = tmp_path / "BP4D"
    bp4d_tree(raw)
    import_bp4d(raw, tmp_path / "a", landmarks_for=landmarks_for, **KWARGS)
    import_bp4d(raw, tmp_path / "b", landmarks_for=landmarks_for, min_face=60, **KWARGS)
    assert seen == [160] * 3 + [60] * 3

    calls = []

    class Report:
        def summary(self):
            return "ok"

    monkeypatch.setitem(IMPORTERS, "disfa", lambda *a, **k: calls.append(k["min_face"]) or
                        Report())
    for args in ([], ["--min_face", "55"]):
        assert cli.main(["audjax", "prepare", "disfa", str(raw), "--out", str(tmp_path / "c"),
                         *args]) == 0
    assert calls == [120, 55]


def test_cli_bp4d_with_dlib_on_synthau_faces(tmp_path):
    pytest.importorskip("dlib")
    from audjax.data.synth.image import render

    raw, out = tmp_path / "BP4D", tmp_path / "data"
    bp4d_tree(raw)
    for i, rel in enumerate(["F001/T1/0001.jpg", "F001/T1/0002.jpg", "M001/T2/00010.jpg",
                             "M001/T2/00011.jpg", "F004/T1/0005.jpg", "F006/T8/2440.jpg"]):
        cv2.imwrite(str(raw / "2D+3D" / rel), render(0, "source_train", i, image_size=64).image)
    cv2.imwrite(str(raw / "2D+3D" / "M001/T2/00011.jpg"), np.zeros((96, 96, 3), np.uint8))
    result = run_cli("bp4d", str(raw), "--out", str(out), "--aus", "1 2 4 6 17",
                     "--out_size", "64", "--workers", "1", "--min_face", "40")  # 64-px frames
    assert result.returncode == 0, result.stderr
    assert "BP4D_train: 3 images (0 from an earlier run), 2 dropped" in result.stdout
    assert "dropped, no face detected: 1" in result.stdout
    assert (out / "list" / "BP4D_train_dropped.txt").read_text() == (
        "F001/T1/3\tframe missing on disk\nM001/T2/00011.jpg\tno face detected\n")
    lists = read_lists(out / "list" / "BP4D_train", data_root=out, check_images=True, crop=56)
    assert len(lists) == 3 and lists.weights is not None
    result = run_cli("bp4d", str(tmp_path / "nowhere"), "--out", str(out))
    assert result.returncode == 1 and "no BP4D frame folder under" in result.stderr
