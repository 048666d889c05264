"""Several runs' results side by side, like the paper's Table 3, with the spread over seeds.

    python -m experiments.table runs/ablation                 # every label of an ablation
    python -m experiments.table runs/ablation --labels=source_only,A,C
    python -m experiments.table runs/ablation --labels=SO_long,C_long --against=SO_long
    python -m experiments.table runs/a/C runs/b/C             # single runs, one row each

An ablation directory holds LABEL/seed<k>/results.json (what `experiments.ablation` writes); a
run directory holds results.json itself. Per label the tables give the mean ± standard deviation
over seeds (sample std, n - 1) of each AU's F1 and accuracy and of their means over AUs, and the
paired differences of mean F1 and mean accuracy against source-only, model A and model C (or the
labels given by --against): the difference seed by seed (same seed = same data order and
augmentation), then mean ± std. Numbers are percentages on --split (default: the target test
set). Model selection has already happened inside each run, on target-validation F1; test
numbers choose nothing here.
"""

import json
import sys
from pathlib import Path

import numpy as np
from absl import flags

from audjax.cli.common import parse
from audjax.config import MODELS

PROG = "python -m experiments.table"
USAGE = "DIR... [--labels=A,B] [--split=SPLIT] [--against=A,B]"
FLAGS = flags.FlagValues()
flags.DEFINE_list("labels", [], "comma-separated labels of an ablation (default: all)",
                  flag_values=FLAGS)
flags.DEFINE_string("split", "target_test", "results.json split", flag_values=FLAGS)
flags.DEFINE_list("against", ["source_only", "A", "C"],
                  "comma-separated labels to give paired differences against", flag_values=FLAGS)


def label_order(label: str):
    """source_only, A, B, C first (the paper's order), then the rest alphabetically."""
    return (MODELS.index(label) if label in MODELS else len(MODELS), label)


def discover(root: Path) -> list[str]:
    """The labels of an ablation directory: its subdirectories with seed<k>/results.json."""
    return sorted((p.name for p in root.iterdir() if p.is_dir() and p.name != "pretrain"
                   and any(p.glob("seed*/results.json"))), key=label_order)


def _load(path: Path, split: str) -> dict:
    if not path.exists():
        sys.exit(f"{path}: no such file (has the run finished its evaluation?)")
    results = json.loads(path.read_text())
    if split not in results or "f1" not in results[split]:
        sys.exit(f"{path}: no AU results for split {split!r}")
    return results[split]


def collect(root: Path, labels, split: str = "target_test") -> dict[str, dict[int, dict]]:
    """{label: {seed: results of `split`}} from ROOT/LABEL/seed<k>/results.json."""
    out = {}
    for label in labels:
        seeds = {int(p.name.removeprefix("seed")): _load(p / "results.json", split)
                 for p in (root / label).glob("seed*") if p.name.removeprefix("seed").isdigit()
                 and (p / "results.json").exists()}
        if not seeds:
            sys.exit(f"{root / label}: no seed<k>/results.json")
        out[label] = seeds
    return out


def _mean_std(values) -> str:
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def tables(groups: dict[str, dict[int, dict]], against=("source_only", "A", "C")) -> str:
    """Markdown: per-AU F1 and accuracy (mean ± std over seeds) per label, then the paired
    differences against each label of `against` that is present (variants of C against C
    itself)."""
    first = next(iter(next(iter(groups.values())).values()))
    aus = list(first["f1"])
    out = []
    for key, name in (("f1", "F1"), ("acc", "Acc")):
        head = ["model", "seeds", *[f"{name} {a}" for a in aus], f"mean {name}"]
        out += ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(aus) + 1)]
        for label, seeds in groups.items():
            runs = list(seeds.values())
            cells = [label, str(len(runs)), *[_mean_std([r[key][a] for r in runs]) for a in aus],
                     _mean_std([r[f"mean_{key}"] for r in runs])]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    for base in against:
        if base not in groups:
            continue
        out += [f"Paired difference against {base} (same seeds; mean ± std over seeds):", "",
                "| model | seeds | Δ mean F1 | Δ mean Acc |", "|---|---:|---:|---:|"]
        for label, seeds in groups.items():
            common = sorted(set(seeds) & set(groups[base]))
            if label == base or not common:
                continue
            d = {k: [seeds[s][f"mean_{k}"] - groups[base][s][f"mean_{k}"] for s in common]
                 for k in ("f1", "acc")}
            out.append(f"| {label} | {len(common)} | {_mean_std(d['f1'])} | "
                       f"{_mean_std(d['acc'])} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    dirs = parse(FLAGS, argv, PROG, USAGE, __doc__, positional=(1, None))
    groups = {}
    for d in map(Path, dirs):
        if (d / "results.json").exists():  # a single run: one row, its seed from its config
            seed = json.loads((d / "config.json").read_text()).get("seed", 0)
            groups[str(d)] = {seed: _load(d / "results.json", FLAGS.split)}
            continue
        labels = [x for x in FLAGS.labels if x] or discover(d)
        groups.update(collect(d, labels, FLAGS.split))
    if not groups:
        sys.exit("no results found")
    print(tables(groups, [x for x in FLAGS.against if x]))


if __name__ == "__main__":
    main()
