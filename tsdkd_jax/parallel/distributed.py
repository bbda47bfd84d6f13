"""Multi-host start-up: `jax.distributed` from flags, env, SLURM or a Cloud TPU VM; host-0 helpers; DONE marker.

Where the topology comes from, first match wins:

1. explicit arguments (`main` flags) or env `JAX_COORDINATOR_ADDRESS` + `JAX_NUM_PROCESSES` + `JAX_PROCESS_ID`;
2. SLURM (`SLURM_JOB_ID`, `SLURM_NTASKS` > 1, `SLURM_PROCID`): coordinator = `JAX_COORDINATOR_ADDRESS` if set
   (launch/gpu_slurm.sbatch exports it), else the first node of the step with `JAX_COORDINATOR_PORT` or a
   port derived from the job id (the rule jax itself uses, so every task agrees);
3. a Cloud TPU VM (libtpu installed and TPU chips present, or `TPU_WORKER_HOSTNAMES` set): jax's own metadata
   detection;
4. otherwise a single process: nothing to initialise.

`TSDKD_DISTRIBUTED` (or `method=`) forces one of explicit / slurm / tpu / none.

A missing peer does not hang: a watchdog thread ends the process with a message naming the coordinator, the
process id and the timeout, exit code `EXIT_PEER_TIMEOUT` (75, EX_TEMPFAIL: "retry" for a resume loop). A
peer that dies after start-up is caught by jax's coordination-service heartbeat: the survivors abort within
about `heartbeat_timeout` seconds ("Terminating process because the JAX distributed service detected fatal
errors...").
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import sys
import threading
import time

import jax
from absl import logging

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_METHOD = "TSDKD_DISTRIBUTED"
METHODS = ("auto", "explicit", "slurm", "tpu", "none")
EXIT_PEER_TIMEOUT = 75
DONE_MARKER = "DONE"


@dataclasses.dataclass(frozen=True)
class Topology:
    """How this process joined the job; num_processes/process_id are filled in after a TPU auto-detect."""

    method: str  # explicit | slurm | tpu | none
    process_id: int | None = 0
    num_processes: int | None = 1
    coordinator_address: str | None = None
    local_device_ids: tuple[int, ...] | None = None


def _env_int(env, name: str) -> int | None:
    value = env.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'gpu[003-010,12],cpu1' -> 'gpu003'."""
    cut = next((i for i, ch in enumerate(nodelist) if ch in ",["), len(nodelist))
    if cut == len(nodelist) or nodelist[cut] == ",":
        return nodelist[:cut]
    first = nodelist[cut + 1 :].split("]", 1)[0].split(",", 1)[0].split("-", 1)[0]
    return nodelist[:cut] + first


def _on_cloud_tpu_vm(env) -> bool:
    # Cheap and side-effect free: jax's own check needs the backend or a metadata-server round trip.
    if env.get("TPU_WORKER_HOSTNAMES") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    has_chips = bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))
    return has_chips and importlib.util.find_spec("libtpu") is not None


def _slurm(env) -> Topology:
    num = _env_int(env, "SLURM_NTASKS")
    pid = _env_int(env, "SLURM_PROCID")
    if num is None or pid is None:
        raise ValueError("SLURM mode needs $SLURM_NTASKS and $SLURM_PROCID (launch the trainer with srun)")
    coordinator = env.get(ENV_COORDINATOR)
    if not coordinator:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise ValueError(f"SLURM mode needs ${ENV_COORDINATOR} or $SLURM_STEP_NODELIST")
        port = env.get("JAX_COORDINATOR_PORT") or str(int(env.get("SLURM_JOB_ID", "0")) % 4096 + 61440)
        coordinator = f"{_first_slurm_host(nodelist)}:{port}"
    nodes = _env_int(env, "SLURM_STEP_NUM_NODES") or _env_int(env, "SLURM_NNODES") or 1
    local_ids = None
    # One task per GPU: pin task i of a node to GPU i, unless srun already gave each task a single GPU.
    visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if num > nodes and len(visible) != 1 and not env.get("JAX_LOCAL_DEVICE_IDS"):
        local_ids = (_env_int(env, "SLURM_LOCALID") or 0,)
    return Topology("slurm", pid, num, coordinator, local_ids)


def resolve(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    method: str | None = None,
    env=None,
) -> Topology:
    """Decide how to join the job from arguments and `env` (default os.environ); starts nothing."""
    env = os.environ if env is None else env
    method = method or env.get(ENV_METHOD) or "auto"
    if method not in METHODS:
        raise ValueError(f"distributed method must be one of {METHODS}, got {method!r}")
    coordinator_address = coordinator_address or env.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(env, ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(env, ENV_PROCESS_ID)
    explicit = (coordinator_address, num_processes, process_id)

    if method == "none":
        return Topology("none")
    if method == "explicit" or (method == "auto" and any(v is not None for v in explicit[1:])):
        missing = [
            name
            for name, value in zip((ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID), explicit)
            if value is None
        ]
        if missing:
            raise ValueError(
                f"explicit multi-process start needs coordinator address, num_processes and process_id; "
                f"missing {', '.join(missing)} (flags or env)"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id={process_id} must be in [0, num_processes={num_processes})")
        return Topology("explicit", process_id, num_processes, coordinator_address)
    slurm_present = "SLURM_JOB_ID" in env and (_env_int(env, "SLURM_NTASKS") or 1) > 1
    if method == "slurm" or (method == "auto" and slurm_present):
        return _slurm(env)
    if method == "tpu" or (method == "auto" and _on_cloud_tpu_vm(env)):
        return Topology("tpu", None, None, coordinator_address)
    if coordinator_address:
        raise ValueError(
            f"${ENV_COORDINATOR}={coordinator_address} is set but not ${ENV_NUM_PROCESSES} / "
            f"${ENV_PROCESS_ID}, and this is neither a SLURM step nor a Cloud TPU VM; set all three "
            f"(or {ENV_METHOD}=none to run a single process)"
        )
    return Topology("none")


def _watchdog(topology: Topology, timeout: float, done: threading.Event) -> None:
    if done.wait(timeout):
        return
    who = "this process" if topology.process_id is None else f"process {topology.process_id}"
    of = "" if topology.num_processes is None else f" of {topology.num_processes}"
    msg = (
        f"jax.distributed: {who}{of} could not meet all "
        f"peers at coordinator {topology.coordinator_address or '(auto)'} within {timeout:.0f} s "
        f"(initialization_timeout). A peer never started or crashed, or the coordinator address/port is "
        f"wrong or blocked; every process must get the same coordinator and num_processes. "
        f"Exiting with code {EXIT_PEER_TIMEOUT}."
    )
    logging.error("%s", msg)
    print(msg, file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_TIMEOUT)


def _jax_kwargs(topology: Topology, initialization_timeout, heartbeat_timeout, shutdown_timeout) -> dict:
    """jax.distributed.initialize's arguments for a resolved topology."""
    kwargs = {
        "initialization_timeout": initialization_timeout,
        "heartbeat_timeout_seconds": heartbeat_timeout,
        "shutdown_timeout_seconds": shutdown_timeout,
    }
    if topology.method == "tpu":
        if topology.coordinator_address:
            kwargs["coordinator_address"] = topology.coordinator_address
    else:
        kwargs.update(
            coordinator_address=topology.coordinator_address,
            num_processes=topology.num_processes,
            process_id=topology.process_id,
            local_device_ids=list(topology.local_device_ids) if topology.local_device_ids else None,
            # We resolved everything; jax's own SLURM probe would pin one GPU even with one task per node.
            cluster_detection_method="deactivate",
        )
    return kwargs


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    method: str | None = None,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
    shutdown_timeout: int = 300,
) -> Topology:
    """Join the multi-process job (see module doc); a no-op returning Topology('none') on one process.

    Call before anything touches a jax backend. Timeouts are seconds: `initialization_timeout` bounds the
    wait for peers at start-up, `heartbeat_timeout` how long a silent peer counts as alive, and
    `shutdown_timeout` how long a finishing process waits for the others at exit.
    """
    topology = resolve(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        method=method,
    )
    if topology.method == "none":
        logging.info("jax.distributed: single process, nothing to initialise")
        return topology
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialised; call initialize() once per process")
    logging.info(
        "jax.distributed: joining via %s as process %s of %s, coordinator %s (timeout %d s)",
        topology.method,
        topology.process_id,
        topology.num_processes,
        topology.coordinator_address or "(auto-detected)",
        initialization_timeout,
    )
    kwargs = _jax_kwargs(topology, initialization_timeout, heartbeat_timeout, shutdown_timeout)
    done = threading.Event()
    # jax's timeout aborts the process from C++ with a terse DEADLINE_EXCEEDED; ours fires first, clearly.
    watchdog_s = max(1.0, initialization_timeout - 1.0)
    threading.Thread(target=_watchdog, args=(topology, watchdog_s, done), daemon=True).start()
    start = time.monotonic()
    try:
        jax.distributed.initialize(**kwargs)
    finally:
        done.set()
    topology = dataclasses.replace(
        topology, process_id=jax.process_index(), num_processes=jax.process_count()
    )
    logging.info(
        "jax.distributed: process %d of %d ready in %.1f s; %d local / %d global %s devices",
        topology.process_id,
        topology.num_processes,
        time.monotonic() - start,
        jax.local_device_count(),
        jax.device_count(),
        jax.default_backend(),
    )
    return topology


def is_host0() -> bool:
    """True on the process that writes logs, metrics, exports and the DONE marker."""
    return jax.process_index() == 0


def done_marker_path(workdir: str) -> str:
    return os.path.join(workdir, DONE_MARKER)


def mark_done(workdir: str, text: str = "") -> None:
    """Host 0 writes `<workdir>/DONE` (local or gs://) once the run has finished; launch/ polls for it."""
    if not is_host0():
        return
    from etils import epath  # ships with orbax; handles gs:// workdirs on TPU VMs

    path = epath.Path(done_marker_path(workdir))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text or f"finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")


def is_done(workdir: str) -> bool:
    from etils import epath

    return epath.Path(done_marker_path(workdir)).exists()
