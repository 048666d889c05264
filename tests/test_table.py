"""experiments.table: mean ± std over seeds and paired differences, on hand-made results."""

import json

from experiments import table

AUS = ("AU1", "AU2")


def _write(root, label, seed, f1, acc):
    """A run's results.json whose target test has per-AU F1 `f1` and accuracy `acc`."""
    run = root / label / f"seed{seed}"
    run.mkdir(parents=True)
    result = {"f1": dict(zip(AUS, f1, strict=True)), "acc": dict(zip(AUS, acc, strict=True)),
              "mean_f1": sum(f1) / 2, "mean_acc": sum(acc) / 2}
    (run / "results.json").write_text(json.dumps({"target_test": result}))


def test_mean_std_and_paired_differences(tmp_path):
    # source_only mean F1 over seeds 0, 1, 2: 40, 50, 60 -> 50.0 ± 10.0 (sample std).
    for seed, f1 in enumerate((40, 50, 60)):
        _write(tmp_path, "source_only", seed, (f1, f1), (80, 90))
    # C: 43, 55, 61 -> differences 3, 5, 1: 3.0 ± 2.0; AU1 45, 55, 65 -> 55.0 ± 10.0.
    for seed, (a, b) in enumerate(((45, 41), (55, 55), (65, 57))):
        _write(tmp_path, "C", seed, (a, b), (70, 70))
    # A variant of C with two seeds: paired on seeds 0 and 1 only; against C 2 and -5.
    _write(tmp_path, "C_self", 0, (50, 40), (70, 70))
    _write(tmp_path, "C_self", 1, (50, 50), (70, 70))
    (tmp_path / "pretrain" / "seed0").mkdir(parents=True)  # never a label

    labels = table.discover(tmp_path)
    assert labels == ["source_only", "C", "C_self"]
    text = table.tables(table.collect(tmp_path, labels))
    lines = text.splitlines()
    assert "| source_only | 3 | 50.0 ± 10.0 | 50.0 ± 10.0 | 50.0 ± 10.0 |" in lines
    assert "| C | 3 | 55.0 ± 10.0 | 51.0 ± 8.7 | 53.0 ± 9.2 |" in lines
    assert "| source_only | 3 | 80.0 ± 0.0 | 90.0 ± 0.0 | 85.0 ± 0.0 |" in lines  # accuracy
    against_so = lines.index("Paired difference against source_only (same seeds; mean ± std "
                             "over seeds):")
    assert lines[against_so + 4] == "| C | 3 | 3.0 ± 2.0 | -15.0 ± 0.0 |"
    assert lines[against_so + 5] == "| C_self | 2 | 2.5 ± 3.5 | -15.0 ± 0.0 |"
    against_c = lines.index("Paired difference against C (same seeds; mean ± std over seeds):")
    assert lines[against_c + 4] == "| source_only | 3 | -3.0 ± 2.0 | 15.0 ± 0.0 |"
    assert lines[against_c + 5] == "| C_self | 2 | -1.5 ± 4.9 | 0.0 ± 0.0 |"
    assert not any("against A" in line for line in lines)  # no A runs, no A comparison


def test_paired_differences_against_chosen_labels(tmp_path):
    # Long runs compared with their own source-only: differences 2 and -4 -> -1.0 ± 4.2.
    for seed, (so, c) in enumerate(((40, 42), (50, 46))):
        _write(tmp_path, "SO_long", seed, (so, so), (80, 80))
        _write(tmp_path, "C_long", seed, (c, c), (80, 80))
    _write(tmp_path, "source_only", 0, (10, 10), (80, 80))
    groups = table.collect(tmp_path, ["SO_long", "C_long"])
    lines = table.tables(groups, against=["SO_long"]).splitlines()
    against = lines.index("Paired difference against SO_long (same seeds; mean ± std over "
                          "seeds):")
    assert lines[against + 4] == "| C_long | 2 | -1.0 ± 4.2 | 0.0 ± 0.0 |"
    assert not any("against source_only" in line for line in lines)
