#!/usr/bin/env bash
# The GPU check: everything this project has never run on a GPU, in at most 8 minutes on one GPU.
#
#   scripts/gpu_check.sh [--out FILE]     # run it (needs a CUDA GPU); numbers into FILE (bench/gpu_check.md)
#   scripts/gpu_check.sh --dry-run        # check every command it would run, without a GPU (tests do this)
#
# Steps, each under its own time limit (the limits add up to 8 minutes):
#   1. the CUDA-only tests (pytest -m cuda: fused cuDNN unroll and chunked bf16 loss equal to the reference)
#   2. bf16 training of the default model (seq2seq-train, trainer=gpu, bf16-mixed)
#   3. a 1-GPU DDP run (trainer=ddp, one process)
#   4. the GPU benchmark against JoeyNMT (scripts/benchmark/run.py --device cuda, bf16; its table)
# A failing step is recorded in the file and the next one still runs; the exit status is that of the worst.
# A dry run composes each training config with Hydra (--cfg job), collects the CUDA tests, parses the
# benchmark's options and checks the tools exist: what can be checked without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
OUT=bench/gpu_check.md
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (use --dry-run, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done

WORK=bench/gpu_check
TRAIN_BF16=(python -m seq2seq.train trainer=gpu trainer.precision=bf16-mixed logger=csv
  trainer.max_time=00:00:01:30 "hydra.run.dir=$WORK/bf16")
TRAIN_DDP=(python -m seq2seq.train trainer=ddp trainer.devices=1 trainer.precision=bf16-mixed logger=csv
  trainer.max_steps=300 trainer.max_time=00:00:01:00 "hydra.run.dir=$WORK/ddp")
BENCH=(--device cuda --precision bf16 --updates 100 --warmup 10 --decode-sentences 200 --threads 4
  --work "$WORK/bench" --out "$WORK/bench.json")

status=0
fail() { echo "gpu_check.sh: $*" >&2; status=1; }

if [ "$DRY" = 1 ]; then
  for tool in timeout nvidia-smi; do
    command -v "$tool" >/dev/null || echo "note: $tool is not on PATH here (needed on the GPU machine)"
  done
  [ -x "$PY" ] || fail "no python at $PY (make setup, or PY=...)"
  "$PY" -m pytest --collect-only -q -m cuda tests/test_cuda.py >/dev/null || fail "CUDA tests do not collect"
  for cmd in "TRAIN_BF16" "TRAIN_DDP"; do
    declare -n argv="$cmd"
    "$PY" -m seq2seq.train "${argv[@]:3}" --cfg job >/dev/null || fail "$cmd: the config does not compose"
  done
  PYTHONPATH=scripts/benchmark "$PY" -c 'import sys; from run import parse_args; parse_args(sys.argv[1:])' \
    "${BENCH[@]}" || fail "the benchmark's options do not parse"
  [ $status = 0 ] && echo "gpu_check.sh --dry-run: all 4 steps check out"
  exit $status
fi

"$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' \
  || { echo "gpu_check.sh: torch sees no CUDA GPU here; --dry-run checks the commands without one" >&2; exit 1; }
mkdir -p "$WORK" "$(dirname "$OUT")"
{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
  git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /'
  echo '```'
} > "$OUT"

step() {  # step NAME SECONDS COMMAND...: run with a limit, log it, record its wall time and exit status
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  [ $rc = 0 ] || status=1
  printf '\n## %s\n\n`%s` — exit %s, %s s (limit %s s); log: %s\n' \
    "$name" "$*" "$rc" "$((SECONDS - start))" "$limit" "$WORK/$name.log" >> "$OUT"
  return $rc
}

results() {  # the numbers of a seq2seq-train run directory's results.json
  "$PY" - "$1" >> "$OUT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1] + "/results.json"))
t, m = r.get("train", {}), r.get("metrics", {})
print(f"\n- status {r.get('status')}, {t.get('steps')} steps in {t.get('wall_s', 0):.0f} s, "
      f"{t.get('tokens_per_s', 0):,.0f} target tokens/s; test BLEU {m.get('test/bleu')}, val BLEU {m.get('val/bleu')}")
EOF
}

step cuda-tests 60 "$PY" -m pytest -q -m cuda tests/test_cuda.py
tail -n 1 "$WORK/cuda-tests.log" | sed 's/^/\n    /' >> "$OUT"
step train-bf16 150 "${TRAIN_BF16[@]/#python/$PY}" && results "$WORK/bf16"
step ddp-1gpu 90 "${TRAIN_DDP[@]/#python/$PY}" && results "$WORK/ddp"
step benchmark 180 "$PY" scripts/benchmark/run.py "${BENCH[@]}"
sed -n '/^|/p' "$WORK/benchmark.log" >> "$OUT"
echo "wrote $OUT"
exit $status
