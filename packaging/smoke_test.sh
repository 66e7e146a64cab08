#!/usr/bin/env bash
# Smoke-test the BUILT program (Linux / CI): dist/SegFormerStudio/SegFormerStudio
#
#   packaging/smoke_test.sh [DIST_FOLDER]        (default: dist/SegFormerStudio)
#
# 1. --self-test under `env -i` with PATH set to an empty folder: no virtual environment, no
#    PYTHONPATH, no HOME, no display, no python on PATH — only the bundled Python can run it. Every
#    stage line must say ok.
# 2. The windowed case: stdout and stderr closed (what a console-less Windows build sees); the
#    program must still run (here: `demo`) and write its output to logs/console-*.log.
# 3. resources/ made it into the bundle file for file.
# 4. Training on two processes (train.devices=2, DDP over gloo): Lightning starts the second by
#    re-executing the program's command, so the packaged program must run itself that way.
set -euo pipefail
cd "$(dirname "$0")/.."
folder="${1:-dist/SegFormerStudio}"
exe="$folder/SegFormerStudio"
[ -x "$exe" ] || { echo "smoke: $exe not found; run python packaging/build.py first" >&2; exit 1; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
empty_path="$scratch/empty-path"  # PATH with nothing on it: no python, no tools
mkdir -p "$empty_path"

echo "smoke: 1/4 self-test under env -i (empty PATH)"
start=$(date +%s)
set +e
env -i PATH="$empty_path" TMPDIR="$scratch" "$exe" --self-test 2>"$scratch/stderr.txt" | tee "$scratch/out.txt"
code=${PIPESTATUS[0]}
set -e
echo "smoke: self-test exit $code in $(( $(date +%s) - start )) s"
if [ "$code" -ne 0 ]; then
    echo "---- stderr (last 60 lines) ----" >&2; tail -n 60 "$scratch/stderr.txt" >&2; exit 1
fi
for stage in demo train predict evaluate gui; do
    grep -Eq "^self-test: $stage ok \(" "$scratch/out.txt" || { echo "smoke: no ok line for $stage" >&2; exit 1; }
done

echo "smoke: 2/4 no stdout/stderr (windowed): output goes to the console log"
home="$scratch/home"
env -i PATH="$empty_path" TMPDIR="$scratch" SEGFORMER_STUDIO_HOME="$home" \
    "$exe" demo "$scratch/demo data" --cases 2 --slices 4 >&- 2>&-
[ -f "$scratch/demo data/train.csv" ] || { echo "smoke: demo wrote no dataset" >&2; exit 1; }
ls "$home"/logs/console-*.log >/dev/null || { echo "smoke: no console log in $home/logs" >&2; exit 1; }

echo "smoke: 3/4 resources bundled"
if [ -d resources ]; then
    missing=0
    while IFS= read -r -d '' f; do
        [ -f "$folder/_internal/$f" ] || { echo "smoke: missing $f" >&2; missing=1; }
    done < <(find resources -type f ! -path '*/__pycache__/*' -print0)
    [ "$missing" -eq 0 ] || exit 1
fi
echo "smoke: 4/4 two training processes (DDP) started by the program itself"
env -i PATH="$empty_path" TMPDIR="$scratch" SEGFORMER_STUDIO_HOME="$home" \
    "$exe" demo "$scratch/ddp data" --cases 4 --slices 8 >/dev/null 2>&1
set +e
env -i PATH="$empty_path" TMPDIR="$scratch" SEGFORMER_STUDIO_HOME="$home" \
    "$exe" train --data "$scratch/ddp data" --run-dir "$scratch/ddp run" --set data.image_size=64 \
    --set data.num_folds=2 --set train.epochs=1 --set train.batch_size=2 --set train.device=cpu \
    --set train.tune_postprocess=false --set train.devices=2 >"$scratch/ddp.txt" 2>&1
code=$?
set -e
if [ "$code" -ne 0 ] || ! grep -q '"status": "finished"' "$scratch/ddp run/run.json"; then
    echo "smoke: the two-process run failed (exit $code)" >&2; tail -n 40 "$scratch/ddp.txt" >&2; exit 1
fi
[ "$(grep -c '^run folder:' "$scratch/ddp.txt")" -eq 1 ] || { echo "smoke: more than one process reported" >&2; exit 1; }
echo "smoke: passed ($(du -sh "$folder" | cut -f1) in $folder)"
