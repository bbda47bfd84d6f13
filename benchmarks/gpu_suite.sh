#!/usr/bin/env bash
# One-GPU benchmark suite: the loss, sampler and train benchmarks at Qwen2.5 1.5B-student / 7B-teacher shapes
# with random weights, then one table. Budget: under 9 minutes on one H100/H200 (stages have timeouts).
#
#   benchmarks/gpu_suite.sh [--shape full|tiny] [--out DIR] [--prepare]
#
#   --shape full   (default) the GPU run: the loss's full, chunked and fused paths at issue 16's shape (2048
#                  tokens, V 151,936, D 1536) and at the pair's (4096 tokens, 151,936/152,064 vocab, D
#                  1536/3584), sampler decode roofline for a 1.5B model, train step 1.5B <- 7B
#                  (configs/bench_gpu.py) with the checkpointed and with the fused loss
#   --shape tiny   the same stages with tiny shapes: a CPU dry run (tests/benchmarks runs it)
#   --out DIR      JSON results and logs (default $OUT if set, else benchmarks/out/gpu_suite)
#   --prepare      on a machine with pip access: download the pure-Python wheel the GPU machine lacks
#                  (ml_collections; absl-py and PyYAML, its only needs, are there) into .whl/, git-ignored
#
# Lent GPU machines have jax/flax/optax/orbax/transformers but neither ml_collections nor datasets. The bench
# path never imports datasets; ml_collections comes from .whl/ when it is not installed. From a session that
# holds the device tool:
#   here:    bash benchmarks/gpu_suite.sh --prepare
#   device:  run(command="bash benchmarks/gpu_suite.sh --out $OUT", carry=[".whl"], timeout_s=600)
# Stage timeouts (seconds, --shape full): LOSS_TIMEOUT=120 PAIR_TIMEOUT=60 SAMPLER_TIMEOUT=110
# TRAIN_TIMEOUT=150 FUSED_TIMEOUT=110 (600 each for --shape tiny: cold CPU compiles); a failed or timed-out
# stage is reported in the table and the suite goes on.
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
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
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
  # issue 16's acceptance shape (N=2048, V=151,936, D=1536), every path interleaved in one process; rows of
  # 256 tokens, so that the fused path runs row-wise without its entropy pre-pass (fused_prepass: with it)
  loss_args=(--tokens 2048 --batch 8 --vocab 151936 --hidden 1536 --chunk 256 --reps 5 --interleave
             --paths "full,chunked,fused,fused_prepass,logits_full,logits_fused")
  # the 1.5B <- 7B pair's head at the train config's chunk (1024)
  pair_args=(--tokens 4096 --batch 8 --vocab 151936 --teacher-vocab 152064 --hidden 1536 --teacher-hidden 3584
             --chunk 1024 --reps 5 --interleave --paths "full,chunked,fused")
  sampler_args=(--gpu --batch-sizes "1,16,64" --reps 3)
  train_config=configs/bench_gpu.py train_steps=(--steps 3 --warmup 1)
  t_loss=120 t_pair=60 t_sampler=110 t_train=150 t_fused=110
else
  loss_args=(--tokens 256 --batch 4 --vocab 512 --hidden 64 --chunk 64 --reps 2 --interleave
             --paths "full,chunked,fused,logits_full,logits_fused")
  pair_args=(--tokens 256 --batch 4 --vocab 512 --teacher-vocab 544 --hidden 64 --teacher-hidden 96 --chunk 64
             --reps 1 --interleave --paths "chunked,fused")
  sampler_args=(--gpu --shape tiny --dtype float32 --batch-sizes "1,2" --new-tokens 8 --prompt-len 8 --reps 1)
  train_config=configs/bench_gpu.py:tiny train_steps=(--steps 1 --warmup 1)
  t_loss=600 t_pair=600 t_sampler=600 t_train=600 t_fused=600
fi
fused_config="$train_config"
[[ "$fused_config" == *:* ]] && fused_config+=",loss.fused=True" || fused_config+=":loss.fused=True"

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
"$PY" -c "import sys, jax, flax, optax; print('python', sys.version.split()[0], 'jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, 'devices', jax.devices())" 2>&1 | tee "$out/versions.log"
stage loss "${LOSS_TIMEOUT:-$t_loss}" "$PY" benchmarks/loss_bench.py "${loss_args[@]}" --json "$out/loss.json"
stage loss_pair "${PAIR_TIMEOUT:-$t_pair}" "$PY" benchmarks/loss_bench.py "${pair_args[@]}" --json "$out/loss_pair.json"
stage sampler "${SAMPLER_TIMEOUT:-$t_sampler}" "$PY" benchmarks/sampler_bench.py "${sampler_args[@]}" --json "$out/sampler.json"
stage train "${TRAIN_TIMEOUT:-$t_train}" "$PY" benchmarks/train_bench.py --config="$train_config" "${train_steps[@]}" \
  --json "$out/train.json"
stage train_fused "${FUSED_TIMEOUT:-$t_fused}" "$PY" benchmarks/train_bench.py --config="$fused_config" \
  "${train_steps[@]}" --json "$out/train_fused.json"

"$PY" - "$out" "$shape" "${status[@]}" <<'EOF'
import json, os, sys

out, shape, status = sys.argv[1], sys.argv[2], dict(s.split("=", 1) for s in sys.argv[3:])
def load(name):
    path = os.path.join(out, f"{name}.json")
    return json.load(open(path)) if os.path.isfile(path) else None
rows = []
for name, rc_secs in status.items():
    rc, secs = rc_secs.split(":")
    rows.append((name, "stage", f"exit {rc}, {secs} s" + ("" if rc == "0" else " (FAILED or timed out: see log)")))
for name in ("loss", "loss_pair"):
    by_path = {}
    for r in (load(name) or {"rows": []})["rows"]:
        if "error" in r:
            rows.append((name, r["path"], "error"))
            continue
        by_path[r["path"]] = r
        rows.append((name, f"{r['path']} value+grad, {r['tokens']} tok × V {r['vocab']}",
                     f"{r['time_s'] * 1e3:.1f} ms, work {r['temp_bytes'] / 2**30:.2f} GiB ({r['device']})"))
    for new, old in (("fused", "chunked"), ("fused", "full"), ("fused_prepass", "chunked"), ("chunked", "full"),
                     ("logits_fused", "logits_full")):
        if new in by_path and old in by_path:
            n, o = by_path[new], by_path[old]
            rows.append((name, f"{new} / {old}", f"time {n['time_s'] / o['time_s']:.2f}×, work "
                         f"{n['temp_bytes'] / max(o['temp_bytes'], 1):.1%}"))
sampler = load("sampler")
if sampler:
    for r in sampler["results"]:
        frac = "-" if r["roofline_frac"] is None else f"{100 * r['roofline_frac']:.0f} % of HBM roofline"
        rows.append(("sampler", f"decode batch {r['batch']} ({sampler['shape']})",
                     f"{r['step_ms']:.2f} ms/step, {r['decode_tokens_per_s']:,.0f} tok/s, {frac}"))
for name in ("train", "train_fused"):
    train = load(name)
    if not train:
        continue
    m = train["median"]
    rows.append((name, "shapes", f"student {train['student_params'] / 1e6:,.1f}M, teacher "
                 f"{train['teacher_params'] / 1e6:,.1f}M params, {train['batch']} × ({train['prompt_len']} + "
                 f"{train['response_len']}), {train['device']}"))
    for k in ("time/sample", "time/teacher", "time/student_loss", "time/update", "time/step"):
        rows.append((name, k + (" (whole step)" if k == "time/step" else ""), f"{m[k]:.3f} s"))
    rows.append((name, "tokens/s (incl. sampling)", f"{m['tokens_per_s']:,.0f}"))
    rows.append((name, "MFU (whole step)", "-" if m["mfu"] is None else f"{100 * m['mfu']:.1f} %"))
    if m.get("peak_memory_gib") is not None:
        rows.append((name, "peak device memory", f"{m['peak_memory_gib']:.1f} GiB"))
w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
print(f"\nGPU suite ({shape}); JSON and logs in {out}")
print(f"| {'bench':<{w0}} | {'what':<{w1}} | result |")
print(f"|{'-' * (w0 + 2)}|{'-' * (w1 + 2)}|--------|")
for a, b, c in rows:
    print(f"| {a:<{w0}} | {b:<{w1}} | {c} |")
json.dump({"shape": shape, "status": status, "rows": rows}, open(os.path.join(out, "suite.json"), "w"), indent=2)
EOF
for s in "${status[@]}"; do [[ "$s" == *"=0:"* ]] || exit 1; done
