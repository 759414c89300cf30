#!/usr/bin/env bash
# The converged Beauty leaderboard (issue 12): every sequential diffusion model beside RecBole's SASRec and
# BERT4Rec and the popularity floor, on the full Amazon Beauty data, each trained to convergence (early stopping
# on validation NDCG@10, patience 10, validation after every epoch), at one common size (hidden 128; DiffuRec
# and DiQDiff at their papers' 4 blocks), 3 seeds for SASRec and for the best diffusion model (the paired test):
# DiffuRec and DiQDiff, level on validation after seed 2020 (0.0539 and 0.0537), both get 3; 2 for the others.
# DimeRec, whose yaml values are ours (no official code), runs with the best of a beauty5k sweep (its yaml here).
#
#   benchmarks/leaderboard_beauty.sh            # hours per run on a CPU: rerun the same command to continue
#
# On a 2-core machine, two workers (one thread each) share the runs and the folder: start the same command twice.
# Each run is claimed by one worker (output_dir/progress/*.claim); each worker takes the next unclaimed run (the
# paired test's first: every seed of SASRec, DiffuRec and DiQDiff, in seed-major order; then the other models' seeds)
# and reads back what the other finished:
#   benchmarks/leaderboard_beauty.sh & benchmarks/leaderboard_beauty.sh &
#   benchmarks/leaderboard_beauty.sh --report_only=True        # the whole table of what has finished
#
# Resumable at two levels: finished runs are read back from runs.jsonl, and a run cut short continues from its
# last validated epoch (output_dir/progress/), by whichever worker claims it next. A machine is not kept between
# sessions and progress/ is ignored by git: a session that stops with runs in progress commits their state ONCE,
# in its last commit (a submission counts every committed version of a file in full, and is refused whole above
# 256 MiB of diffs: the stop of 2026-12-06 08:37 lost a whole session's work that way), with the files of runs
# that have finished since removed. One command does it all and checks the size:
#   benchmarks/leaderboard_stop.sh <the commit the session started from>
# Each finished run's best model is kept in output_dir/checkpoints/ (not committed), to evaluate it again later
# (e.g. with another sampler), and its last state (*.last.pth), to continue it past its plateau
# (benchmarks/diffurec_gap_beauty.sh plateau1 forks from it). Writes benchmarks/results/leaderboard_beauty/comparison.{md,csv,png} and runs.jsonl. MODELS, SEEDS, OUTPUT_DIR and PYTHON can be set from the environment; per-model seed counts
# in SEEDS for models not in MODELS are dropped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIGS="$ROOT/benchmarks/configs/leaderboard_beauty"
MODELS_SET="${MODELS:-}"
MODELS="${MODELS:-SASRec,DiffuRec,DiQDiff,BERT4Rec,DreamRec,SeqDiffRec,DimeRec}"
FIRST="${FIRST-SASRec,DiffuRec,DiQDiff}"
SEEDS="${SEEDS:-2,DiffuRec:3,DiQDiff:3,SASRec:3}"

per_model=""
for file in "$CONFIGS"/*.yaml; do
    model="$(basename "$file" .yaml)"
    [[ "$model" == shared || ",$MODELS," != *",$model,"* ]] && continue
    per_model="${per_model:+$per_model,}$model:$file"
done

seeds="${SEEDS%%,*}"
IFS=, read -ra counts <<< "${SEEDS#*,}"
[[ "$SEEDS" == *,* ]] || counts=()
for count in "${counts[@]}"; do
    [[ ",$MODELS," == *",${count%%:*},"* ]] && seeds="$seeds,$count"
done

# The states the last session committed are tracked files: keep `git add -A` and `git commit -a` from committing
# each new version of them (every version counts in full in a submission; leaderboard_stop.sh commits them once).
out="${OUTPUT_DIR:-$ROOT/benchmarks/results/leaderboard_beauty}"
(cd "$ROOT" && git ls-files -z -- "$out/progress" 2> /dev/null | xargs -0 -r git update-index --skip-worktree) || true

# The paired test's runs first: every seed of the models in FIRST (default: those with 3 seeds), then the rest in
# seed-major order. Without this pass a worker would start the second seeds of the other models before the third
# seeds of these, and leave a third seed's saved state waiting behind them. Skipped when MODELS is set.
if [[ -z "${MODELS_SET:-}" && -n "$FIRST" && " $* " != *" --report_only=True "* ]]; then
    MODELS="$FIRST" SEEDS="$SEEDS" OUTPUT_DIR="$out" "$0" "$@"
fi

# compare_beauty.sh runs --compare on Beauty; this script adds the leaderboard's configs, seeds and folder.
MODELS="$MODELS" SEEDS="$seeds" OUTPUT_DIR="$out" \
    exec "$ROOT/benchmarks/compare_beauty.sh" --config_files="$CONFIGS/shared.yaml" --model_config="$per_model" \
    --keep_checkpoints=True "$@"
