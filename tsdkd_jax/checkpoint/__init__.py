"""Orbax checkpoints of the student train state: async save/resume, preemption, restore onto another mesh.

The teacher is never checkpointed. See manager.py (API and safety rules), integrity.py (how partial steps are
detected), preemption.py (SIGTERM agreement across processes).
"""

from tsdkd_jax.checkpoint.manager import Checkpointer, NonFiniteError, abstract_target
from tsdkd_jax.checkpoint.preemption import PreemptionGuard

__all__ = ["Checkpointer", "NonFiniteError", "PreemptionGuard", "abstract_target"]
