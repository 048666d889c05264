"""The grain pipelines: crops, flips, normalisation, shuffling, resume, eval padding.

Every check recomputes the expected result from the source images written here (noise, so that
a crop offset is identified by its pixels alone, with one uniquely coloured pixel per landmark),
not with the pipeline's own helpers.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from audjax.cli import bench as bench_cli
from audjax.data.images import read_sample
from audjax.data.lists import Lists
from audjax.data.pipeline import eval_batches, train_iter
from audjax.landmarks import FLIP_PERM, LEFT_EYE, RIGHT_EYE
from audjax.seeds import stream_seed

SIZE, CROP, K, L = 72, 64, 6, 49

# Landmark j is drawn as one pixel of colour COLOURS[j] (RGB); the first channel alone is unique.
COLOURS = np.stack([np.arange(L) * 5, 255 - np.arange(L) * 5, np.arange(L) * 37 % 256], 1)


def _template():
    """49 distinct integer points: the eye on the image's left (19-24) at x 12..22, the other eye
    at x 48..58, everything else on rows below. Shifted by at most 2 pixels per image, every
    point stays inside any 64-pixel crop of a 72-pixel image (offsets 0..8)."""
    points = np.zeros((L, 2), np.int64)
    points[LEFT_EYE] = np.stack([12 + 2 * np.arange(6), np.full(6, 20)], 1)
    points[RIGHT_EYE] = np.stack([48 + 2 * np.arange(6), np.full(6, 20)], 1)
    others = [j for j in range(L) if j not in LEFT_EYE and j not in RIGHT_EYE]
    for i, j in enumerate(others):
        points[j] = (10 + 4 * (i % 13), 30 + 4 * (i // 13))
    return points


def _au_code(index):
    """Sample i's AU labels are the bits of i, so a batch row says which sample it holds."""
    return (index >> np.arange(K)) & 1


def _sample_ids(batch):
    return (batch["au"] << np.arange(K)).sum(1).tolist()


def _write(tmp_path, n, shapes=((SIZE, SIZE),), seed=0):
    """n noise images (PNG, lossless) with landmark markers; returns (Lists, RGB images).
    Image i has shape shapes[i % len(shapes)] (height, width)."""
    rng = np.random.default_rng(seed)
    paths, landmarks, images = [], [], []
    for i in range(n):
        height, width = shapes[i % len(shapes)]
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        points = _template() + rng.integers(-2, 3, 2)
        image[points[:, 1], points[:, 0]] = COLOURS
        paths.append(f"img/{i:03d}.png")
        (tmp_path / "img").mkdir(exist_ok=True)
        assert cv2.imwrite(str(tmp_path / paths[-1]), image[..., ::-1])  # cv2 writes BGR
        landmarks.append(points)
        images.append(image)
    lists = Lists(paths=tuple(paths), landmarks=np.asarray(landmarks, np.float32),
                  au=np.stack([_au_code(i) for i in range(n)]).astype(np.int32), weights=None,
                  prefix=str(tmp_path / "list"))
    return lists, images


def _scaled(pixels):
    """ADLD's ToTensor + Normalize(0.5, 0.5), in float32."""
    return (pixels.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)


def _find_crop(image, source, crop):
    """All (y, x, flipped) whose scaled crop of `source` equals `image` exactly."""
    height, width = source.shape[:2]
    found = []
    for y in range(height - crop + 1):
        for x in range(width - crop + 1):
            window = _scaled(source[y:y + crop, x:x + crop])
            for flipped in (False, True):
                if np.array_equal(window[:, ::-1] if flipped else window, image):
                    found.append((y, x, flipped))
    return found


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------------------------------------


def test_stream_seed_is_stable_and_separates_streams():
    # Golden values: the derived seeds must not change between processes or versions, or a
    # resumed run would read different data (Python's str hash is randomised per process).
    assert stream_seed(0, "source") == 955584630
    assert stream_seed(0, "target") == 1829320275
    assert stream_seed(1, "source") == 2919332414
    seeds = {stream_seed(s, n) for s in range(20) for n in ("source", "target", "val")}
    assert len(seeds) == 60
    assert all(0 <= s < 2**32 for s in seeds)


def test_train_batch_shapes_dtypes_ranges(tmp_path):
    lists, _ = _write(tmp_path, 6)
    batch = next(train_iter(lists, tmp_path, crop=CROP, batch_size=4, seed=0, workers=0))
    assert batch.keys() == {"image", "landmarks", "au", "bad", "bad_index"}
    assert batch["bad"].tolist() == [0] * 4 and batch["bad_index"].tolist() == [-1] * 4
    assert batch["image"].shape == (4, CROP, CROP, 3) and batch["image"].dtype == np.float32
    assert batch["landmarks"].shape == (4, L, 2) and batch["landmarks"].dtype == np.float32
    assert batch["au"].shape == (4, K) and batch["au"].dtype == np.int32
    assert -1 <= batch["image"].min() < -0.99 and 0.99 < batch["image"].max() <= 1


def test_crop_and_flip_move_landmarks_with_the_pixels(tmp_path):
    lists, images = _write(tmp_path, 8)
    it = train_iter(lists, tmp_path, crop=CROP, batch_size=4, seed=3, workers=0)
    flips = []
    for batch in _take(it, 6):
        for image, landmarks, i in zip(batch["image"], batch["landmarks"], _sample_ids(batch),
                                       strict=True):
            # The batch image is exactly one scaled crop (maybe mirrored) of source i.
            (y, x, flipped), = _find_crop(image, images[i], CROP)
            flips.append(flipped)
            source = lists.landmarks[i]
            order = FLIP_PERM if flipped else np.arange(L)
            expected_x = source[order, 0] - x
            expected = np.stack([CROP - 1 - expected_x if flipped else expected_x,
                                 source[order, 1] - y], 1)
            np.testing.assert_array_equal(landmarks, expected)
            # Each landmark sits on the marker of the source point it was renumbered from.
            pixels = image[landmarks[:, 1].astype(int), landmarks[:, 0].astype(int)]
            np.testing.assert_array_equal(pixels, _scaled(COLOURS[order]))
            # Point 19 is the eye on the image's left whether or not the face was mirrored.
            assert landmarks[LEFT_EYE, 0].max() < CROP / 2 < landmarks[RIGHT_EYE, 0].min()
    assert 0 < sum(flips) < len(flips)


def test_crop_offsets_and_flips_are_uniform(tmp_path):
    # One 12x10 image, crop 8: 5 x 3 offsets x 2 flips = 30 outcomes, each 1/30 likely.
    source = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "small.png"), source[..., ::-1])
    lists = Lists(("small.png",), np.zeros((1, L, 2), np.float32), np.zeros((1, K), np.int32),
                  None, "p")
    it = train_iter(lists, tmp_path, crop=8, batch_size=50, seed=0, workers=0)
    counts = {}
    for batch in _take(it, 12):
        for image in batch["image"]:
            (outcome,) = _find_crop(image, source, 8)
            counts[outcome] = counts.get(outcome, 0) + 1
    assert set(counts) == {(y, x, f) for y in range(5) for x in range(3) for f in (False, True)}
    # 600 draws, 20 expected per outcome; 5 binomial standard deviations either side.
    assert all(2 <= c <= 42 for c in counts.values()), counts
    assert 250 <= sum(c for (_, _, f), c in counts.items() if f) <= 350


def test_same_seed_same_batches_other_seed_differs(tmp_path):
    lists, _ = _write(tmp_path, 8)

    def make(seed):
        return _take(train_iter(lists, tmp_path, crop=CROP, batch_size=4, seed=seed, workers=0), 4)

    first, again, other = make(7), make(7), make(8)
    _assert_same(first, again)
    assert any(not np.array_equal(a["image"], b["image"])
               for a, b in zip(first, other, strict=True))


def test_every_epoch_is_a_new_permutation(tmp_path):
    lists, _ = _write(tmp_path, 12)
    it = train_iter(lists, tmp_path, crop=CROP, batch_size=4, seed=1, workers=0)
    epochs = [sum((_sample_ids(b) for b in _take(it, 3)), []) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(12))
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]


def test_resume_mid_epoch_and_across_the_epoch_boundary(tmp_path):
    lists, _ = _write(tmp_path, 12)  # 3 batches an epoch

    def make():
        return train_iter(lists, tmp_path, crop=CROP, batch_size=4, seed=5, workers=0, threads=2)

    it = make()
    states, reference = [], []
    for _ in range(8):
        # JSON round trip: that is how orbax's grain handler stores the state.
        states.append(json.loads(json.dumps(it.get_state())))
        reference.append(next(it))
    for start in (1, 2, 4):  # mid-epoch; the next batches cross into epoch 2; mid-epoch 2
        resumed = make()
        resumed.set_state(states[start])
        _assert_same(_take(resumed, 8 - start), reference[start:])


def test_workers_give_the_same_batches_and_resume(tmp_path):
    lists, _ = _write(tmp_path, 12)

    def make(workers):
        return train_iter(lists, tmp_path, crop=CROP, batch_size=4, seed=2, workers=workers)

    reference = _take(make(0), 5)
    it = make(2)
    _assert_same(_take(it, 2), reference[:2])
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    resumed = make(2)
    resumed.set_state(state)
    _assert_same(_take(resumed, 3), reference[2:])  # crosses the epoch boundary
    resumed.close()


def test_blocks_of_several_processes_make_up_the_whole_batch(tmp_path):
    """Process i of 2 reads rows 2i, 2i+1 of every batch of 4 (`shard`): stacked, the two blocks
    are the batch one process reads whole, crops and flips included; a block resumes from its
    own state. Eval batches split the same way, padding included."""
    lists, _ = _write(tmp_path, 10)

    def make(shard):
        return train_iter(lists, tmp_path, crop=CROP, batch_size=4, seed=4, workers=0,
                          shard=shard)

    whole = _take(make((0, 1)), 4)  # crosses the epoch boundary (10 images, 4 a batch)
    blocks = [_take(make((i, 2)), 4) for i in range(2)]
    stacked = [{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*blocks, strict=True)]
    _assert_same(stacked, whole)
    it = make((1, 2))
    next(it)
    state = json.loads(json.dumps(it.get_state()))
    resumed = make((1, 2))
    resumed.set_state(state)
    _assert_same(_take(resumed, 3), blocks[1][1:])

    def eval_rows(shard):
        return list(eval_batches(lists, tmp_path, crop=CROP, batch_size=4, shard=shard))

    whole, blocks = eval_rows((0, 1)), [eval_rows((i, 2)) for i in range(2)]
    assert len(blocks[0]) == len(blocks[1]) == len(whole) == 3
    _assert_same([{k: np.concatenate([a[k], b[k]]) for k in a}
                  for a, b in zip(*blocks, strict=True)], whole)
    with pytest.raises(ValueError, match=r"shard \(0, 3\) of a batch of 4"):
        make((0, 3))


def test_eval_covers_every_image_once_in_order_with_centre_crop(tmp_path):
    # (height, width) -> torchvision CenterCrop offsets: 72 -> 4, 73 -> 9/2 -> 4 (round half to
    # even), 75 -> 11/2 -> 6.
    shapes = ((SIZE, SIZE), (73, 75), (75, 73))
    offsets = {SIZE: 4, 73: 4, 75: 6}
    lists, images = _write(tmp_path, 10, shapes=shapes)
    batches = list(eval_batches(lists, tmp_path, crop=CROP, batch_size=4, threads=2))
    assert len(batches) == 3
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.dtype == bool and mask.tolist() == [True] * 10 + [False] * 2
    rows = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    assert _sample_ids(rows)[:10] == list(range(10))
    for i in range(10):
        height, width = shapes[i % 3]
        y, x = offsets[height], offsets[width]
        np.testing.assert_array_equal(rows["image"][i], _scaled(images[i][y:y + CROP, x:x + CROP]))
        np.testing.assert_array_equal(rows["landmarks"][i], lists.landmarks[i] - [x, y])
    # Padding rows are well-formed data (the last image again), only masked.
    for key in ("image", "landmarks", "au"):
        np.testing.assert_array_equal(rows[key][10:], rows[key][[9, 9]])


def test_unusable_images_are_replaced_in_training_and_masked_in_eval(tmp_path):
    # Image 1 does not decode, image 3 is missing, image 5 is smaller than the crop.
    lists, images = _write(tmp_path, 6, shapes=((SIZE, SIZE),) * 5 + ((60, 70),))
    (tmp_path / lists.paths[1]).write_bytes(b"not an image")
    (tmp_path / lists.paths[3]).unlink()
    substitute = {1: 2, 3: 4, 5: 0}  # the next usable entry, wrapping around
    it = train_iter(lists, tmp_path, crop=CROP, batch_size=3, seed=4, workers=0)
    seen = set()
    for batch in _take(it, 4):  # two epochs
        assert batch["image"].shape == (3, CROP, CROP, 3)
        for row, sample in enumerate(_sample_ids(batch)):
            first, skipped = int(batch["bad_index"][row]), int(batch["bad"][row])
            if skipped:
                assert (first, skipped, sample) == (first, 1, substitute[first])
                seen.add(first)
            else:
                assert first == -1 and sample in (0, 2, 4)
            # The row is a crop of the image it names (the substitute's pixels and labels).
            assert _find_crop(batch["image"][row], images[sample], CROP)
    assert seen == {1, 3, 5}

    batches = list(eval_batches(lists, tmp_path, crop=CROP, batch_size=4))
    mask = np.concatenate([b["mask"] for b in batches]).tolist()
    bad = np.concatenate([b["bad"] for b in batches]).tolist()
    assert mask == [True, False, True, False, True, False, False, False]
    assert bad == [False, True, False, True, False, True, False, False]  # padding is not bad
    with pytest.raises(ValueError, match="flipping needs 49 landmarks"):
        train_iter(Lists(lists.paths, lists.landmarks[:, :5], lists.au, None, "p"), tmp_path,
                   crop=8, batch_size=1, seed=0, workers=0)


def test_read_sample_says_why(tmp_path):
    lists, _ = _write(tmp_path, 1)
    path, points = str(tmp_path / lists.paths[0]), lists.landmarks[0]
    assert read_sample(path, points, CROP)[1] is None
    assert read_sample(path, points, 80)[1] == "the 72x72 image is smaller than the 80x80 crop"
    assert read_sample(path, points + [0, 60], CROP)[1].startswith("landmark ")
    assert read_sample(str(tmp_path / "nope.png"), points, CROP)[1] == "No such file or directory"
    for data in (b"", b"junk", Path(path).read_bytes()[:200]):  # empty, not an image, truncated
        Path(path).write_bytes(data)
        assert read_sample(path, points, CROP) == (None, "cannot decode image")


def test_bench_runs_on_synthetic_images(capsys):
    assert bench_cli.main(["--what=pipeline", "--synthetic", "8", "--crop", "64", "--batch", "4",
                           "--workers", "0", "--steps", "3", "--warmup", "1"]) == 0
    assert "images/s" in capsys.readouterr().out
