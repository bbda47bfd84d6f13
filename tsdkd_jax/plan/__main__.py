"""python -m tsdkd_jax.plan --config=configs/<x>.py[:arg] [--mesh=d,f,t] [--devices=N] [--device=NAME]."""

from absl import app, flags
from ml_collections import config_flags

from tsdkd_jax import plan

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_MESH = flags.DEFINE_list("mesh", None, "data,fsdp,tensor mesh sizes (one may be -1); default: the config's.")
_DEVICES = flags.DEFINE_integer("devices", None, "Device count, to fill a -1 mesh axis.")
_DEVICE = flags.DEFINE_enum("device", "cpu", list(plan.DEVICES), "Device whose memory to compare with.")


def main(argv):
    del argv
    if _CONFIG.value is None:
        raise app.UsageError("--config is required")
    mesh = tuple(int(x) for x in _MESH.value) if _MESH.value else None
    if mesh is not None and len(mesh) != 3:
        raise app.UsageError(f"--mesh needs three sizes data,fsdp,tensor, got {_MESH.value}")
    p = plan.plan_config(_CONFIG.value, mesh=mesh, num_devices=_DEVICES.value, device=_DEVICE.value)
    print(plan.table(p))


if __name__ == "__main__":
    app.run(main)
