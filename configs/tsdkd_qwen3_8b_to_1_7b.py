"""TSD-KD on Qwen3: Qwen3-8B (teacher) → Qwen3-1.7B (student), the paper's third pair.

SPEC.md §3 as for the Qwen2.5 pair (UltraInteract-SFT, λ = 1, AdamW lr 5e-6, cosine, 10 % warm-up, 3 epochs
= 1,875 steps at batch 128, max length 1024, clip 1.0, β 0.9, ...). Both models share one 151,936-id
vocabulary. Qwen3's chat template enables "thinking" by default; the prompts are templated as the
tokenizer's default does. Models (on every worker) from $TSDKD_MODELS (default ~/models; see configs/common.py):

    hf download Qwen/Qwen3-8B --local-dir ~/models/Qwen3-8B
    hf download Qwen/Qwen3-1.7B --local-dir ~/models/Qwen3-1.7B
    launch/tpu_vm.sh run --zone ZONE --accelerator v5p-32 --workdir gs://BUCKET/tsdkd_qwen3_8b_1.7b \
        -- --config=configs/tsdkd_qwen3_8b_to_1_7b.py
    # one host, or to check the setup: python -m tsdkd_jax.main --config=configs/tsdkd_qwen3_8b_to_1_7b.py:smoke --workdir=/tmp/x

Mesh: a v5p-32 slice (16 chips): data 2 × fsdp 8, 8 prompts per chip. Expected runtime (an estimate from
FLOPs and decode bandwidth, not yet measured): ~10 s per step, ~5-6 h for 1,875 steps.

Expected result: the paper reports TSD-KD above GKD and the untrained 1.7B student for this pair as well (its
Qwen3 numbers are not reproduced in SPEC.md); the logged eval/kl_teacher_student falls. Compare `:gkd`
under the same pinned eval protocol.

Variants: as configs/common.py lists (gkd, official, ..., gate_only, c100, smoke, field=value).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable
from configs import common

TEACHER, STUDENT = "Qwen/Qwen3-8B", "Qwen/Qwen3-1.7B"


def get_config(arg=None):
    c = common.paper_config(teacher=TEACHER, student=STUDENT, lr=5e-6, mesh=(-1, 8, 1))
    return common.apply_variants(c, arg, "configs/tsdkd_qwen3_8b_to_1_7b.py")
