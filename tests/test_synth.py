"""SynthAU: determinism, list validity, labels, AU geometry and the two domains' difference."""

import json
import math

import cv2
import numpy as np
import pytest

from audjax.data import synth
from audjax.data.align import align_face
from audjax.data.lists import read_lists
from audjax.data.synth.scene import BOX_ENLARGE
from audjax.labels import UNKNOWN, au_weights
from audjax.landmarks import AU_NAMES, LEFT_EYE, LEFT_EYE_68, RIGHT_EYE, RIGHT_EYE_68, select_49

SIZE = 72  # aligned side for a 64 crop, as in quick CPU runs
SIZES = {split: 24 for split in synth.SPLITS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The same tiny SynthAU generated twice: in-process and with two worker processes."""
    root = tmp_path_factory.mktemp("synthau")
    for name, workers in (("one", 1), ("two", 2)):
        synth.generate(root / name, sizes=SIZES, image_size=SIZE, seed=3, workers=workers,
                       progress=False)
    return root / "one", root / "two"


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_generation_is_deterministic_across_worker_counts(dataset):
    one, two = dataset
    files = _files(one)
    assert files == _files(two)
    assert len([f for f in files if f.suffix == ".jpg"]) == sum(SIZES.values())
    for f in files:
        if f.name == "synthau.json":  # holds the wall time
            a, b = (json.loads((root / f).read_text()) for root in (one, two))
            assert a.pop("seconds") >= 0 and b.pop("seconds") >= 0
            assert a == b
        else:
            assert (one / f).read_bytes() == (two / f).read_bytes(), f


def test_lists_are_valid_and_labels_sane(dataset):
    root = dataset[0]
    for split in synth.SPLITS:
        lists = read_lists(root / "list" / split, data_root=root, check_images=True)
        assert len(lists) == SIZES[split]
        assert lists.au.shape == (SIZES[split], len(AU_NAMES))
        if split == "target_train":
            assert (lists.au == UNKNOWN).all()
        else:
            assert np.isin(lists.au, (0, 1)).all()
        # Every landmark inside the aligned image, the eyes level (alignment's rotation).
        assert (lists.landmarks >= 0).all() and (lists.landmarks <= SIZE - 1).all()
        left = lists.landmarks[:, LEFT_EYE].mean(1)
        right = lists.landmarks[:, RIGHT_EYE].mean(1)
        np.testing.assert_allclose(left[:, 1], right[:, 1], atol=1e-3)
        assert (right[:, 0] > left[:, 0]).all()
    weights = read_lists(root / "list" / "source_train").weights
    labels = read_lists(root / "list" / "source_train").au
    np.testing.assert_allclose(weights, au_weights(labels), rtol=1e-6)


def test_synthau_json_and_ensure_cache(dataset):
    root = dataset[0]
    info = synth.load_params(root)
    assert info["seed"] == 3 and info["image_size"] == SIZE and info["sizes"] == SIZES
    assert info["version"] == synth.VERSION
    stamp = (root / "synthau.json").stat().st_mtime_ns
    assert synth.ensure(root, sizes=SIZES, image_size=SIZE, seed=3) == info
    assert (root / "synthau.json").stat().st_mtime_ns == stamp  # kept, not regenerated


def test_label_rates_and_co_occurrence():
    for domain in ("source", "target"):
        labels = synth.occurrence(
            synth.sample_intensities(np.random.default_rng(0), domain, 4000))
        rates = labels.mean(0)
        np.testing.assert_allclose(rates, synth.AU_RATES[domain], atol=0.03)
        assert (rates > 0.07).all()
        phi = np.corrcoef(labels.T)
        assert phi[0, 1] > 0.4  # AU1 with AU2
        assert phi[3, 4] > 0.3  # AU6 with AU12
    source, target = synth.AU_RATES["source"], synth.AU_RATES["target"]
    assert (target[[0, 1, 2, 5]] < source[[0, 1, 2, 5]]).all()
    assert set(np.argsort(target)[-2:]) == {3, 4}  # AU6 and AU12 the most common in the wild
    intensity = synth.sample_intensities(np.random.default_rng(1), "source", 1000)
    assert intensity.min() >= 0 and intensity.max() <= 1


def _au(name, value=1.0):
    a = np.zeros(len(AU_NAMES))
    a[AU_NAMES.index(name)] = value
    return a


def test_generate_refuses_to_replace_other_folders(tmp_path):
    (tmp_path / "mine.txt").write_text("not SynthAU")
    with pytest.raises(FileExistsError):
        synth.generate(tmp_path, sizes=SIZES, image_size=SIZE)
    assert (tmp_path / "mine.txt").exists()


def test_mean_face_mirror_map():
    np.testing.assert_array_equal(synth.MIRROR_68[synth.MIRROR_68], np.arange(68))
    mirrored = synth.NEUTRAL_FACE[synth.MIRROR_68] * (-1, 1) + (2 * synth.MIDLINE_X, 0)
    np.testing.assert_allclose(mirrored, synth.NEUTRAL_FACE, atol=1e-12)


def test_au_geometry_moves_landmarks_as_facs_says():
    shape = synth.random_identity(np.random.default_rng(5)).shape
    neutral = synth.expression_landmarks(shape, np.zeros(len(AU_NAMES)))
    moved = {name: synth.expression_landmarks(shape, _au(name)) for name in AU_NAMES}
    d = {name: moved[name] - neutral for name in AU_NAMES}  # y grows downward
    # AU1: inner brow ends up, more than the outer ends; AU2: outer ends up, more than the inner.
    assert d["AU1"][[21, 22], 1].max() < -0.05
    assert (d["AU1"][[21, 22], 1] < d["AU1"][[17, 26], 1]).all()
    assert d["AU2"][[17, 26], 1].max() < -0.05
    assert (d["AU2"][[17, 26], 1] < d["AU2"][[21, 22], 1]).all()
    # AU4: brows down, inner ends closer together.
    assert (d["AU4"][17:27, 1] > 0).all()
    gap = lambda lm: lm[22, 0] - lm[21, 0]  # noqa: E731
    assert gap(moved["AU4"]) < gap(neutral) - 0.03
    # AU6: lower lids up.
    assert (d["AU6"][[40, 41, 46, 47], 1] < 0).all()
    # AU12: lip corners up and outward.
    assert (d["AU12"][[48, 54], 1] < -0.03).all()
    assert d["AU12"][48, 0] < -0.03 and d["AU12"][54, 0] > 0.03
    # AU17: chin and lower lip up.
    assert d["AU17"][8, 1] < -0.03 and d["AU17"][57, 1] < -0.03
    # Intensity scales the motion, and the closed mouth stays closed.
    half = synth.expression_landmarks(shape, _au("AU12", 0.5))
    np.testing.assert_allclose(half - neutral, d["AU12"] / 2, atol=1e-12)
    for lm in moved.values():
        np.testing.assert_allclose(lm[[61, 62, 63], 1], lm[[67, 66, 65], 1], atol=1e-9)


def test_generate_writes_what_render_draws(dataset):
    """A written image (byte for byte), its landmarks and its labels are those of `render`,
    aligned."""
    root = dataset[0]
    for split in ("source_val", "target_test"):
        lists = read_lists(root / "list" / split)
        for i in range(3):
            sample = synth.render(3, split, i, SIZE)
            assert sample.image.shape == (synth.raw_size(SIZE),) * 2 + (3,)
            np.testing.assert_array_equal(sample.labels, synth.occurrence(sample.intensity))
            np.testing.assert_array_equal(lists.au[i], sample.labels)
            aligned, landmarks = align_face(sample.image, sample.landmarks, SIZE, BOX_ENLARGE)
            np.testing.assert_allclose(lists.landmarks[i], select_49(landmarks), atol=1e-3)
            _, encoded = cv2.imencode(".jpg", aligned)
            assert encoded.tobytes() == (root / lists.paths[i]).read_bytes()
    again = synth.render(3, "target_test", 2, SIZE)
    np.testing.assert_array_equal(sample.image, again.image)


def _roll_degrees(landmarks68):
    left, right = landmarks68[LEFT_EYE_68].mean(0), landmarks68[RIGHT_EYE_68].mean(0)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def test_target_domain_differs_from_source():
    stats = {}
    for domain in ("source", "target"):
        rolls, corner_std = [], []
        for i in range(24):
            sample = synth.render(0, f"{domain}_test", i, SIZE)
            rolls.append(_roll_degrees(sample.landmarks))
            # The image corners are background: plain in the lab, cluttered in the wild.
            corners = [sample.image[:8, :8], sample.image[:8, -8:]]
            corner_std.append(np.mean([c.reshape(-1, 3).std(0).mean() for c in corners]))
        stats[domain] = np.abs(rolls), np.array(corner_std)
    assert stats["source"][0].max() < 6
    assert stats["target"][0].mean() > 8
    assert np.median(stats["target"][1]) > 3 * np.median(stats["source"][1])


def test_appearance_shift_keeps_the_pose_and_the_camera_shift():
    """target_shift="appearance": target faces as near-frontal as the source's, the background
    and camera still those of the wild; "full" stays what it was (same stream, same image)."""
    rolls, corner_std = [], []
    for i in range(24):
        sample = synth.render(0, "target_test", i, SIZE, shift="appearance")
        rolls.append(abs(_roll_degrees(sample.landmarks)))
        corners = [sample.image[:8, :8], sample.image[:8, -8:]]
        corner_std.append(np.mean([c.reshape(-1, 3).std(0).mean() for c in corners]))
    assert max(rolls) < 6
    source = [synth.render(0, "source_test", i, SIZE).image[:8, :8].reshape(-1, 3).std(0).mean()
              for i in range(24)]
    assert np.median(corner_std) > 3 * np.median(source)
    np.testing.assert_array_equal(synth.render(0, "target_test", 3, SIZE).image,
                                  synth.render(0, "target_test", 3, SIZE, shift="full").image)
    with pytest.raises(ValueError, match="target_shift"):
        synth.ensure("/nonexistent/never", image_size=SIZE, target_shift="pose")
