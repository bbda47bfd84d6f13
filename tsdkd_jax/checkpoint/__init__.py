"""Orbax checkpoints of the student train state: async save/resume, preemption, restore onto another mesh.

The teacher is never checkpointed. See manager.py (API and safety rules), integrity.py (how partial steps are
detected), preemption.py (SIGTERM/SIGINT agreement across processes), checksum.py and identity.py (what restore verifies),
lock.py (one trainer per workdir).
"""

from tsdkd_jax.checkpoint.identity import ConfigChangedError, check_resume_step, run_identity
from tsdkd_jax.checkpoint.lock import WorkdirLockedError
from tsdkd_jax.checkpoint.lock import acquire_for_run as acquire_workdir_lock
from tsdkd_jax.checkpoint.manager import Checkpointer, ChecksumError, NonFiniteError, abstract_target
from tsdkd_jax.checkpoint.preemption import PreemptionGuard

__all__ = [
    "Checkpointer",
    "ChecksumError",
    "ConfigChangedError",
    "NonFiniteError",
    "PreemptionGuard",
    "WorkdirLockedError",
    "abstract_target",
    "acquire_workdir_lock",
    "check_resume_step",
    "run_identity",
]
