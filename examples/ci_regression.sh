#!/usr/bin/env bash
# A CI regression run: edit the example clip, then fail the job if temporal quality falls short.
#   examples/ci_regression.sh [--backend movie --weights-dir DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
vedit edit "$here/example.mp4" "make it look like a watercolour painting" -o "$out/example.mp4" "$@"
vedit evaluate "$out/example.mp4" --source "$here/example.mp4" --max warp_error=0.2 --json
