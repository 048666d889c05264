"""Put several runs' results side by side, like the paper's Table 3.

    python -m experiments.table runs/ablation/source_only runs/ablation/A runs/ablation/B \\
        runs/ablation/C [--split target_test]

Reads RUN/results.json of each run; prints Markdown tables of per-AU F1 and accuracy with
their means (percent).
"""

import argparse
import json
import sys
from pathlib import Path


def table(runs, split: str) -> str:
    """Two Markdown tables (per-AU F1, then per-AU accuracy) with one row per run."""
    rows, aus = [], None
    for run in runs:
        path = Path(run) / "results.json"
        if not path.exists():
            sys.exit(f"{path}: no such file (has the run finished its evaluation?)")
        results = json.loads(path.read_text())
        if split not in results:
            sys.exit(f"{path}: no split {split!r}")
        r = results[split]
        aus = aus or list(r["f1"])
        rows.append((Path(run).name, results.get("model", "?"), r))
    out = []
    for key, label in (("f1", "F1"), ("acc", "Acc")):
        head = ["run", "model", *[f"{label} {a}" for a in aus], f"mean {label}"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(aus) + 1)]
        for name, model, r in rows:
            cells = [name, model, *[f"{r[key][a]:.1f}" for a in aus], f"{r['mean_' + key]:.1f}"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories with results.json")
    parser.add_argument("--split", default="target_test")
    args = parser.parse_args()
    print(table(args.runs, args.split))


if __name__ == "__main__":
    main()
