#!/usr/bin/env bash
# Every GPU measurement of issue 24 in one run on one GPU (under 8 minutes on an H100), one table:
#   time to val <= 1.47: shakespeare-char and shakespeare-char-speedrun, side by side
#     (benchmarks/time_to_target.py, each side stopped once it reaches the target);
#   nanogpt bench, bf16, compiled: training step tokens/s and MFU of gpt2-124m and
#     gpt2-124m-speedrun (random tokens);
#   nanogpt bench sample, bf16, compiled: decoding tokens/s, random weights of the same shapes.
# A preset that does not exist (yet) is skipped with a note. Every step has a timeout and the
# whole run a time budget (--budget, seconds): a step left with under 20 s of it is skipped.
#
# Usage: benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--data-dir DIR] [--source FILE]
#                                [--budget SECONDS]
#   --dry-run   the same steps with tiny sizes on the CPU, in about a minute (the tests run it)
#   --out       where results go (default: gpu-check-DATE-TIME): the output, log and status
#               of each step, ttt-result.json, and table.md, the table printed at the end
#   --data-dir  datasets directory (default: $NANOGPT_DATA_DIR, else nanogpt's)
#   --source    tinyshakespeare's input.txt, to prepare shakespeare-char offline (default:
#               ../shared/data/tinyshakespeare/input.txt or shared/... when present)
# Python: $PYTHON, else the repository's .venv/bin/python, else python3.
# Exit status: 0 when every step ran or was skipped, 1 when one failed or timed out.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
DRY=0
OUT=""
DATA_DIR=${NANOGPT_DATA_DIR:-}
SOURCE=""
BUDGET=470
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT=${2:?--out needs a directory}; shift ;;
    --data-dir) DATA_DIR=${2:?--data-dir needs a directory}; shift ;;
    --source) SOURCE=${2:?--source needs a file}; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [[ -n ${PYTHON:-} ]]; then
  PY=$PYTHON
elif [[ -x $REPO/.venv/bin/python ]]; then
  PY=$REPO/.venv/bin/python
else
  PY=python3
fi
OUT=${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA_ARGS=()
if [[ -n $DATA_DIR ]]; then DATA_ARGS=(--data-dir "$DATA_DIR"); fi

if ((DRY)); then
  # a tiny model on the CPU: the same commands, seconds each
  TTT_ARGS=(--dry-run --targets 1.47)
  BENCH_ARGS=(--n-layer 1 --n-head 2 --n-embd 32 --block-size 32 --batch-size 2
    --gradient-accumulation-steps 1 --vocab-size 256 --device cpu --dtype fp32 --no-compile
    --steps 2 --warmup 1)
  SAMPLE_ARGS=(--device cpu --dtype fp32 --no-compile --new-tokens 4 --repeats 1)
  TTT_TIMEOUT=150 BENCH_TIMEOUT=90 SAMPLE_TIMEOUT=90
else
  # evaluations every 100 steps on 50 batches per split (64 x 256 tokens each): finer than
  # the preset's 250 steps, and cheaper than its 200 batches; a process gets 200 s at most
  TTT_ARGS=(--targets 1.47 --eval-interval 100 --eval-iters 50 --timeout 200)
  # 4 micro-batches per step: compiled steps of ~50k tokens, the MFU of the full 40
  BENCH_ARGS=(--dtype bf16 --compile --gradient-accumulation-steps 4 --steps 10 --warmup 3)
  SAMPLE_ARGS=(--dtype bf16 --compile --new-tokens 200 --repeats 3)
  TTT_TIMEOUT=420 BENCH_TIMEOUT=100 SAMPLE_TIMEOUT=80
fi

START=$SECONDS
FAILED=0

# step NAME TIMEOUT CMD...: CMD's stdout into OUT/NAME.out, its stderr into OUT/NAME.log,
# how it ended into OUT/NAME.status
step() {
  local name=$1 limit=$2 rc=0
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  if ((left < 20)); then
    echo "skipped: the ${BUDGET} s budget is spent" >"$OUT/$name.status"
    return
  fi
  if ((limit > left)); then limit=$left; fi
  echo "== $name (at most ${limit} s): ${*:2}" >&2
  timeout --kill-after=15 "$limit" "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" || rc=$?
  if ((rc == 0)); then
    echo ok >"$OUT/$name.status"
  else
    FAILED=1
    if ((rc == 124 || rc == 137)); then
      echo "timed out after ${limit} s" >"$OUT/$name.status"
    else
      echo "failed (exit $rc)" >"$OUT/$name.status"
    fi
    tail -n 5 "$OUT/$name.log" >&2
  fi
}

have_preset() {
  "$PY" -c 'import sys; from nanogpt_cli.config.presets import is_preset
sys.exit(0 if is_preset(sys.argv[1]) else 1)' "$1"
}

# The dataset, prepared once (offline when a copy of tinyshakespeare is at hand).
if [[ -z $SOURCE ]]; then
  for candidate in "$REPO/../shared/data/tinyshakespeare/input.txt" \
    "$REPO/shared/data/tinyshakespeare/input.txt"; do
    if [[ -f $candidate ]]; then SOURCE=$candidate && break; fi
  done
fi
if ! "$PY" -c 'import sys; from nanogpt_cli.paths import dataset_dir
sys.exit(0 if (dataset_dir("shakespeare-char", sys.argv[1] or None) / "meta.json").exists() else 1)' \
  "$DATA_DIR"; then
  SOURCE_ARGS=()
  if [[ -n $SOURCE ]]; then SOURCE_ARGS=(--source "$SOURCE"); fi
  "$PY" -m nanogpt_cli prepare shakespeare-char "${DATA_ARGS[@]}" "${SOURCE_ARGS[@]}" >&2 ||
    echo "warning: shakespeare-char is not prepared: the time-to-target step will fail" >&2
fi

step ttt "$TTT_TIMEOUT" "$PY" benchmarks/time_to_target.py \
  --sides shakespeare-char,shakespeare-char-speedrun --stop-at-targets \
  --json "$OUT/ttt-result.json" "${DATA_ARGS[@]}" "${TTT_ARGS[@]}"

for preset in gpt2-124m gpt2-124m-speedrun; do
  if have_preset "$preset"; then
    step "bench-$preset" "$BENCH_TIMEOUT" "$PY" -m nanogpt_cli bench --preset "$preset" \
      --json "${BENCH_ARGS[@]}"
  else
    echo "skipped: preset not available" >"$OUT/bench-$preset.status"
  fi
done

for preset in gpt2-124m gpt2-124m-speedrun; do
  if have_preset "$preset"; then
    step "sample-$preset" "$SAMPLE_TIMEOUT" "$PY" -m nanogpt_cli bench sample \
      --preset "$preset" --json "${SAMPLE_ARGS[@]}"
  else
    echo "skipped: preset not available" >"$OUT/sample-$preset.status"
  fi
done

"$PY" - "$OUT" "$DRY" "$((SECONDS - START))" <<'EOF' | tee "$OUT/table.md"
import json, sys, time
from pathlib import Path

out, dry, elapsed = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]


def status(name):
    path = out / f"{name}.status"
    return path.read_text().strip() if path.exists() else "not run"


def rate(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def result(name):
    path = out / f"{name}.out"
    try:
        return json.loads(path.read_text()) if status(name) == "ok" else None
    except (OSError, ValueError):
        return None


rows = []
ttt = None
if (out / "ttt-result.json").exists():  # written even when a side failed
    ttt = json.loads((out / "ttt-result.json").read_text())
for side in ttt["sides"] if ttt else []:
    label = f"time to val <= {ttt['targets'][0]:g}"
    if "skipped" in side:
        rows.append((label, side["side"], "-", "-", f"skipped: {side['skipped']}"))
        continue
    t = next(iter(side["targets"].values()))["median"]
    final = side["final_val_median"]
    detail = f"last val {final:.4f}" if final is not None else "no evaluation"
    detail += f", wall {side['wall_median']:.1f} s"
    rows.append((label, side["side"], "not reached" if t is None else f"{t:.1f} s", detail,
                 ", ".join(sorted(set(side["status"])))))
if ttt is None:
    for name in ("shakespeare-char", "shakespeare-char-speedrun"):
        rows.append(("time to val <= 1.47", name, "-", "-", status("ttt")))
for preset in ("gpt2-124m", "gpt2-124m-speedrun"):
    r = result(f"bench-{preset}")
    if r is None:
        rows.append(("train step (bench)", preset, "-", "-", status(f"bench-{preset}")))
        continue
    mfu = "MFU n/a" if r["mfu"] is None else f"MFU {r['mfu']:.1%}"
    compiled = f"compile {r['compile_s']:.0f} s" if r["compile_s"] is not None else "eager"
    detail = (f"{r['step_ms']['median']:.1f} ms/step of {r['tokens_per_step']:,} tokens, "
              f"{r['dtype']}, {compiled}")
    rows.append(("train step (bench)", preset, f"{rate(r['tokens_per_s'])} tok/s, {mfu}", detail, "ok"))
for preset in ("gpt2-124m", "gpt2-124m-speedrun"):
    r = result(f"sample-{preset}")
    if r is None:
        rows.append(("sampling (bench sample)", preset, "-", "-", status(f"sample-{preset}")))
        continue
    compiled = f"compile {r['compile_s']:.0f} s" if r["compile_s"] is not None else "eager"
    detail = (f"batch {r['batch_size']}, {r['new_tokens']} tokens, first token "
              f"{r['first_token_ms']['median']:.1f} ms, {r['dtype']}, {compiled}")
    rows.append(("sampling (bench sample)", preset,
                 f"{rate(r['decode_tokens_per_s']['median'])} tok/s", detail, "ok"))

import torch

device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
print(f"gpu_check{' --dry-run' if dry else ''}: {device}, torch {torch.__version__}, "
      f"{time.strftime('%Y-%m-%d %H:%M')}, {elapsed} s")
print("| measurement | preset | result | detail | status |")
print("|---|---|---:|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
EOF

exit "$FAILED"
