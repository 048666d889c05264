"""AU labels as ADLD's lists hold them, and the AU weights of L_au (docs/design.md §3, §6).

A label is 1 (present), 0 (absent) or 999 (unknown: the unlabelled target training set, or an AU
a data set does not code). Every module that reads, writes, masks or counts labels takes these
values from here.
"""

import numpy as np

UNKNOWN = 999
LABEL_VALUES = (0, 1, UNKNOWN)


def au_weights(labels) -> np.ndarray:
    """Per-AU loss weights from training labels (N, K): w_k = (1/rate_k) / sum_j (1/rate_j) * K.

    rate_k is AU k's positive rate among its labelled rows (999 ignored). Rare AUs weigh more;
    the weights average to 1. Example: rates (0.5, 0.25) give weights (2/3, 4/3).
    """
    labels = np.asarray(labels)
    known = labels != UNKNOWN
    counts = known.sum(axis=0)
    positives = ((labels == 1) & known).sum(axis=0)
    if np.any(counts == 0) or np.any(positives == 0):
        bad = [k for k in range(labels.shape[1]) if counts[k] == 0 or positives[k] == 0]
        raise ValueError(f"AU columns {bad} have no positive labelled example; cannot weight them")
    inv = counts / positives
    return (inv / inv.sum() * labels.shape[1]).astype(np.float32)
