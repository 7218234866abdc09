#!/usr/bin/env bash
# Edit every video under a folder, unattended. Safe to rerun: finished clips are skipped, so an interrupted run
# resumes where it stopped. Exit code is non-zero if any clip failed; the JSON summary lists which.
#   examples/edit_folder.sh clips/ "make it Van Gogh" [extra vedit options...]
set -euo pipefail
in_dir=${1:?usage: edit_folder.sh IN_DIR PROMPT [vedit options]}
prompt=${2:?usage: edit_folder.sh IN_DIR PROMPT [vedit options]}
shift 2
out_dir=${OUT_DIR:-"${in_dir%/}.vedit"}
status=0
vedit edit "$in_dir" "$prompt" --output-dir "$out_dir" --json "$@" > "$out_dir.summary.json" || status=$?
echo "summary: $out_dir.summary.json (exit $status)" >&2
exit "$status"
