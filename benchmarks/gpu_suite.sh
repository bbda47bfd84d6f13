#!/usr/bin/env bash
# One-GPU benchmark suite: the loss, sampler and train benchmarks at Qwen2.5 1.5B-student / 7B-teacher shapes
# with random weights, then one table. Budget: under 8 minutes on one H100 (stages have timeouts).
#
#   benchmarks/gpu_suite.sh [--shape full|tiny] [--out DIR] [--prepare]
#
#   --shape full   (default) the GPU run: loss at 4096 tokens × 151,936/152,064 vocab, sampler decode roofline
#                  for a 1.5B model, train step 1.5B ← 7B (configs/bench_gpu.py)
#   --shape tiny   the same three paths with tiny shapes: a CPU dry run (tests/benchmarks runs it)
#   --out DIR      JSON results and logs (default $OUT if set, else benchmarks/out/gpu_suite)
#   --prepare      on a machine with pip access: download the pure-Python wheel the GPU machine lacks
#                  (ml_collections; absl-py and PyYAML, its only needs, are there) into .whl/, git-ignored
#
# Lent GPU machines have jax/flax/optax/orbax/transformers but neither ml_collections nor datasets. The bench
# path never imports datasets; ml_collections comes from .whl/ when it is not installed. From a session that
# holds the device tool:
#   here:    bash benchmarks/gpu_suite.sh --prepare
#   device:  run(command="bash benchmarks/gpu_suite.sh --out $OUT", carry=[".whl"], timeout_s=600)
# Stage timeouts (seconds, --shape full): LOSS_TIMEOUT=90 SAMPLER_TIMEOUT=150 TRAIN_TIMEOUT=210, so 7.5 min
# at most (600 each for --shape tiny: cold CPU compiles); a failed or timed-out stage is reported in the
# table and the suite goes on.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

shape=full
out="${OUT:-benchmarks/out/gpu_suite}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --shape) shape="$2"; shift 2 ;;
    --shape=*) shape="${1#*=}"; shift ;;
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --prepare)
      grep -qs '^/.whl/$' .git/info/exclude || { mkdir -p .git/info && echo '/.whl/' >> .git/info/exclude; }
      exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
        -d .whl ml_collections==1.1.0 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
[[ "$shape" == full || "$shape" == tiny ]] || { echo "--shape must be full or tiny" >&2; exit 2; }

PY="${PYTHON:-python3}"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  if compgen -G ".whl/ml_collections-*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/tsdkd_site .whl/ml_collections-*.whl \
      || exit 1
    export PYTHONPATH="/tmp/tsdkd_site:$PYTHONPATH"
  else
    echo "ml_collections is missing: run 'bash benchmarks/gpu_suite.sh --prepare' where pip works, carry .whl" >&2
    exit 2
  fi
fi
mkdir -p "$out"

if [[ "$shape" == full ]]; then
  loss_args=(--tokens 4096 --batch 8 --vocab 151936 --teacher-vocab 152064 --hidden 1536 --teacher-hidden 3584
             --chunk 1024 --reps 5)
  sampler_args=(--gpu --batch-sizes "1,16,64" --reps 3)
  train_args=(--config=configs/bench_gpu.py --steps 3 --warmup 1)
  t_loss=90 t_sampler=150 t_train=210
else
  loss_args=(--tokens 256 --batch 4 --vocab 512 --teacher-vocab 544 --hidden 64 --teacher-hidden 96 --chunk 64
             --reps 2)
  sampler_args=(--gpu --shape tiny --dtype float32 --batch-sizes "1,2" --new-tokens 8 --prompt-len 8 --reps 1)
  train_args=(--config=configs/bench_gpu.py:tiny --steps 1 --warmup 1)
  t_loss=600 t_sampler=600 t_train=600
fi

status=()
stage() {  # stage NAME TIMEOUT CMD...: run, log, remember the exit status
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  echo "=== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  status+=("$name=$rc:$((SECONDS - t0))")
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}
stage loss "${LOSS_TIMEOUT:-$t_loss}" "$PY" benchmarks/loss_bench.py "${loss_args[@]}" --json "$out/loss.json"
stage sampler "${SAMPLER_TIMEOUT:-$t_sampler}" "$PY" benchmarks/sampler_bench.py "${sampler_args[@]}" --json "$out/sampler.json"
stage train "${TRAIN_TIMEOUT:-$t_train}" "$PY" benchmarks/train_bench.py "${train_args[@]}" --json "$out/train.json"

"$PY" - "$out" "$shape" "${status[@]}" <<'EOF'
import json, os, sys

out, shape, status = sys.argv[1], sys.argv[2], dict(s.split("=", 1) for s in sys.argv[3:])
def load(name):
    path = os.path.join(out, f"{name}.json")
    return json.load(open(path)) if os.path.isfile(path) else None
rows = []
for name in ("loss", "sampler", "train"):
    rc, secs = status[name].split(":")
    rows.append((name, "stage", f"exit {rc}, {secs} s" + ("" if rc == "0" else " (FAILED or timed out: see log)")))
loss, sampler, train = load("loss"), load("sampler"), load("train")
if loss:
    for r in loss["rows"]:
        if "error" in r:
            rows.append(("loss", r["path"], "error"))
        else:
            rows.append(("loss", f"{r['path']} value+grad, {r['tokens']} tok × V {r['vocab']}",
                         f"{r['time_s'] * 1e3:.1f} ms, work {r['temp_bytes'] / 2**30:.2f} GiB ({r['device']})"))
if sampler:
    for r in sampler["results"]:
        frac = "-" if r["roofline_frac"] is None else f"{100 * r['roofline_frac']:.0f} % of HBM roofline"
        rows.append(("sampler", f"decode batch {r['batch']} ({sampler['shape']})",
                     f"{r['step_ms']:.2f} ms/step, {r['decode_tokens_per_s']:,.0f} tok/s, {frac}"))
if train:
    m = train["median"]
    rows.append(("train", "shapes", f"student {train['student_params'] / 1e6:,.1f}M, teacher "
                 f"{train['teacher_params'] / 1e6:,.1f}M params, {train['batch']} × ({train['prompt_len']} + "
                 f"{train['response_len']}), {train['device']}"))
    for k in ("time/sample", "time/teacher", "time/student_loss", "time/update", "time/step"):
        rows.append(("train", k + (" (fused)" if k == "time/step" else ""), f"{m[k]:.3f} s"))
    rows.append(("train", "tokens/s (incl. sampling)", f"{m['tokens_per_s']:,.0f}"))
    rows.append(("train", "MFU (fused step)", "-" if m["mfu"] is None else f"{100 * m['mfu']:.1f} %"))
    if m.get("peak_memory_gib") is not None:
        rows.append(("train", "peak device memory", f"{m['peak_memory_gib']:.1f} GiB"))
w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
print(f"\nGPU suite ({shape}); JSON and logs in {out}")
print(f"| {'bench':<{w0}} | {'what':<{w1}} | result |")
print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|--------|")
for a, b, c in rows:
    print(f"| {a:<{w0}} | {b:<{w1}} | {c} |")
json.dump({"shape": shape, "status": status, "rows": rows}, open(os.path.join(out, "suite.json"), "w"), indent=2)
EOF
for s in "${status[@]}"; do [[ "$s" == *"=0:"* ]] || exit 1; done
