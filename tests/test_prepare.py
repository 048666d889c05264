"""Data set preparation (audjax.data.prepare): API, command line, re-runs."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from audjax.data.align import alignment_matrix, transform_points
from audjax.data.lists import ListError, check_labels, read_lists
from audjax.data.prepare import RawItem, _read_keyed_table, prepare
from audjax.landmarks import select_49

REPO = Path(__file__).resolve().parents[1]


def random_face(rng, size=120):
    """A random image and 68 landmarks that are not degenerate: points scattered over the
    middle of the image (alignment only needs distinct eye centres and a non-empty box)."""
    image = rng.integers(0, 256, (size, size + 10, 3), np.uint8)
    landmarks = rng.uniform(0.3 * size, 0.7 * size, (68, 2))
    return image, landmarks


def expected_landmarks(landmarks, out_size):
    """The list's 49 points, computed straight from the alignment matrix."""
    points = transform_points(alignment_matrix(landmarks, out_size), landmarks)
    return select_49(points) if len(points) == 68 else points


def render(seed, size):
    """A picklable, deterministic image source for RawItem."""
    return random_face(np.random.default_rng(seed), size)[0]


def test_api_with_paths_arrays_and_callables(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    items, sources = [], []
    for i in range(6):
        image, landmarks = random_face(rng)
        if i % 3 == 0:
            cv2.imwrite(str(raw / f"{i}.png"), image)
            source = str(raw / f"{i}.png")
        elif i == 1:  # BGRA: the alpha channel is dropped
            source = np.dstack([image, rng.integers(0, 256, image.shape[:2], np.uint8)])
        elif i == 4:  # grey: stored as BGR
            source = image[:, :, 0].copy()
            image = np.repeat(source[:, :, None], 3, axis=2)
        else:
            image = render(i, 120)
            source = functools.partial(render, i, 120)
        if i == 4:
            landmarks = select_49(landmarks)  # 49-point input works too
        au = [1, 0, 999, 0, 1, 1] if i != 5 else None
        items.append(RawItem(image=source, name=f"s{i % 2}/{i}.png", landmarks=landmarks, au=au))
        sources.append((image, landmarks))
    items.append(RawItem(image=str(raw / "missing.png"), name="gone.png",
                         landmarks=rng.random((68, 2)) * 50))
    items.append(RawItem(image=rng.integers(0, 256, (50, 50), np.uint8), name="nolm.png"))

    report = prepare(items, tmp_path / "data", "split", out_size=64, workers=2, progress=False)
    assert (report.num_items, report.num_kept, report.num_reused) == (8, 6, 0)
    assert report.dropped == (("gone.png", "unreadable image"), ("nolm.png", "no landmarks given"))
    assert Path(report.dropped_file).read_text() == (
        "gone.png\tunreadable image\nnolm.png\tno landmarks given\n")

    lists = read_lists(tmp_path / "data" / "list" / "split", data_root=tmp_path / "data",
                       check_images=True)
    assert lists.paths == tuple(f"images/split/s{i % 2}/{i}.png" for i in range(6))
    for i, (image, landmarks) in enumerate(sources):
        np.testing.assert_allclose(lists.landmarks[i], expected_landmarks(landmarks, 64),
                                   atol=1e-4)
        # The stored image is the warp of the source by the same matrix (PNG is lossless).
        expected = cv2.warpAffine(image, alignment_matrix(landmarks, 64), (64, 64),
                                  flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "data" / lists.paths[i])),
                                      expected)
    np.testing.assert_array_equal(lists.au[0], [1, 0, 999, 0, 1, 1])
    np.testing.assert_array_equal(lists.au[5], [999] * 6)


def test_rerun_skips_finished_work(tmp_path):
    rng = np.random.default_rng(1)
    items = [RawItem(image=image, name=f"{i}.png", landmarks=landmarks)
             for i, (image, landmarks) in enumerate(random_face(rng) for _ in range(3))]
    out = tmp_path / "data"
    first = prepare(items, out, "x", out_size=48, workers=1, progress=False)
    assert (first.num_kept, first.num_reused) == (3, 0)
    image_file = out / "images" / "x" / "1.png"
    stamp = image_file.stat().st_mtime_ns

    again = prepare(items, out, "x", out_size=48, workers=1, progress=False)
    assert (again.num_kept, again.num_reused) == (3, 3)
    assert image_file.stat().st_mtime_ns == stamp

    # A lost output, changed landmarks or another size are done again; new labels are not work.
    (out / "images" / "x" / "0.png").unlink()
    moved = items[2].landmarks + 3
    items[2] = RawItem(image=items[2].image, name="2.png", landmarks=moved, au=[1] * 6)
    third = prepare(items, out, "x", out_size=48, workers=1, progress=False)
    assert third.num_reused == 1
    lists = read_lists(out / "list" / "x")
    np.testing.assert_allclose(lists.landmarks[2], expected_landmarks(moved, 48), atol=1e-4)
    np.testing.assert_array_equal(lists.au[:, 0], [999, 999, 1])
    assert prepare(items, out, "x", out_size=56, workers=1, progress=False).num_reused == 0
    # The manifest is compacted: one line per item, not one per run.
    assert len((out / "list" / "x_manifest.jsonl").read_text().splitlines()) == 3


def test_annotate_records_detections_for_reruns(tmp_path, monkeypatch):
    # A stand-in for dlib (run in-process, workers=1): faces on images with any bright pixel.
    rng = np.random.default_rng(3)
    image, landmarks = random_face(rng)
    calls = []

    def fake_detect(img, min_face):
        assert min_face == 40  # the default
        calls.append(img.shape)
        return landmarks.astype(np.float32) if img.max() > 0 else None

    monkeypatch.setattr("audjax.data.prepare.detect_landmarks", fake_detect)
    items = [RawItem(image, "face.png"), RawItem(np.zeros((30, 30, 3), np.uint8), "blank.png"),
             RawItem(image, "given.png", landmarks=landmarks + 1)]
    for _ in range(2):
        report = prepare(items, tmp_path, "t", out_size=40, workers=1, annotate=True,
                         progress=False)
        assert report.dropped == (("blank.png", "no face detected"),)
        lists = read_lists(tmp_path / "list" / "t")
        np.testing.assert_allclose(lists.landmarks[0], expected_landmarks(landmarks, 40),
                                   atol=1e-4)
        np.testing.assert_allclose(lists.landmarks[1], expected_landmarks(landmarks + 1, 40),
                                   atol=1e-4)
    # Only the first run detected, and only on the items without landmarks.
    assert calls == [(120, 130, 3), (30, 30, 3)] and report.num_reused == 2


def test_bad_items_raise(tmp_path):
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="relative path ending in"):
        prepare([RawItem(image, "../up.png", np.ones((68, 2)))], tmp_path, "x")
    with pytest.raises(ValueError, match="relative path ending in"):
        prepare([RawItem(image, "a.tif", np.ones((68, 2)))], tmp_path, "x")
    with pytest.raises(ValueError, match=r"\(68, 2\) or \(49, 2\)"):
        prepare([RawItem(image, "a.png", np.ones((5, 2)))], tmp_path, "x")
    with pytest.raises(ValueError, match="unique; repeated: a.png"):
        prepare([RawItem(image, "a.png"), RawItem(image, "a.png")], tmp_path, "x")
    with pytest.raises(ValueError, match="AU labels must be 6 values"):
        prepare([RawItem(image, "a.png", au=[1] * 6), RawItem(image, "b.png", au=[2] * 6)],
                tmp_path, "x")
    with pytest.raises(ValueError, match="no image could be aligned"):
        prepare([RawItem(image, "a.png", np.zeros((68, 2)))], tmp_path, "x", progress=False)
    assert (tmp_path / "list" / "x_dropped.txt").read_text().startswith(
        "a.png\tdegenerate landmarks")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audjax", "prepare", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_with_landmark_and_label_files(tmp_path):
    rng = np.random.default_rng(2)
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    faces = {}
    for rel in ["a.jpg", "sub/b.png", "sub/c.bmp", "d.png"]:
        image, landmarks = random_face(rng)
        cv2.imwrite(str(raw / rel), image)
        faces[rel] = select_49(landmarks)  # one layout per file; 68 points are tested above
    (raw / "notes.txt").write_text("not an image")
    with open(tmp_path / "land.txt", "w") as f:
        for rel in ["sub/b.png", "a.jpg", "sub/c.bmp"]:  # d.png has none: dropped
            f.write(rel + " " + " ".join(f"{v:.17g}" for v in faces[rel].ravel()) + "\n")
    (tmp_path / "au.txt").write_text("a.jpg 1 0 1\nsub/c.bmp 0 0 999\n")

    out = tmp_path / "data"
    args = ["--images", str(raw), "--landmarks", str(tmp_path / "land.txt"), "--labels",
            str(tmp_path / "au.txt"), "--out", str(out), "--name", "demo", "--format", "png",
            "--out_size", "80", "--workers", "2"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "4 images, 3 aligned (0 from an earlier run), 1 dropped" in result.stdout
    assert "dropped, no landmarks given: 1" in result.stdout
    lists = read_lists(out / "list" / "demo", data_root=out, check_images=True)
    # Sorted by source path; suffixes follow --format.
    assert lists.paths == ("images/demo/a.png", "images/demo/sub/b.png", "images/demo/sub/c.png")
    for i, rel in enumerate(["a.jpg", "sub/b.png", "sub/c.bmp"]):
        np.testing.assert_allclose(lists.landmarks[i], expected_landmarks(faces[rel], 80),
                                   atol=1e-4)
    np.testing.assert_array_equal(lists.au, [[1, 0, 1], [999, 999, 999], [0, 0, 999]])
    assert (out / "list" / "demo_dropped.txt").read_text() == "d.png\tno landmarks given\n"
    assert "prepare demo: 3/3" in result.stderr and "images/s" in result.stderr  # progress

    result = run_cli(*args)
    assert "3 aligned (3 from an earlier run)" in result.stdout, result.stderr


def test_cli_input_errors(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    cv2.imwrite(str(raw / "a.png"), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "land.txt").write_text("a.png " + " ".join(["1"] * 136) + "\nb.png 1 2\n")
    result = run_cli("--images", str(raw), "--landmarks", str(tmp_path / "land.txt"),
                     "--out", str(tmp_path / "out"), "--name", "x")
    assert result.returncode == 1
    assert f"{tmp_path / 'land.txt'}:2: expected 136 values, found 2" in result.stderr
    result = run_cli("--images", str(raw), "--out", str(tmp_path / "out"), "--name", "x")
    assert result.returncode != 0 and "--landmarks FILE, --annotate, or both" in result.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("a.png 1 0\nb.png 1 0\n", ":2: b.png: no such image under --images"),
    ("a.png 1 0\na.png 0 0\n", ":2: a.png is already on line 1"),
    ("a.png 1 3\n", ":1: value 2: label 3 is not one of"),
])
def test_label_file_errors(tmp_path, text, message):
    (tmp_path / "au.txt").write_text(text)
    with pytest.raises(ListError) as error:
        _read_keyed_table(tmp_path / "au.txt", {"a.png": None}, None, check_labels)
    assert str(error.value).startswith(f"{tmp_path / 'au.txt'}{message}")
