"""TSD-KD on Gemma 2: gemma-2-9b-it (teacher) → gemma-2-2b-it (student), the paper's second pair.

SPEC.md §3 as for the Qwen pair (UltraInteract-SFT, λ = 1, 3 epochs = 1,875 steps at batch 128, max length
1024, clip 1.0, β 0.9, ...), except the learning rate: 1e-7. Both models share Gemma's 256,000-token
vocabulary. Models (on every worker) from $TSDKD_MODELS (default ~/models; see configs/common.py):

    hf download google/gemma-2-9b-it --local-dir ~/models/gemma-2-9b-it
    hf download google/gemma-2-2b-it --local-dir ~/models/gemma-2-2b-it
    launch/tpu_vm.sh run --zone ZONE --accelerator v5p-32 --workdir gs://BUCKET/tsdkd_gemma9b_2b \
        -- --config=configs/tsdkd_gemma2_9b_to_2b.py
    # one host, or to check the setup: python -m tsdkd_jax.main --config=configs/tsdkd_gemma2_9b_to_2b.py:smoke --workdir=/tmp/x

Mesh: a v5p-32 slice (16 chips): data 2 × fsdp 8, 8 prompts per chip. Expected runtime (an estimate from
FLOPs and decode bandwidth, not yet measured): ~12 s per step, ~6-7 h for 1,875 steps; a 256k vocabulary
makes the loss chunks 1.7× the Qwen pair's (lower loss.chunk_size if memory is short).

Expected result: the paper reports TSD-KD above GKD and the untrained 2B student on its benchmarks for this
pair too (its per-benchmark Gemma numbers are not reproduced in SPEC.md); with lr 1e-7 the gains are small,
and the logged eval/kl_teacher_student falls slowly. Compare `:gkd` under the same pinned eval protocol.

Variants: as configs/common.py lists (gkd, official, ..., gate_only, c100, smoke, field=value).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable
from configs import common

TEACHER, STUDENT = "google/gemma-2-9b-it", "google/gemma-2-2b-it"


def get_config(arg=None):
    c = common.paper_config(teacher=TEACHER, student=STUDENT, lr=1e-7, mesh=(-1, 8, 1))
    return common.apply_variants(c, arg, "configs/tsdkd_gemma2_9b_to_2b.py")
