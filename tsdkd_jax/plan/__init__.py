"""Memory planner: per-device bytes of a run (params, optimizer, teacher, gradients, KV cache, activations,
loss chunk) before anything is loaded or compiled, and whether it fits a named device.

    python -m tsdkd_jax.plan --config=configs/<x>.py[:arg] [--mesh=data,fsdp,tensor] [--devices=N]
        [--device=v5e|v5p|v6e|h100|h200|cpu]

Model shapes come from each model's config.json, or offline from `presets.MODEL_PRESETS` (the paper's
models) when the path is not a local folder. `estimate.py` says how each line is computed.
"""

from __future__ import annotations

import logging

from tsdkd_jax.plan.estimate import Plan, abstract_mesh, param_bytes, plan, resolve_mesh
from tsdkd_jax.plan.presets import DEVICES, MODEL_PRESETS, device_memory, model_config
from tsdkd_jax.plan.report import table
from tsdkd_jax.train import assets, methods

log = logging.getLogger(__name__)

__all__ = [
    "DEVICES",
    "MODEL_PRESETS",
    "Plan",
    "abstract_mesh",
    "device_memory",
    "model_config",
    "param_bytes",
    "plan",
    "plan_config",
    "resolve_mesh",
    "table",
    "warn_if_too_big",
]


def plan_config(config, *, mesh=None, num_devices=None, device="cpu", local_devices=None) -> Plan:
    """The plan of a train config; `mesh` (data, fsdp, tensor) defaults to config.mesh."""
    assets.ensure(config)  # a generated model (configs/tiny.py) is read from its folder
    student, _ = model_config(config.student.path)
    uses_teacher = methods.of(config).needs_teacher and config.teacher.path
    teacher = model_config(config.teacher.path)[0] if uses_teacher else None
    sizes = resolve_mesh(mesh or (config.mesh.data, config.mesh.fsdp, config.mesh.tensor), num_devices)
    capacity = device_memory(device, local_devices or num_devices or 1)
    return plan(config, student, teacher, mesh_sizes=sizes, device=device, capacity=capacity)


def _device_name(device) -> str | None:
    if device.platform == "cpu":
        return "cpu"
    kind = str(getattr(device, "device_kind", "")).lower()
    for key, name in (("v5 lite", "v5e"), ("v5e", "v5e"), ("v6", "v6e"), ("v5", "v5p"), ("h100", "h100"),
                      ("h200", "h200")):  # fmt: skip
        if key in kind:
            return name
    return None


def warn_if_too_big(config, devices) -> Plan | None:
    """Logs the run's plan on `devices` and warns when it will not fit; never raises (called before loading)."""
    import jax

    device = _device_name(devices[0])
    if device is None:
        return None  # an accelerator without a known memory size: nothing to compare with
    try:
        p = plan_config(
            config, num_devices=len(devices), device=device, local_devices=jax.local_device_count()
        )
    except Exception as e:  # noqa: BLE001 (the planner must never stop a run)
        log.info("memory plan skipped: %s", e)
        return None
    log.info("memory plan:\n%s", table(p))
    if not p.fits:
        log.warning(
            "memory plan: the run needs about %.1f GiB per device but a %s device has %.1f GiB (see the table "
            "above or python -m tsdkd_jax.plan); expect an out-of-memory error: shard more (mesh.fsdp / "
            "mesh.tensor), raise optim.grad_accum, set student.remat or lower loss.chunk_size",
            p.peak / 2**30, device, p.capacity / 2**30,
        )  # fmt: skip
    return p
