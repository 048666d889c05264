"""audjax.Detector and `audjax predict`: faces found, aligned and scored as in
training and evaluation, landmarks mapped back into the photo, videos and bad files.

Checkpoints are freshly initialised (conftest's `tiny_runs`). An untrained head puts landmarks
anywhere, so the landmark test plants a head that outputs the astronaut's true aligned landmarks
and checks that the detector maps them back onto dlib's points in the photo.
"""

import csv
import os
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from audjax import checkpoints, losses
from audjax.cli import predict
from audjax.config import Config
from audjax.data import annotate, pipeline
from audjax.data.align import align_face
from audjax.data.lists import read_lists, write_lists
from audjax.evaluate import Evaluator
from audjax.inference.detector import Detector, aligned_size, au_column
from audjax.inference.paths import attention_landmarks
from audjax.landmarks import select_49

AU_COLUMNS = ("AU01", "AU02", "AU04", "AU06", "AU12", "AU17")


def dlib_ready():
    try:
        import dlib  # noqa: F401

        annotate.shape_predictor_path()
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


needs_dlib = pytest.mark.skipif(not dlib_ready(), reason="needs the annotate extra and skimage")


@pytest.fixture(scope="module")
def detector(tiny_runs):
    return Detector.from_run(tiny_runs["joint"], batch_size=4)


@pytest.fixture(scope="module")
def astronaut_bgr():
    data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def test_names_and_aligned_size():
    assert [au_column(a) for a in ("AU1", "AU2", "AU4", "AU6", "AU12", "AU17")] == list(
        AU_COLUMNS)
    assert au_column("au5") == "AU05" and au_column("happy") == "happy"
    assert aligned_size(Config(aligned_size=240)) == 240
    # Runs from before the size was recorded: SynthAU's size, or prepare's 200 for own data.
    assert aligned_size(Config(synth_image_size=72)) == 72
    assert aligned_size(Config(data_root="/data", synth_image_size=72)) == 200


def test_attention_landmarks_invert_the_training_targets():
    """One-hot maps at the cells training aims at (`losses.landmark_targets`, AU-centre shift
    included) give back the landmarks. Points lie on the 4-pixel grid and the ruler is 6 cells,
    so every shifted target is a whole cell and the inversion must be exact."""
    crop, s = 64, 16
    rng = np.random.default_rng(0)
    cells = np.stack([rng.integers(0, s, (2, 49)), rng.integers(3, 10, (2, 49))], -1)
    cells[:, 22, 0], cells[:, 25, 0] = 4, 10
    landmarks = (4 * cells).astype(np.float32)
    idx = np.asarray(losses.landmark_targets(landmarks, crop, s, True))
    onehot = np.zeros((2, s * s, 49), np.float32)
    onehot[np.arange(2)[:, None], idx, np.arange(49)[None]] = 1.0
    got = attention_landmarks(jnp.asarray(onehot.reshape(2, s, s, 49)), crop, True)
    np.testing.assert_allclose(got, landmarks, atol=1e-4)
    # A map split evenly between two cells points half way.
    two = np.zeros((1, s, s, 49), np.float32)
    two[0, 5, 2], two[0, 5, 4] = 0.5, 0.5
    np.testing.assert_allclose(attention_landmarks(jnp.asarray(two), crop, False)[0, 0],
                               [12.0, 20.0], atol=1e-5)


def test_restores_only_what_prediction_needs(detector, tiny_runs):
    assert set(detector.params) == {"E_f", "E_l", "E_au", "G_b", "G_st", "landmark"}
    assert detector.aligned_size == 80 and detector.au_columns == AU_COLUMNS
    step_dir = checkpoints.resolve_checkpoint(tiny_runs["joint"])
    saved = ocp.StandardCheckpointer().restore((step_dir / "state").absolute())
    for name in detector.params:
        for a, b in zip(jax.tree.leaves(detector.params[name]),
                        jax.tree.leaves(saved["params"][name]), strict=True):
            np.testing.assert_array_equal(a, b)


def write_aligned_set(folder, n=5, size=80):
    """Smooth random `size`-square images and their ADLD lists (landmarks random)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), cv2.resize(coarse, (size, size)))
        paths.append(f"{i}.png")
    write_lists(folder / "list", paths, rng.uniform(20, 60, (n, 49, 2)),
                rng.integers(0, 2, (n, 6)))
    return read_lists(folder / "list", data_root=folder)


@pytest.mark.parametrize("path", ["target", "source"])
def test_aligned_inputs_match_evaluation(detector, tiny_runs, tmp_path, path):
    lists = write_aligned_set(tmp_path)
    evaluator = Evaluator(detector.config.replace(eval_batch_size=2), detector.nets,
                          detector.networks)
    want = evaluator.predict(detector.params, detector.batch_stats, lists, tmp_path, path)
    det = (detector if path == "target" else
           Detector.from_run(tiny_runs["joint"], batch_size=4, path="source"))
    rows = det.detect([str(tmp_path / p) for p in lists.paths], aligned=True)
    assert [r["success"] for r in rows] == [1] * 5
    probs = np.array([[r[c] for c in AU_COLUMNS] for r in rows])
    np.testing.assert_allclose(probs, want["probs"], atol=1e-5)
    points = np.array([[[r[f"x_{i}"], r[f"y_{i}"]] for i in range(49)] for r in rows])
    offset = pipeline.centre_offset(80, 64)  # crop pixels -> aligned-image pixels
    np.testing.assert_allclose(points, want["landmarks"] + offset, atol=1e-3)
    assert rows[0]["face_width"] == 80 and rows[0]["face_x"] == 0


@needs_dlib
def test_astronaut_one_face_landmarks_back_on_the_photo(detector, astronaut_bgr):
    rows = detector.detect([astronaut_bgr[..., ::-1]])  # RGB, as the API takes arrays
    # dlib's weak second detection (the mission patch, score 0.12) is not a face at 0.2.
    assert len(rows) == 1
    row = rows[0]
    assert row["input"] == "<array 0>" and row["success"] == 1 and row["face_id"] == 0
    assert (row["face_x"], row["face_y"], row["face_width"], row["face_height"]) == (
        175, 76, 91, 91)
    assert list(row) == detector.columns
    for c in AU_COLUMNS:
        assert 0.0 <= row[c] <= 1.0 and row[c + "_c"] == int(row[c] >= 0.5)

    # Plant a head that outputs the astronaut's aligned landmarks (crop pixels): the detector
    # must map them back onto dlib's own 49 points in the photo.
    face = annotate.detect_faces(astronaut_bgr)[0]
    _, aligned68 = align_face(astronaut_bgr, face.landmarks, detector.aligned_size)
    crop_points = select_49(aligned68) - pipeline.centre_offset(detector.aligned_size, 64)
    head = jax.tree.map(np.asarray, detector.params["landmark"])
    head["fc1"]["kernel"] = np.zeros_like(head["fc1"]["kernel"])
    head["fc1"]["bias"] = (2 * crop_points / 64 - 1).reshape(-1).astype(np.float32)
    planted = Detector(detector.config, "joint", {**detector.params, "landmark": head},
                       detector.batch_stats, batch_size=2)
    row = planted.detect(astronaut_bgr[..., ::-1].copy())[0]
    points = np.array([[row[f"x_{i}"], row[f"y_{i}"]] for i in range(49)])
    np.testing.assert_allclose(points, select_49(face.landmarks), atol=0.02)
    x0, y0 = row["face_x"], row["face_y"]
    x1, y1 = x0 + row["face_width"], y0 + row["face_height"]
    assert ((points >= [x0 - 15, y0 - 15]) & (points <= [x1 + 15, y1 + 15])).all()


def test_columns_follow_what_the_model_predicts(tiny_runs, tmp_path):
    write_aligned_set(tmp_path, n=1)
    image = str(tmp_path / "0.png")
    phase1 = Detector.from_run(tiny_runs["pretrain"], batch_size=2)
    assert phase1.networks == ("landmark_net",) and phase1.au_columns == ()
    row = phase1.detect(image, aligned=True)[0]
    assert "AU01" not in row and np.isfinite(row["x_48"])
    source_only = Detector.from_run(tiny_runs["source_only"], batch_size=2)
    row = source_only.detect(image, aligned=True)[0]
    assert "x_0" not in row and 0 <= row["AU12"] <= 1
    model_a = Detector.from_run(tiny_runs["A"], batch_size=2)  # landmarks from E_l
    assert "landmark" not in model_a.networks and model_a.num_landmarks == 49
    row = model_a.detect(image, aligned=True)[0]
    assert 8 <= row["x_0"] <= 8 + 64 and 8 <= row["y_0"] <= 8 + 64  # inside the crop


def test_missing_dlib_names_the_extra(detector, monkeypatch):
    annotate._dlib_models.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(ImportError, match=r"pip install 'audjax\[annotate\]'"):
        detector.detect(np.zeros((50, 50, 3), np.uint8))
    annotate._dlib_models.cache_clear()


def make_inputs(folder, astronaut_bgr):
    """A folder with a face, a faceless image, a corrupt JPEG and a 3-frame video (face,
    blank, face) in a sub-folder."""
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "astronaut.png"), astronaut_bgr)
    cv2.imwrite(str(folder / "blank.png"), np.full((120, 160, 3), 90, np.uint8))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    video = cv2.VideoWriter(str(folder / "sub" / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                            10, astronaut_bgr.shape[1::-1])
    assert video.isOpened()
    for frame in (astronaut_bgr, np.full_like(astronaut_bgr, 60), astronaut_bgr):
        video.write(frame)
    video.release()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_dlib
def test_predict_cli_folder_video_and_bad_files(detector, tiny_runs, tmp_path, astronaut_bgr,
                                                capsys, monkeypatch):
    make_inputs(tmp_path / "in", astronaut_bgr)
    monkeypatch.chdir(tmp_path)  # relative paths everywhere
    run = os.path.relpath(tiny_runs["joint"], tmp_path)
    rc = predict.main(["in", "missing.png", "--run", run, "--out", "out/results.csv",
                       "--batch_size", "2", "--overlay", "overlays", "--quiet"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "in/corrupt.jpg: cannot decode image" in err and "missing.png: no such file" in err
    assert "5 files, 2 unreadable (skipped), 5 images/frames, 3 faces, 5 rows" in out
    rows = read_csv(tmp_path / "out" / "results.csv")
    got = [(r["input"], r["frame"], r["timestamp"], r["success"]) for r in rows]
    assert got == [("in/astronaut.png", "0", "", "1"), ("in/blank.png", "0", "", "0"),
                   ("in/sub/clip.mp4", "0", "0", "1"), ("in/sub/clip.mp4", "1", "0.1", "0"),
                   ("in/sub/clip.mp4", "2", "0.2", "1")]
    assert list(rows[0]) == detector.columns
    assert rows[1]["AU01"] == "" and rows[1]["x_0"] == ""  # no face: empty values
    assert 0 <= float(rows[0]["AU12"]) <= 1 and rows[0]["AU12_c"] in ("0", "1")
    for name in ("astronaut.jpg", "blank.jpg", "sub/clip/000000.jpg", "sub/clip/000002.jpg"):
        assert cv2.imread(str(tmp_path / "overlays" / name)) is not None, name
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left

    # Every second frame, overlays as one video.
    rc = predict.main(["in/sub/clip.mp4", "--run", run, "--out", "clip.csv", "--every", "2",
                       "--overlay", "ov", "--overlay_video", "--quiet"])
    assert rc == 0
    assert [r["frame"] for r in read_csv(tmp_path / "clip.csv")] == ["0", "2"]
    capture = cv2.VideoCapture(str(tmp_path / "ov" / "clip.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 2

    # Not a run: one line, exit status 2.
    assert predict.main(["in", "--run", "in", "--out", "x.csv"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_detect_api_errors_and_data_frame(detector, tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    with pytest.raises(ValueError, match=r"corrupt\.jpg: cannot decode image"):
        detector.detect(tmp_path / "corrupt.jpg")
    write_aligned_set(tmp_path, n=1)
    pandas = pytest.importorskip("pandas")
    with pytest.warns(UserWarning, match=r"corrupt\.jpg"):
        table = detector.detect([tmp_path / "corrupt.jpg", tmp_path / "0.png"], aligned=True,
                                as_frame=True, on_error="warn")
    assert isinstance(table, pandas.DataFrame) and list(table.columns) == detector.columns
    assert table["success"].tolist() == [1] and table["input"][0].endswith("0.png")
    with pytest.raises(ValueError, match=r"<array 0>: an aligned input must be at least 64x64"):
        detector.detect(np.zeros((40, 80, 3), np.uint8), aligned=True)


def test_device_by_name(tiny_runs):
    det = Detector.from_run(tiny_runs["pretrain"], device="cpu")
    assert det.device.platform == "cpu"
    assert all(x.devices() == {det.device} for x in jax.tree.leaves(det.params))
    with pytest.raises(ValueError, match="device 'nosuchplatform' is not available"):
        Detector.from_run(tiny_runs["pretrain"], device="nosuchplatform")


@needs_dlib
def test_workers_keep_input_order_and_videos_keep_face_ids(detector, astronaut_bgr, tmp_path):
    """Two worker processes give exactly the rows of one in-process front end, in input order;
    in a video with tracking the face keeps face_id 0, and with track=False the rows come from
    detection in every frame (same faces, same ids here: one face)."""
    video = cv2.VideoWriter(str(tmp_path / "pan.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10,
                            (320, 240))
    for t in range(6):
        video.write(cv2.warpAffine(astronaut_bgr, np.float32([[1, 0, -100 + 4 * t],
                                                              [0, 1, -40]]), (320, 240)))
    video.release()
    cv2.imwrite(str(tmp_path / "photo.png"), astronaut_bgr)
    inputs = [tmp_path / "pan.mp4", tmp_path / "photo.png", astronaut_bgr[..., ::-1].copy()]
    one = detector.detect(inputs)
    parallel = Detector(detector.config, "joint", detector.params, detector.batch_stats,
                        batch_size=4, workers=2)
    two = parallel.detect(inputs)
    assert [(r["input"], r["frame"], r["face_id"]) for r in two] == [
        (str(tmp_path / "pan.mp4"), t, 0) for t in range(6)] + [
        (str(tmp_path / "photo.png"), 0, 0), ("<array 2>", 0, 0)]
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[c] for c in AU_COLUMNS], [b[c] for c in AU_COLUMNS])
    untracked = Detector(detector.config, "joint", detector.params, detector.batch_stats,
                         batch_size=4, track=False).detect(inputs[0])
    assert [r["success"] for r in untracked] == [1] * 6
    assert [r["face_id"] for r in untracked] == [0] * 6
