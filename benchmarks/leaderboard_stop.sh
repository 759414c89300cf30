#!/usr/bin/env bash
# End a session's share of the leaderboard (benchmarks/leaderboard_beauty.sh): stop its workers, write the table
# of every finished run, and commit what the next session resumes from, in ONE commit, then check the
# submission's size. A submission counts every committed version of a file in full and is refused whole above
# 256 MiB of diffs or 512 MiB packed; a run's state is 30-60 MB, so states are committed once, here, at the stop.
#
#   benchmarks/leaderboard_stop.sh BASE     # BASE: the commit the session started from (git log at its start)
#
# A worker killed mid-epoch loses that epoch only: its state on disk is that of its last validation (written
# atomically). Commit your other changes first: this commits the leaderboard's folder alone.
set -euo pipefail
base="${1:?usage: benchmarks/leaderboard_stop.sh BASE (the commit this session started from)}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUTPUT_DIR:-$ROOT/benchmarks/results/leaderboard_beauty}"
cd "$ROOT"
git rev-parse --verify -q "$base^{commit}" > /dev/null || { echo "not a commit: $base" >&2; exit 2; }
earlier=$(git log --format=%h "$base..HEAD" -- "$OUT/progress")
if [[ -n "$earlier" ]]; then
    echo "progress states were committed since $base already (commit(s) $earlier): each version counts in full." >&2
    echo "Fold them into one first (git reset --soft $base, then commit again), then run this again." >&2
    exit 1
fi

pattern="--output_dir=$OUT"
if pkill -f -- "$pattern"; then
    for _ in $(seq 60); do pgrep -f -- "$pattern" > /dev/null || break; sleep 1; done
    pgrep -f -- "$pattern" > /dev/null && { echo "workers still running after 60 s" >&2; exit 1; }
    echo "workers stopped"
fi
OUTPUT_DIR="$OUT" "$ROOT/benchmarks/leaderboard_beauty.sh" --report_only=True > /dev/null
# leaderboard_beauty.sh hid the tracked states' changes from git (skip-worktree): show them again, to commit now
git ls-files -z -- "$OUT/progress" | xargs -0 -r git update-index --no-skip-worktree
git add -A "$OUT"
states=("$OUT"/progress/*.pth)
[[ -e "${states[0]}" ]] && git add -f "${states[@]}"
message="Leaderboard: finished runs and the state of the runs in progress at the stop ($(date -u +%FT%H:%MZ))"
git commit -q -m "$message" || echo "nothing to commit"
git show --stat --format="%h %s" HEAD
"$ROOT/benchmarks/submission_size.sh" "$base"
