#!/usr/bin/env bash
# Cloud TPU VM slices for tsdkd_jax: queued-resource create, setup, run on every worker, resume until done.
#
#   launch/tpu_vm.sh [--dry-run] COMMAND [options] [-- trainer args]
#
# Commands
#   create             queued resource + TPU VM (waits until ACTIVE); --spot or --best-effort
#   setup              Python 3.11 venv, jax[tpu] and this repo on all workers; --models downloads them too
#   run                the same trainer command on --worker=all; each worker tees ~/tsdkd_logs/run.log
#   resume-until-done  loop: (re)create + setup when missing or preempted, run, until <workdir>/DONE exists
#   ssh                interactive shell (or `-- cmd`) on --worker (default 0)
#   logs               last --lines of ~/tsdkd_logs/run.log on --worker (default all)
#   status             queued-resource state
#   delete             queued resource and its TPU VM
#
# Options (env in brackets)
#   --name NAME [TPU_NAME]              queued-resource id and node id (default tsdkd)
#   --zone ZONE [ZONE]                  required
#   --project PROJECT [PROJECT]         default: gcloud's configured project
#   --accelerator TYPE [ACCELERATOR]    e.g. v5p-32, v6e-16 (default v5p-8)
#   --runtime-version V [RUNTIME_VERSION]  default from the accelerator family
#   --spot | --best-effort              provisioning tier (best-effort uses `gcloud alpha`)
#   --repo URL [REPO_URL]               git URL to clone on workers (default: this checkout's origin)
#   --ref REF [REPO_REF]                branch/tag/commit (default: this checkout's HEAD commit)
#   --workdir DIR [WORKDIR]             run folder; gs://... required for resume-until-done
#   --models "ORG/A ORG/B" [MODELS]      setup: hub models to download to ~/models/A, ~/models/B on every
#                                       worker ($TSDKD_MODELS of the configs); a re-created slice gets them again.
#                                       Gated ones need `hf auth login` here: the token file [HF_TOKEN_PATH] is
#                                       copied to the workers
#   --worker N|all                      ssh/logs target
#   --lines N                           logs: lines to show (default 100)
#   --max-attempts N                    resume-until-done: runs before giving up (default 20)
#   --poll SECONDS                      wait between state checks (default 60)
#   --dry-run                           print every command instead of running it; query commands
#                                       report ACTIVE / not done so one pass of each loop is shown
#
# Completion contract: the trainer's host 0 writes <workdir>/DONE after the final export
# (tsdkd_jax.parallel.distributed.mark_done); resume-until-done stops when that file exists.
set -euo pipefail

DRY_RUN=0
NAME="${TPU_NAME:-tsdkd}"
ZONE="${ZONE:-}"
PROJECT="${PROJECT:-}"
ACCELERATOR="${ACCELERATOR:-v5p-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
TIER=""
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-}"
WORKDIR="${WORKDIR:-}"
MODELS="${MODELS:-}"
WORKER=""
LINES=100
MAX_ATTEMPTS=20
POLL=60
JAX_VERSION="0.10.2"
# Paths on the workers: the tilde must reach the remote shell unexpanded.
# shellcheck disable=SC2088
REMOTE_REPO='~/tsdkd_jax'
# shellcheck disable=SC2088
REMOTE_VENV='~/tsdkd-venv'
# shellcheck disable=SC2088
REMOTE_LOGS='~/tsdkd_logs'
TRAINER_ARGS=()

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }
note() { echo "# $*" >&2; }

# Commands are echoed on fd 3 (the real stdout) so that $(query ...) captures only the query's answer.
exec 3>&1
# Words are single-quoted only when needed (as Python's shlex.quote does), so lines read well.
show() {
  local word line=""
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      line+=" $word"
    else
      line+=" '${word//\'/\'\"\'\"\'}'"
    fi
  done
  echo "${line# }" >&3
}

# Print a command as one copy-pasteable line; run it unless --dry-run.
run() {
  show "$@"
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

# Like run, for queries whose output the script reads; dry-run answers with $1.
query() {
  local fake="$1"; shift
  show "$@"
  if [[ "$DRY_RUN" == 1 ]]; then echo "$fake"; else "$@"; fi
}

gcloud_flags() {
  GFLAGS=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then GFLAGS+=(--project="$PROJECT"); fi
}

default_runtime() {
  case "$ACCELERATOR" in
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v4-*) echo "tpu-ubuntu2204-base" ;;
    *) die "no default --runtime-version for accelerator $ACCELERATOR; pass one" ;;
  esac
}

qr_state() {
  # Prints the queued-resource state, or NOT_FOUND; dry-run answers $1.
  local state
  if ! state=$(query "$1" gcloud compute tpus queued-resources describe "$NAME" "${GFLAGS[@]}" \
    --format='value(state.state)' 2>/dev/null); then
    state=NOT_FOUND
  fi
  echo "${state:-NOT_FOUND}"
}

cmd_create() {
  [[ -n "$RUNTIME_VERSION" ]] || RUNTIME_VERSION=$(default_runtime)
  local gcloud=(gcloud)
  local tier=()
  case "$TIER" in
    spot) tier=(--spot) ;;
    best-effort) gcloud=(gcloud alpha); tier=(--best-effort) ;;
  esac
  run "${gcloud[@]}" compute tpus queued-resources create "$NAME" --node-id="$NAME" "${GFLAGS[@]}" \
    --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME_VERSION" "${tier[@]}"
  wait_active
}

wait_active() {
  local state
  while true; do
    state=$(qr_state ACTIVE)
    case "$state" in
      ACTIVE) note "queued resource $NAME is ACTIVE"; return 0 ;;
      FAILED | SUSPENDED | NOT_FOUND) die "queued resource $NAME is $state (see: gcloud compute tpus queued-resources describe $NAME)" ;;
      *) note "queued resource $NAME is $state; checking again in ${POLL}s"; sleep "$POLL" ;;
    esac
  done
}

ssh_all() {
  # ssh_all WORKER COMMAND: one command on one worker or all.
  run gcloud compute tpus tpu-vm ssh "$NAME" "${GFLAGS[@]}" --worker="$1" --command="$2"
}

cmd_setup() {
  if [[ -z "$REPO_URL" ]]; then
    REPO_URL=$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null) \
      || die "--repo URL needed: this checkout has no 'origin' remote"
  fi
  if [[ -z "$REPO_REF" ]]; then
    REPO_REF=$(git -C "$(dirname "$0")/.." rev-parse HEAD 2>/dev/null) || REPO_REF=main
  fi
  local qurl qref models="" m
  qurl=$(printf '%q' "$REPO_URL")
  qref=$(printf '%q' "$REPO_REF")
  # Models go to ~/models/<name without org>, where configs/common.py looks ($TSDKD_MODELS); `hf download`
  # resumes and skips files already there, so a re-run of setup is cheap.
  for m in $MODELS; do
    [[ "$m" == */* ]] || die "--models takes hub ids like Qwen/Qwen2.5-1.5B-Instruct, got $m"
    models+=" $REMOTE_VENV/bin/hf download --quiet $(printf '%q' "$m") --local-dir ~/models/$(printf '%q' "${m##*/}");"
  done
  # Gated models (Gemma) need a hub token: this machine's saved one (`hf auth login`) is copied, as a file,
  # to every worker (never put on a command line).
  local token="${HF_TOKEN_PATH:-${HF_HOME:-$HOME/.cache/huggingface}/token}"
  if [[ -n "$MODELS" && -f "$token" ]]; then
    ssh_all all "mkdir -p ~/.cache/huggingface"
    run gcloud compute tpus tpu-vm scp "$token" "$NAME:~/.cache/huggingface/token" "${GFLAGS[@]}" --worker=all
  fi
  # Runtime images ship Python 3.10; jax 0.10 needs >= 3.11, so uv provides it.
  ssh_all all "set -euo pipefail; \
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; \
export PATH=\$HOME/.local/bin:\$PATH; \
[ -d $REMOTE_REPO/.git ] || git clone --quiet $qurl $REMOTE_REPO; \
git -C $REMOTE_REPO fetch --quiet origin $qref; \
git -C $REMOTE_REPO checkout --quiet --detach FETCH_HEAD; \
uv venv --quiet --allow-existing --python 3.11 $REMOTE_VENV; \
uv pip install --quiet --python $REMOTE_VENV/bin/python \"jax[tpu]==$JAX_VERSION\" -e $REMOTE_REPO'[gcs]';$models \
$REMOTE_VENV/bin/python -c \"import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0])\""
}

trainer_command() {
  [[ -n "$WORKDIR" ]] || die "--workdir needed"
  local args="" a
  for a in "${TRAINER_ARGS[@]}"; do args+=" $(printf '%q' "$a")"; done
  # Stop a previous run's trainer on this worker first (a stale one holds the TPU); log to run.log and
  # return the trainer's own exit status.
  echo "mkdir -p $REMOTE_LOGS; \
if [ -f $REMOTE_LOGS/run.pid ]; then kill \$(cat $REMOTE_LOGS/run.pid) 2>/dev/null && sleep 10; fi; \
cd $REMOTE_REPO; \
$REMOTE_VENV/bin/python -m tsdkd_jax.main --workdir=$(printf '%q' "$WORKDIR")$args \
> >(tee -a $REMOTE_LOGS/run.log) 2>&1 & echo \$! > $REMOTE_LOGS/run.pid; wait \$!"
}

cmd_run() {
  local command
  command=$(trainer_command)
  ssh_all all "$command"
}

is_done() {
  # Succeeds when <workdir>/DONE exists on GCS (dry-run: never, so the loop body is shown once).
  show gcloud storage ls "$WORKDIR/DONE"
  [[ "$DRY_RUN" == 0 ]] && gcloud storage ls "$WORKDIR/DONE" >/dev/null 2>&1
}

provision() {
  # provision STATE RESETUP: an ACTIVE slice with this repo (and --models) installed; RESETUP=1 re-runs
  # setup on an ACTIVE slice (the previous attempt's setup failed).
  case "$1" in
    ACTIVE) if [[ "$2" == 1 ]]; then cmd_setup; fi ;;
    NOT_FOUND) cmd_create; cmd_setup ;;
    FAILED | SUSPENDING | SUSPENDED)
      # Preempted (spot / best-effort) or failed: delete and queue again; the run resumes from checkpoints.
      run gcloud compute tpus queued-resources delete "$NAME" "${GFLAGS[@]}" --force --quiet
      cmd_create
      cmd_setup ;;
    *) wait_active; cmd_setup ;;
  esac
}

cmd_resume_until_done() {
  [[ "$WORKDIR" == gs://* ]] || die "resume-until-done needs a gs:// --workdir: a re-created TPU VM has empty disks"
  local attempt=0 state rc resetup=0
  while true; do
    if is_done; then note "$WORKDIR/DONE found: run complete"; return 0; fi
    if (( attempt >= MAX_ATTEMPTS )); then die "no DONE after $MAX_ATTEMPTS runs; giving up"; fi
    attempt=$((attempt + 1))
    state=$(qr_state NOT_FOUND)
    note "attempt $attempt/$MAX_ATTEMPTS: queued resource $NAME is $state"
    # In a subshell with errexit on: a failed create, setup or model download (capacity, a hub hiccup)
    # ends this attempt, not the loop.
    set +e
    (set -e; provision "$state" "$resetup")
    rc=$?
    set -e
    if (( rc != 0 )); then
      resetup=1
      note "provisioning failed (exit $rc); retrying in ${POLL}s"
      [[ "$DRY_RUN" == 1 ]] && return "$rc"
      sleep "$POLL"
      continue
    fi
    rc=0 resetup=0
    cmd_run || rc=$?
    if [[ "$DRY_RUN" == 1 ]]; then note "dry-run: one pass shown"; return 0; fi
    if is_done; then note "$WORKDIR/DONE found: run complete"; return 0; fi
    note "run ended (exit $rc) without $WORKDIR/DONE; retrying in ${POLL}s"
    sleep "$POLL"
  done
}

COMMAND=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME="$2"; shift ;;
    --zone) ZONE="$2"; shift ;;
    --project) PROJECT="$2"; shift ;;
    --accelerator) ACCELERATOR="$2"; shift ;;
    --runtime-version) RUNTIME_VERSION="$2"; shift ;;
    --spot) TIER=spot ;;
    --best-effort) TIER=best-effort ;;
    --repo) REPO_URL="$2"; shift ;;
    --ref) REPO_REF="$2"; shift ;;
    --workdir) WORKDIR="$2"; shift ;;
    --models) MODELS="$2"; shift ;;
    --worker) WORKER="$2"; shift ;;
    --lines) LINES="$2"; shift ;;
    --max-attempts) MAX_ATTEMPTS="$2"; shift ;;
    --poll) POLL="$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; TRAINER_ARGS=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$COMMAND" ]] || die "one command at a time (got $COMMAND and $1)"; COMMAND="$1" ;;
  esac
  shift
done

[[ -n "$COMMAND" ]] || die "a command is needed: create setup run resume-until-done ssh logs status delete (see --help)"
[[ -n "$ZONE" ]] || die "--zone (or \$ZONE) is needed"
gcloud_flags

case "$COMMAND" in
  create) cmd_create ;;
  setup) cmd_setup ;;
  run) cmd_run ;;
  resume-until-done) cmd_resume_until_done ;;
  ssh)
    if [[ ${#TRAINER_ARGS[@]} -gt 0 ]]; then
      ssh_all "${WORKER:-0}" "${TRAINER_ARGS[*]}"
    else
      run gcloud compute tpus tpu-vm ssh "$NAME" "${GFLAGS[@]}" --worker="${WORKER:-0}"
    fi ;;
  logs) ssh_all "${WORKER:-all}" "tail -n $LINES $REMOTE_LOGS/run.log" ;;
  status) run gcloud compute tpus queued-resources describe "$NAME" "${GFLAGS[@]}" ;;
  delete) run gcloud compute tpus queued-resources delete "$NAME" "${GFLAGS[@]}" --force --quiet ;;
  *) die "unknown command $COMMAND (see --help)" ;;
esac
