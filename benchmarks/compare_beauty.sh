#!/usr/bin/env bash
# Every sequential model we ship next to RecBole's SASRec and BERT4Rec on Amazon Beauty: one shared dataset,
# 3 seeds each, each model's own yaml (paper defaults, early stopping on validation NDCG@10).
#
#   benchmarks/compare_beauty.sh                          # the real comparison (hours: run it on a GPU machine)
#   benchmarks/compare_beauty.sh --budget_epochs=50       # extra flags/overrides go to every model
#
# Writes benchmarks/results/compare_beauty/comparison.{md,csv,png} and runs.jsonl; rerunning the same command
# resumes (finished (model, seed) runs are read back, not trained again). The variables below change the
# dataset, data folder, seeds, models or output folder (e.g. for a smoke run on toy data); --key=value flags
# must not repeat one of them, as RecBole refuses a key given twice with different values.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="${MODELS:-DiffuRec,DreamRec,SeqDiffRec,DimeRec,DiQDiff,SASRec,BERT4Rec}"
DATASET="${DATASET:-beauty}"
DATA_PATH="${DATA_PATH:-$ROOT/../shared/datasets}"
SEEDS="${SEEDS:-3}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/benchmarks/results/compare_$DATASET}"
PYTHON="${PYTHON:-python}"

cd "$ROOT"
exec "$PYTHON" run_recbole_diffusion.py --compare="$MODELS" --dataset="$DATASET" --data_path="$DATA_PATH" \
    --seeds="$SEEDS" --output_dir="$OUTPUT_DIR" "$@"
