"""TSD-KD, the paper's main pair: Qwen2.5-14B-Instruct (teacher) → Qwen2.5-1.5B-Instruct (student).

SPEC.md §3: UltraInteract-SFT prompts (first 80,000 rows), on-policy (λ = 1), AdamW lr 5e-6, cosine with 10 %
warm-up, 3 epochs = 1,875 steps at global batch 128, max length 1024 (512 prompt + 512 response), clip 1.0,
β 0.9, τ 1, k 10, α 0.1, c 0.1, ρ 0.1. Models (on every worker) from $TSDKD_MODELS (default ~/models; see configs/common.py):

    hf download Qwen/Qwen2.5-14B-Instruct --local-dir ~/models/Qwen2.5-14B-Instruct
    hf download Qwen/Qwen2.5-1.5B-Instruct --local-dir ~/models/Qwen2.5-1.5B-Instruct
    launch/tpu_vm.sh run --zone ZONE --accelerator v5p-64 --workdir gs://BUCKET/tsdkd_qwen14b_1.5b \
        -- --config=configs/tsdkd_qwen2_5_14b_to_1_5b.py
    # one host, or to check the setup: python -m tsdkd_jax.main --config=configs/tsdkd_qwen2_5_14b_to_1_5b.py:smoke --workdir=/tmp/x

Mesh: a v5p-64 slice (32 chips): data 4 × fsdp 8 (teacher and student both fsdp-sharded), 4 prompts per
chip. Expected runtime (an estimate from FLOPs and decode bandwidth, not yet measured): ~10 s per step
(sampling 512 new tokens dominates; scoring ≈ 5 PFLOP per step), ~5-6 h for 1,875 steps. Run
`benchmarks/train_bench.py --config=configs/tsdkd_qwen2_5_14b_to_1_5b.py:smoke` on the slice first.

Expected result (SPEC §3, the paper's harness; ours differs, compare relative gains): GSM8K 60.1, GSM-Plus
40.5, MATH 26.1, MBPP 42.1, IFEval 55.2, MMLU-STEM 50.0, vs the untrained student 57.1 / 38.8 / 16.9 / 38.4 /
53.1 / 49.5 and `:gkd` 57.9 / 39.9 / 18.1 / 41.8 / 52.3 / 47.7. The logged eval/kl_teacher_student falls.

Variants (comma-separated, configs/common.py): gkd, official, supervised_kd, seqkd, distillm, distillm_srkl,
sft, skd, minillm; no_gate, no_indirect, no_em, gate_only, c100; offpolicy, mixed; smoke; and field=value overrides
(`:opener_frac=1.0`, `:optim.lr=1e-6`). `:official` also resizes the student's embedding to the teacher's
vocabulary (151,936 → 152,064), as the released run did.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable
from configs import common

TEACHER, STUDENT = "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"
EXTRA = {  # the released run's embedding resize applies to this pair only (the others share a vocabulary)
    "official": {**common.VARIANTS["official"], "student.resize_vocab_to_teacher": True},
}


def get_config(arg=None):
    c = common.paper_config(teacher=TEACHER, student=STUDENT, lr=5e-6, mesh=(-1, 8, 1))
    return common.apply_variants(c, arg, "configs/tsdkd_qwen2_5_14b_to_1_5b.py", EXTRA)
