#!/usr/bin/env bash
# Issue 13 (b): choose alpha for WiSE-FT and LiNeS on validation data only, on seed 0's checkpoints.
#   A = sft-a (addition), S = sft-b (A, then SFT on multiplication). Each merge pulls S back toward A.
# Validation, from the train split with another seed, none in any train or test file of the experiment:
#   validation-addition.jsonl: 200 of `r1lab data make addition --n 400 --split train --seed 1`
#   validation-multiplication.jsonl: the first 200 of `r1lab data make multiplication --n 400 --split train
#   --seed 1` that are not in the experiment's multiplication train (2000) or test (500) file
# The first 100 problems of each are used (the sweep had to fit this session's CPU time).
# Criterion: the mean of the two validation accuracies (B's gain and A's retention weighted equally).
# Usage: bash docs/results/continual/sweep.sh A_DIR S_DIR   (the final/ folders of seed 0's stages)
set -euo pipefail
A=$1 S=$2
R1LAB=${R1LAB:-.venv/bin/r1lab}
OUT=runs/continual-sweep
HERE=docs/results/continual
mkdir -p "$OUT"
evaluate() {  # model name
  for task in multiplication addition; do
    $R1LAB eval "$1" --task $task --data $HERE/validation-$task.jsonl --limit 100 --max-new-tokens 64 \
      --batch-size 100 --out "$OUT/eval-$2-$task"
  done
}
[ -f "$OUT/eval-A-addition/results.json" ] || evaluate "$A" A
[ -f "$OUT/eval-S-addition/results.json" ] || evaluate "$S" S
for method in wise_ft lines; do
  for alpha in 0 0.25 0.5 0.75; do
    name=$method-$alpha
    [ -f "$OUT/eval-$name-addition/results.json" ] && continue
    printf 'merge_method: %s\nbase_model: %s\nmodels: [{model: %s}]\nparameters: {alpha: %s}\n' \
      "$method" "$A" "$S" "$alpha" > "$OUT/$name.yaml"
    $R1LAB merge "$OUT/$name.yaml" "$OUT/$name" --overwrite
    evaluate "$OUT/$name" "$name"
  done
done
