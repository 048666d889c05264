#!/usr/bin/env bash
# Table 3 on SynthAU: one phase-1 run, then the source-only baseline and models A, B, C from it,
# and a table of their target-test results. Extra flags (e.g. --crop=176 --width=1.0
# --synth_image_size=200) go to every run and override the defaults below.
# On a 2-core CPU the defaults take about half an hour. OUT=DIR sets the output directory.
set -euo pipefail
out=${OUT:-runs/ablation}
common=(--flagfile=quickstart.flags --synth_train=4000 --synth_eval=500)
python -m experiments.run "${common[@]}" --phase=pretrain --pretrain_epochs=5 \
  --workdir="$out/pretrain" "$@"
for model in source_only A B C; do
  python -m experiments.run "${common[@]}" --phase=joint --model="$model" --epochs=10 \
    --lr_decay_start=4 --lr_decay_every=3 --init_from="$out/pretrain" --workdir="$out/$model" "$@"
done
python -m experiments.table "$out/source_only" "$out/A" "$out/B" "$out/C" | tee "$out/table3.md"
