"""Evaluation: per-AU F1 and accuracy, landmark NME, result tables (docs/design.md §3).

Protocol (ADLD): sigmoid, threshold 0.5, F1 of the positive class and accuracy per AU, with
labels 999 dropped per AU; means over AUs. Numbers are percentages, as in the paper's tables.
"""

import functools
import os
import sys

import jax
import numpy as np

from audjax import losses, parallel
from audjax.data import images, pipeline
from audjax.data.lists import check_command
from audjax.errors import InputError
from audjax.inference import paths
from audjax.labels import UNKNOWN


def au_metrics(probs, labels, au_names) -> dict:
    """Per-AU F1 / accuracy / positive rate (percent) of (N, K) probabilities against labels.

    Example: probs [[.9], [.2], [.7]], labels [[1], [1], [0]]: TP 1, FN 1, FP 1, TN 0, so
    F1 = 2 / (2 + 1 + 1) = 50 and accuracy = 1/3 = 33.3.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    pred = probs >= 0.5
    out = {"f1": {}, "acc": {}, "positive_rate": {}, "count": {}}
    for k, name in enumerate(au_names):
        known = labels[:, k] != UNKNOWN
        y, p = labels[known, k] == 1, pred[known, k]
        tp, fp, fn = np.sum(y & p), np.sum(~y & p), np.sum(y & ~p)
        denom = 2 * tp + fp + fn
        out["f1"][name] = 100.0 * 2 * tp / denom if denom else 0.0
        out["acc"][name] = 100.0 * np.mean(y == p) if known.any() else float("nan")
        out["positive_rate"][name] = 100.0 * np.mean(y) if known.any() else float("nan")
        out["count"][name] = int(known.sum())
    for key in ("f1", "acc"):
        out[f"mean_{key}"] = float(np.nanmean(list(out[key].values())))
    for key in ("f1", "acc", "positive_rate"):
        out[key] = {k: float(v) for k, v in out[key].items()}
    return out


class Evaluator:
    """Jitted prediction functions of one run, and the loop over a list's images."""

    def __init__(self, config, nets, names, mesh=None):
        """`names`: the networks the run has; it predicts AUs when it has E_au, landmarks when it
        has the landmark net (phase 1) or the landmark head (models B and C).

        With a `mesh` (audjax.parallel) each batch is split over its data axis (the batch size
        rounded up to a multiple of it) and the weights must be replicated on it; every process
        reads its own block of each batch and gets every prediction."""
        self.config, self.mesh = config, mesh
        self.batch_size = parallel.eval_batch_size(config, mesh)
        self.au = ({d: self._jit(functools.partial(paths.predict_au, config, nets, domain=d))
                    for d in ("source", "target")} if "E_au" in names else None)
        has_landmarks = "landmark_net" in names or "landmark" in names
        self.landmarks = (self._jit(functools.partial(paths.predict_landmarks, nets))
                          if has_landmarks else None)

    def _jit(self, fn):
        if self.mesh is None:
            return jax.jit(fn)
        rep = parallel.replicated(self.mesh)
        return jax.jit(fn, in_shardings=(rep, rep, parallel.batch_sharded(self.mesh)),
                       out_shardings=rep)

    def predict(self, params, batch_stats, lists, data_root, domain: str):
        """Every image of `lists` once, centre-cropped. Returns a dict of arrays over the N
        usable images: "au" (N, K) their labels, "probs" (N, K) and/or "landmarks" /
        "target_landmarks" (N, L, 2) crop pixels; and "skipped", the list indices of the images
        that could not be used (`images.read_sample`)."""
        out, skipped, offset = {}, [], 0
        for batch in pipeline.eval_batches(lists, data_root, crop=self.config.crop,
                                           batch_size=self.batch_size,
                                           shard=parallel.process_block(self.mesh,
                                                                        self.batch_size)):
            if self.mesh is not None:
                batch = parallel.global_batch(self.mesh, batch)
            keep = parallel.fetch_rows(batch["mask"])
            skipped += (offset + np.flatnonzero(parallel.fetch_rows(batch["bad"]))).tolist()
            offset += len(keep)
            parts = {"au": parallel.fetch_rows(batch["au"])}
            if self.au is not None:
                parts["probs"] = self.au[domain](params, batch_stats, batch["image"])
            if self.landmarks is not None:
                parts["landmarks"] = self.landmarks(params, batch_stats, batch["image"])
                parts["target_landmarks"] = parallel.fetch_rows(batch["landmarks"])
            for k, v in parts.items():
                out.setdefault(k, []).append(np.asarray(v)[keep])
        return {**{k: np.concatenate(v) for k, v in out.items()}, "skipped": skipped}

    def evaluate(self, params, batch_stats, lists, data_root, domain: str) -> dict:
        """AU metrics (when the run predicts AUs and the list has labels), landmark NME, and the
        images left out ("skipped_images": "PATH: why" each). More than --max_bad_images of
        them stop the run: metrics over what is left would mislead."""
        pred = self.predict(params, batch_stats, lists, data_root, domain)
        result = {}
        if "probs" in pred and np.any(pred["au"] != UNKNOWN):
            result.update(au_metrics(pred["probs"], pred["au"], self.config.au_names))
        if "landmarks" in pred:
            result.update(landmark_metrics(pred["landmarks"], pred["target_landmarks"]))
        result["skipped_images"] = [f"{lists.paths[i]}: {self._why(lists, data_root, i)}"
                                    for i in pred["skipped"]]
        if result["skipped_images"]:
            print(f"warning: {lists.prefix}: left out {len(pred['skipped'])} image(s) that "
                  f"cannot be used: {'; '.join(result['skipped_images'][:3])}"
                  + (" ..." if len(pred["skipped"]) > 3 else ""), file=sys.stderr, flush=True)
        if len(pred["skipped"]) > self.config.max_bad_images:
            raise InputError(f"{lists.prefix}: {len(pred['skipped'])} images cannot be used, "
                             f"more than --max_bad_images={self.config.max_bad_images}; "
                             "check the list with "
                             + check_command(lists.prefix, data_root, self.config.crop))
        return result

    def _why(self, lists, data_root, i) -> str:
        """Why image i was left out (decoded again: rare, and workers cannot send text)."""
        path = os.path.join(data_root or "", lists.paths[i])
        return images.read_sample(path, lists.landmarks[i], self.config.crop)[1] or "unusable"


def landmark_metrics(pred, target) -> dict:
    """NME in percent of the inter-ocular distance, and the failure rate (NME > 10%)."""
    per_image = np.asarray(losses.nme(pred, target))
    return {"nme": 100.0 * float(per_image.mean()),
            "failure_rate": 100.0 * float(np.mean(per_image > 0.1))}


def format_table(title: str, result: dict, au_names) -> str:
    """A plain-text table like the paper's Tables 1-2: rows F1 and Acc, one column per AU."""
    head = f"{title:<14}" + "".join(f"{n:>7}" for n in au_names) + f"{'Avg.':>7}"
    rows = [head]
    for key, label in (("f1", "F1"), ("acc", "Acc")):
        vals = "".join(f"{result[key][n]:7.1f}" for n in au_names)
        rows.append(f"{label:<14}{vals}{result['mean_' + key]:7.1f}")
    rate = "".join(f"{result['positive_rate'][n]:7.1f}" for n in au_names)
    rows.append(f"{'positive %':<14}{rate}{'':>7}")
    return "\n".join(rows)


def format_markdown(results: dict, au_names) -> str:
    """Markdown tables of every evaluated split, F1 and accuracy per AU."""
    lines = []
    for split, r in results.items():
        if "f1" not in r:
            continue
        lines += [f"### {split}", "",
                  "| | " + " | ".join(au_names) + " | Avg. |",
                  "|---|" + "---:|" * (len(au_names) + 1)]
        for key, label in (("f1", "F1"), ("acc", "Acc")):
            vals = " | ".join(f"{r[key][n]:.1f}" for n in au_names)
            lines.append(f"| {label} | {vals} | {r['mean_' + key]:.1f} |")
        if "nme" in r:
            lines += ["", f"Landmark NME {r['nme']:.2f}% (failures {r['failure_rate']:.1f}%)"]
        lines.append("")
    return "\n".join(lines)
