"""Training curves and per-AU F1 of one or more runs (`audjax plot RUN... --out FIG.png`).

From each run's `metrics.jsonl`: the loss terms (unweighted), the weighted total L_all, the
discriminator losses, the validation mean F1 and the landmark NME against the step; from each
run's `results.json`: a bar per AU and run of the F1 on one split (`--split`, default
target_test). A RUN without metrics.jsonl whose sub-folders have one (a `--phase=all` run:
RUN/pretrain, RUN/joint) stands for those sub-folders. Needs matplotlib (extra `plot`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from audjax.files import atomic_write

MISSING_EXTRA = "plotting needs matplotlib: pip install 'audjax[plot]'"
DISCRIMINATOR = ("loss_d", "d_landmark", "d_domain")
STYLES = ("-", "--", ":", "-.")


def find_runs(paths) -> list[Path]:
    """The run directories (with a metrics.jsonl) that `paths` name; FileNotFoundError names
    a path with none."""
    runs = []
    for path in map(Path, paths):
        if (path / "metrics.jsonl").is_file():
            runs.append(path)
            continue
        subs = sorted(p.parent for p in path.glob("*/metrics.jsonl"))
        if not subs:
            raise FileNotFoundError(f"{path}: no metrics.jsonl here or in its sub-folders")
        runs += subs
    return runs


def read_metrics(run: Path) -> dict[str, list[dict]]:
    """metrics.jsonl records by split ("train", "val"); lines cut short are skipped."""
    out = {"train": [], "val": []}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(record.get("split"), []).append(record)
    return out


def _plot(ax, records, key, fmt, scale=1.0, **kwargs):
    """One curve of `key` against the step, if any record has it (no empty legend entries)."""
    points = [(r["step"], scale * r[key]) for r in records if key in r]
    if points:
        ax.plot(*zip(*points, strict=True), fmt, **kwargs)


def plot_runs(paths, out, split: str = "target_test"):
    """Draw the figure of the module doc for the runs `paths` name and write it to `out`
    (format from its suffix, written atomically). Returns the run directories drawn."""
    plt = _pyplot()
    runs = find_runs(paths)
    labels = [str(r) for r in runs]
    metrics = [read_metrics(r) for r in runs]
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    (terms_ax, total_ax, disc_ax), (f1_ax, nme_ax, au_ax) = axes

    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    terms = sorted({k for m in metrics for r in m["train"] for k in r
                    if k.startswith("loss_") and k not in ("loss_total", *DISCRIMINATOR)})
    for i, (label, m) in enumerate(zip(labels, metrics, strict=True)):
        style, colour = STYLES[i % len(STYLES)], colours[i % len(colours)]
        suffix = f" ({label})" if len(runs) > 1 else ""
        for j, key in enumerate(terms):
            _plot(terms_ax, m["train"], key, style, color=colours[j % len(colours)],
                  label=key.removeprefix("loss_") + suffix)
        _plot(total_ax, m["train"], "loss_total", style, color=colour, label=label)
        for j, key in enumerate(DISCRIMINATOR):
            _plot(disc_ax, m["train"], key, style, color=colours[j % len(colours)],
                  label=key.removeprefix("loss_") + suffix)
        _plot(f1_ax, m["val"], "target_val_mean_f1", "o" + style, color=colour, label=label)
        _plot(nme_ax, m["val"], "nme", "o" + style, color=colour, label=f"val{suffix}")
        # Training records keep NME as a fraction, validation in percent.
        _plot(nme_ax, m["train"], "nme", style, scale=100.0, color=colour, alpha=0.4,
              label=f"train{suffix}")
    _per_au_f1(au_ax, runs, labels, split, colours)

    for ax, title, log in ((terms_ax, "loss terms (unweighted)", True),
                           (total_ax, "L_all (weighted total)", True),
                           (disc_ax, "discriminator losses", True),
                           (f1_ax, "validation mean F1 (%)", False),
                           (nme_ax, "landmark NME (%)", False)):
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.has_data():
            if log:
                ax.set_yscale("log")
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
    return runs


def _per_au_f1(ax, runs, labels, split, colours):
    results = []
    for run, label in zip(runs, labels, strict=True):
        file = run / "results.json"
        r = json.loads(file.read_text()).get(split, {}) if file.is_file() else {}
        if "f1" in r:
            results.append((label, r["f1"]))
    ax.set_title(f"per-AU F1 on {split} (%)")
    if not results:
        ax.text(0.5, 0.5, f"no results.json with {split}", ha="center", va="center",
                transform=ax.transAxes)
        return
    aus = list(results[0][1])
    width = 0.8 / len(results)
    for i, (label, f1) in enumerate(results):
        xs = [k + (i - (len(results) - 1) / 2) * width for k in range(len(aus))]
        ax.bar(xs, [f1.get(a, 0.0) for a in aus], width, color=colours[i % len(colours)],
               label=label)
    ax.set_xticks(range(len(aus)), aus)
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(MISSING_EXTRA) from e
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out):
    """Write a matplotlib figure to `out` atomically, in the format its suffix names."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(out).suffix.lstrip(".") or "png", dpi=100)
    atomic_write(out, buffer.getvalue())

