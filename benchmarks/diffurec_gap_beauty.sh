#!/usr/bin/env bash
# Where does DiffuRec lose to its paper on full Beauty? The leaderboard's DiffuRec (seed 2020, our defaults) tests at
# NDCG@10 0.0398 against the paper's 0.0475. This runs one DiffuRec variant, seed 2020, with the leaderboard's
# shared settings (hidden 128, 4 blocks, early stopping on validation NDCG@10 with patience 10), to compare its
# validation curve and test metrics with the leaderboard's run (benchmarks/results/leaderboard_beauty/runs.jsonl):
#
#   benchmarks/diffurec_gap_beauty.sh init1          # the official N(0, 1) item table (ours: N(0, 0.02^2))
#   benchmarks/diffurec_gap_beauty.sh official_mask  # the official attention: padding keys visible, length 50
#   benchmarks/diffurec_gap_beauty.sh official       # both
#   benchmarks/diffurec_gap_beauty.sh lr_step10      # the official StepLR x0.1, every 10 epochs here (official:
#                                                    # 100, with validation every 20 epochs and patience 5)
#   MODELS=DiffuRec,SASRec benchmarks/diffurec_gap_beauty.sh lr_step10   # the same schedule for SASRec (fairness)
#   MODELS=DiffuRec,SASRec benchmarks/diffurec_gap_beauty.sh plateau1    # x0.1 once, where each model's validation
#                                                    # stalls for 10 epochs; then 10 more epochs of patience
#   MODELS=SASRec,DiffuRec,DiQDiff benchmarks/diffurec_gap_beauty.sh plateau1 --seed=2022   # another seed
#
# plateau1 trains exactly as the leaderboard's run of the same model and seed up to that run's stop, at its plateau:
# where the leaderboard kept that run's last state (benchmarks/results/leaderboard_beauty/checkpoints/*.last.pth,
# from runs finished since 2026-12-06; not committed), plateau1 starts from it (--fork_from) and trains only the
# epochs after the decay; otherwise from its first epoch.
#
# Hours per variant on a CPU (official_mask pads every batch to 50 items: several times slower per epoch).
# Resumable like every --compare: rerun the same command. Writes benchmarks/results/diffurec_gap_beauty/<variant>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VARIANT="${1:-}"
case "$VARIANT" in
    init1) overrides=(--embedding_init_std=1.0) ;;
    official_mask) overrides=(--attention_mask=official) ;;
    official) overrides=(--embedding_init_std=1.0 --attention_mask=official) ;;
    lr_step10) overrides=(--lr_step_size=10 --lr_gamma=0.1) ;;
    plateau1) forks="$ROOT/benchmarks/results/leaderboard_beauty/checkpoints"
              mkdir -p "$forks"
              overrides=(--lr_plateau_decays=1 --lr_gamma=0.1 --fork_from="$forks") ;;
    *) echo "diffurec_gap_beauty.sh: unknown variant '$VARIANT';" \
            "use init1, official_mask, official, lr_step10 or plateau1" >&2
       exit 2 ;;
esac
shift

# The leaderboard's script, with its shared and per-model settings (MODELS may add SASRec and others).
MODELS="${MODELS:-DiffuRec}" SEEDS=1 OUTPUT_DIR="$ROOT/benchmarks/results/diffurec_gap_beauty/$VARIANT" \
    exec "$ROOT/benchmarks/leaderboard_beauty.sh" --popularity_floor=False "${overrides[@]}" "$@"
