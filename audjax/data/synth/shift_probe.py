"""SynthAU's domain-shift probe: linear probes (logistic regression on HOG features of the centre
crop) trained on one domain and tested on both, to show how far apart the domains are.

`domain_shift_check` returns per-AU F1 values, `shift_table` lays them out for people.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import cv2
import numpy as np

from audjax.data.lists import read_lists
from audjax.data.synth.dataset import load_params
from audjax.data.synth.face import occurrence
from audjax.data.synth.image import plan_image
from audjax.landmarks import AU_NAMES

CROP_RATIO = 176 / 200  # the paper's crop of its 200-pixel aligned images


def _hog(image: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
    """Histogram-of-oriented-gradients features of a grey image whose side is a multiple of
    `cell`: per cell, gradient magnitude binned by unsigned orientation, each cell divided by the
    gradient energy of its 3x3 cell neighbourhood (Dalal and Triggs' block normalisation, in
    short). A 64x64 image gives 8 * 8 * 9 = 576 numbers."""
    f = image.astype(np.float32)
    mag, angle = cv2.cartToPolar(cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=1),
                                 cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=1))
    which = (np.mod(angle, np.pi) * (bins / np.pi)).astype(np.int32) % bins
    votes = (which[..., None] == np.arange(bins)) * mag[..., None]
    h, w = f.shape
    hist = votes.reshape(h // cell, cell, w // cell, cell, bins).sum((1, 3))
    energy = cv2.blur((hist**2).sum(-1), (3, 3), borderType=cv2.BORDER_REFLECT)
    return (hist / np.sqrt(9 * energy + 1e-3)[..., None]).ravel()


def _hog_features(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 576) HOG features of the centre crops (grey, 64x64) and the (N, K) labels."""
    lists = read_lists(data_dir / "list" / split)

    def features(path: str) -> np.ndarray:
        image = cv2.imread(str(data_dir / path), cv2.IMREAD_GRAYSCALE)
        crop = int(round(CROP_RATIO * image.shape[0]))
        o = int(round((image.shape[0] - crop) / 2.0))
        return _hog(cv2.resize(image[o:o + crop, o:o + crop], (64, 64),
                               interpolation=cv2.INTER_AREA))

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        x = np.stack(list(pool.map(features, lists.paths)))
    return x, lists.au


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 400,
                  lr: float = 0.02) -> np.ndarray:
    """One logistic regression per label column, classes balanced, by full-batch Adam.

    Returns (D + 1, K) weights, the last row the biases. Balancing the classes (each weighs half
    the loss) makes the 0.5 threshold meaningful for rare AUs, which F1 then rewards.
    """
    x = np.concatenate([x, np.ones((len(x), 1), x.dtype)], 1)
    rate = y.mean(0)
    sample_weight = np.where(y == 1, 0.5 / rate, 0.5 / (1 - rate)) / len(x)
    w = np.zeros((x.shape[1], y.shape[1]), np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        p = 0.5 + 0.5 * np.tanh(0.5 * (x @ w))  # the sigmoid, without exp overflow
        grad = x.T @ ((p - y) * sample_weight) + l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w


def _f1(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-column F1 of the positive class at logit 0."""
    predicted = (x @ w[:-1] + w[-1]) > 0
    tp = (predicted & (y == 1)).sum(0)
    return 2 * tp / np.maximum(predicted.sum(0) + (y == 1).sum(0), 1)


def domain_shift_check(data_dir) -> dict[str, list[float]]:
    """Per-AU F1 of linear probes (logistic regression on HOG features of the centre crop).

    Returns lists of K F1 values:
      source_test: trained on source_train, tested on source_test (within the source domain);
      target_test: the same probe tested on target_test (across the domain shift);
      target_oracle: trained on target_train with its true labels (which the generator knows
        and the lists hide), tested on target_test: what the target task allows a probe of the
        same kind and training set size, so the gap to it is the domain shift's cost;
      chance: F1 of answering "yes" always on target_test (2 rate / (1 + rate)).
    """
    data_dir = Path(data_dir)
    params = load_params(data_dir)
    if params is None:
        raise FileNotFoundError(f"{data_dir}: no synthau.json; generate the data set first")
    x, y = {}, {}
    for split in ("source_train", "source_test", "target_train", "target_test"):
        x[split], y[split] = _hog_features(data_dir, split)
    y["target_train"] = np.stack([
        occurrence(plan_image(params["seed"], "target_train", i, params["image_size"],
                              params.get("target_shift", "full")).intensity)
        for i in range(len(y["target_train"]))])
    # Each probe's inputs are standardised with its own training set's statistics.
    f1 = {}
    for train, test, name in (("source_train", "source_test", "source_test"),
                              ("source_train", "target_test", "target_test"),
                              ("target_train", "target_test", "target_oracle")):
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        w = _fit_logistic((x[train] - mean) / std, y[train])
        f1[name] = _f1((x[test] - mean) / std, w, y[test]).tolist()
    rate = y["target_test"].mean(0)
    f1["chance"] = (2 * rate / (1 + rate)).tolist()
    return f1


def shift_table(f1: dict[str, list[float]]) -> str:
    """`domain_shift_check`'s F1 values as a table: a row per AU and their mean, a column per
    probe (train domain -> test domain) and one for always answering "yes"."""
    columns = ("source_test", "target_test", "target_oracle", "chance")
    rows = [f"{'':6}{'source->source':>16}{'source->target':>16}{'target->target':>16}"
            f"{'always yes':>12}"]
    for k, name in enumerate([*AU_NAMES, "mean"]):
        values = [np.mean(f1[c]) if name == "mean" else f1[c][k] for c in columns]
        rows.append(f"{name:6}" + "".join(f"{v:16.3f}" for v in values[:3])
                    + f"{values[3]:12.3f}")
    return "\n".join(rows)

