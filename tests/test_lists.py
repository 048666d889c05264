"""ADLD list files (audjax.data.lists): round trip, and every error naming its file and line."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from audjax.data.lists import ListError, read_lists, write_lists, write_weights

REPO = Path(__file__).resolve().parents[1]


def write_text(path, lines):
    Path(path).write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def good(tmp_path):
    """A valid 3-sample prefix with 2 landmarks and 3 AUs, written by hand; 128x128 images
    that decode and hold their landmarks."""
    prefix = tmp_path / "list" / "demo"
    prefix.parent.mkdir()
    paths = ["img/a.png", "img/b.png", "img/c.png"]
    (tmp_path / "img").mkdir()
    for p in paths:
        cv2.imwrite(str(tmp_path / p), np.full((128, 128, 3), 7, np.uint8))
    write_text(f"{prefix}_path.txt", paths)
    write_text(f"{prefix}_land.txt", ["1 2 3 4", "5.5 6.25 7 8", "0 -0 1e2 3"])
    write_text(f"{prefix}_AUoccur.txt", ["1 0 999", "0 0 0", "1 1 1"])
    return prefix


def test_reads_a_hand_written_list(good, tmp_path):
    lists = read_lists(good, num_landmarks=2, data_root=tmp_path, check_images=True)
    assert lists.paths == ("img/a.png", "img/b.png", "img/c.png") and len(lists) == 3
    assert lists.landmarks.dtype == np.float32 and lists.au.dtype == np.int32
    np.testing.assert_array_equal(lists.landmarks[1], [[5.5, 6.25], [7, 8]])
    np.testing.assert_array_equal(lists.landmarks[2], [[0, 0], [100, 3]])
    np.testing.assert_array_equal(lists.au, [[1, 0, 999], [0, 0, 0], [1, 1, 1]])
    assert lists.weights is None and lists.prefix == str(good)


def test_write_read_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    # Float32 values of every magnitude an aligned landmark can take, including awkward ones.
    landmarks = (rng.normal(size=(n, 49, 2)) * 10.0 ** rng.integers(-3, 4, (n, 49, 2))).astype(
        np.float32)
    landmarks[0, 0] = [np.float32(0.1), np.nextafter(np.float32(99.5), np.float32(100))]
    au = rng.choice([0, 1, 999], size=(n, 6))
    weights = rng.random(6).astype(np.float32)
    paths = [f"sub dir/{i}.png" for i in range(n)]  # spaces inside a path are fine
    prefix = tmp_path / "out" / "split"
    write_lists(prefix, paths, landmarks, au, weights)
    lists = read_lists(prefix)
    assert lists.paths == tuple(paths)
    np.testing.assert_array_equal(lists.landmarks, landmarks)  # bit for bit
    np.testing.assert_array_equal(lists.au, au)
    np.testing.assert_array_equal(lists.weights, weights)
    # No temporary file is left behind, and the files get the usual permissions.
    assert sorted(os.listdir(prefix.parent)) == [
        "split_AUoccur.txt", "split_land.txt", "split_path.txt", "split_weight.txt"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(f"{prefix}_land.txt").st_mode & 0o777 == 0o666 & ~umask
    # Rewriting without weights removes the now stale weight file.
    write_lists(prefix, paths, landmarks, au)
    assert read_lists(prefix).weights is None


def test_writer_rejects_what_the_reader_would(tmp_path):
    args = (["a.png"], np.zeros((1, 49, 2)), np.zeros((1, 6)))
    with pytest.raises(ValueError, match="empty"):
        write_lists(tmp_path / "p", [], np.zeros((0, 49, 2)), np.zeros((0, 6)))
    with pytest.raises(ValueError, match="labels"):
        write_lists(tmp_path / "p", *args[:2], np.full((1, 6), 2))
    with pytest.raises(ValueError, match="finite"):
        write_lists(tmp_path / "p", args[0], np.full((1, 49, 2), np.nan), args[2])
    with pytest.raises(ValueError, match="one line"):
        write_lists(tmp_path / "p", ["a\nb.png"], *args[1:])
    with pytest.raises(ValueError, match=r"\(1, L, 2\)"):
        write_lists(tmp_path / "p", args[0], np.zeros((2, 49, 2)), args[2])
    assert not any(tmp_path.iterdir())


def test_weights_are_read(good):
    write_weights(good, [0.5, 1, 1.5])
    np.testing.assert_array_equal(read_lists(good, num_landmarks=2).weights, [0.5, 1, 1.5])


# Each case: (file suffix, its new lines, extra read_lists kwargs, the message after "FILE:").
ERRORS = [
    ("land", ["1 2 3 4", "5 6 7", "1 2 3 4"], {}, ":2: expected 4 values, found 3"),
    ("land", ["1 2 3 4", "1 2 3 4", "1 2 x 4"], {}, ":3: value 3: 'x' is not a number"),
    ("land", ["1 2 3 4", "1 2 nan 4", "1 2 3 4"], {}, ":2: value 3: nan is not finite"),
    ("land", ["1 2 3 4", "1 2 3 4", "1 2 3 1e39"], {}, ":3: value 4: inf is not finite"),
    ("land", ["1 2 3 4", "", "1 2 3 4"], {}, ":2: expected 4 values, found 0"),
    ("AUoccur", ["1 0 999", "0 2 0", "1 1 1"], {}, ":2: value 2: label 2 is not one of 0, 1, 999"),
    ("AUoccur", ["1 0 999", "0 0.5 0", "1 1 1"], {}, ":2: value 2: label 0.5 is not one of"),
    ("AUoccur", ["1 0 999", "0 0", "1 1 1"], {}, ":2: expected 3 values, found 2"),
    ("AUoccur", ["1 0 999", "0 0 0", "1 1 1"], {"num_aus": 4}, ":1: expected 4 values, found 3"),
    ("path", ["img/a.png", "  ", "img/c.png"], {}, ":2: empty image path"),
    ("weight", ["1 2 3", "4 5 6"], {}, ":2: expected the 3 weights on one line"),
    ("weight", ["1 2"], {}, ":1: expected 3 values, found 2"),
]


@pytest.mark.parametrize(("kind", "lines", "kwargs", "message"), ERRORS)
def test_errors_name_file_and_line(good, kind, lines, kwargs, message):
    file = f"{good}_{kind}.txt"
    write_text(file, lines)
    with pytest.raises(ListError) as error:
        read_lists(good, num_landmarks=2, **kwargs)
    assert str(error.value).startswith(file + message), str(error.value)


def test_mismatched_line_counts_name_both_files(good):
    write_text(f"{good}_AUoccur.txt", ["1 0 999", "0 0 0"])
    with pytest.raises(ListError, match=r"AUoccur.txt: 2 lines, but .*_path.txt has 3"):
        read_lists(good, num_landmarks=2)


def test_empty_and_missing_files(good):
    Path(f"{good}_land.txt").write_text("")
    with pytest.raises(ListError, match=r"_land.txt: empty list$"):
        read_lists(good, num_landmarks=2)
    os.remove(f"{good}_land.txt")
    with pytest.raises(ListError, match=r"_land.txt: file not found$"):
        read_lists(good, num_landmarks=2)
    Path(f"{good}_path.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(ListError, match=r"_path.txt: not UTF-8 text"):
        read_lists(good, num_landmarks=2)


def test_missing_and_undecodable_images(good, tmp_path):
    read_lists(good, num_landmarks=2)  # images are only looked at on request
    (tmp_path / "img" / "b.png").write_bytes(b"not a png")
    with pytest.raises(ListError, match=r"_path.txt:2: .*img/b.png: cannot decode image$"):
        read_lists(good, num_landmarks=2, data_root=tmp_path, check_images=True)
    os.remove(tmp_path / "img" / "c.png")
    (tmp_path / "img" / "b.png").unlink()
    with pytest.raises(ListError, match=r"_path.txt:2: image not found: .*img/b.png$"):
        read_lists(good, num_landmarks=2, data_root=tmp_path, check_images=True)


def test_images_must_allow_the_crop_and_hold_their_landmarks(good, tmp_path):
    from audjax.data.lists import check_image_files

    lists = read_lists(good, num_landmarks=2)
    check_image_files(lists, tmp_path, crop=128)  # 128x128 images: the largest crop they allow
    with pytest.raises(ListError, match=r"_path.txt:1: .*img/a.png: the 128x128 image is "
                                        r"smaller than the 144x144 crop$"):
        check_image_files(lists, tmp_path, crop=144)
    # Line 3's second landmark moves far off the image (x = 200 > 128 + 128 / 4); one just
    # off the edge is fine (x = -20); NaN is refused on reading.
    write_text(f"{good}_land.txt", ["1 2 3 4", "-20 6.25 7 8", "0 0 200 3"])
    with pytest.raises(ListError, match=r"_path.txt:3: .*img/c.png: landmark 2 \(200, 3\) lies "
                                        r"far outside the 128x128 image: not its pixels\?$"):
        read_lists(good, num_landmarks=2, data_root=tmp_path, check_images=True)
    # decode="first" decodes line 1 only (the trainer's cheap check) but finds every missing file.
    check_image_files(read_lists(good, num_landmarks=2), tmp_path, decode="first")
    os.remove(tmp_path / "img" / "c.png")
    with pytest.raises(ListError, match=r"_path.txt:3: image not found"):
        check_image_files(read_lists(good, num_landmarks=2), tmp_path, decode="first")


def test_long_list_reports_the_right_line(tmp_path):
    # The fast parser does the work; the slow scan only finds the culprit.
    n = 5_000
    rng = np.random.default_rng(1)
    prefix = tmp_path / "big"
    write_lists(prefix, [f"{i}.png" for i in range(n)], rng.random((n, 49, 2)) * 200,
                rng.choice([0, 1], (n, 6)))
    lines = Path(f"{prefix}_land.txt").read_text().splitlines()
    lines[4_321] = lines[4_321].replace(" ", " ,", 1)
    write_text(f"{prefix}_land.txt", lines)
    with pytest.raises(ListError, match=r"_land.txt:4322: value 2: ',.*' is not a number"):
        read_lists(prefix)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "audjax", "check", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_check(good, tmp_path):
    result = run_cli(str(good), "--data_root", str(tmp_path), "--num_landmarks", "2")
    assert result.returncode == 0, result.stderr
    assert "3 samples, 2 landmarks, 3 AUs" in result.stdout
    assert "AU#1: 3 labelled, positive rate 0.667" in result.stdout
    assert "AU#3: 2 labelled, positive rate 0.500" in result.stdout
    assert "all 3 images decode" in result.stdout
    os.remove(tmp_path / "img" / "c.png")
    result = run_cli(str(good), "--data_root", str(tmp_path), "--num_landmarks", "2")
    assert result.returncode == 2
    assert f"{good}_path.txt:3: image not found" in result.stderr
