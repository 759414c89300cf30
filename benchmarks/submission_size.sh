#!/usr/bin/env bash
# How big the commits since BASE are, as a submission: packed (as git sends them) and their diffs added up, with
# each binary file's old and new sizes counted in full (a deletion too). A session's submission is refused whole
# above 512 MiB packed or 256 MiB of diffs, and a file added in one commit and changed or removed in a later one
# counts every time: commit the leaderboard's progress states (30-60 MB each) once, in the session's last commit.
#
#   benchmarks/submission_size.sh BASE      # BASE: the commit the session started from (git log at its start)
#
# Prints both sizes and exits 1 when either is past 90% of its limit.
set -euo pipefail
base="${1:?usage: benchmarks/submission_size.sh BASE (the commit this session started from)}"
cd "$(dirname "$0")/.."
git rev-parse --verify -q "$base^{commit}" > /dev/null || { echo "not a commit: $base" >&2; exit 2; }

packed=$(printf 'HEAD\n^%s\n' "$base" | git pack-objects --revs --stdout -q | wc -c)
text=$(git log -p --format= "$base..HEAD" | wc -c)
binary=0
for commit in $(git rev-list "$base..HEAD"); do
    # --numstat marks a binary file with "-"; its blobs before and after are counted whole
    while IFS=$'\t' read -r added removed path; do
        [[ "$added" == "-" ]] || continue
        for blob in "$commit^:$path" "$commit:$path"; do
            size=$(git cat-file -s "$blob" 2> /dev/null || echo 0)
            binary=$((binary + size))
        done
    done < <(git diff-tree -r --numstat --no-commit-id --no-renames "$commit^" "$commit")
done
diffs=$((text + binary))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "commits since $base: $(git rev-list --count "$base..HEAD")"
echo "packed: $(mib "$packed") of 512 MiB"
echo "diffs:  $(mib "$diffs") of 256 MiB ($(mib "$binary") of it binary files, counted whole)"
if (( packed > 512 * 1048576 * 9 / 10 || diffs > 256 * 1048576 * 9 / 10 )); then
    echo "too close to a limit: squash the commits of progress states into one, or commit fewer states" >&2
    exit 1
fi
