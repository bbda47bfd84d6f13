"""Tiny TSD-KD run on CPU: random confident teacher (3 layers) → random student (2 layers), local data.

    python -m tsdkd_jax.main --config=configs/tiny.py --workdir=/tmp/tsdkd_tiny

The first run builds the assets (tokenizer, both models as HF folders, 256 arithmetic prompts with responses)
under $TSDKD_TINY_DIR (default ~/.cache/tsdkd_jax/tiny; ~20 s once) when its Trainer starts
(tsdkd_jax/train/assets.py; reading this config builds nothing) and reuses them afterwards. Runtime on 2
CPU cores: ~20 s with a warm JAX compilation cache, ~1 min cold. Held-out KL(teacher‖student) is logged as
`eval/kl_teacher_student` at steps 0 and 30 of <workdir>/metrics.jsonl; the student is exported to
<workdir>/export.

Expected results (seed 0): with `:gate_only` (the paper's "gate only" ablation) the held-out KL falls from 2.13
to 0.11 (-95 %); `:gkd` behaves alike. With the full objective (the default) it RISES (2.13 → ~8.8): on a random,
high-entropy student the EM term (weight 1) and the top-k ranking term both sharpen the student faster than
the β = 0.9 JSD moves it toward the teacher, so it collapses onto its own argmax (entropy 5.9 → 0.8). The
paper's setting starts from a pretrained student, where this does not happen; the tiny run is a plumbing
check, not a reproduction.
`:skd` (Speculative KD) takes the held-out KL from 2.14 to 0.10 and logs `skd/kept_frac`, the share of
response tokens the teacher kept from the student's proposals: 0.04 at step 1, ~0.75 from step 8 on.

Variants (comma-separated after a colon, e.g. configs/tiny.py:gkd,smoke):
  methods     gkd, official (tsdkd_official), supervised_kd, seqkd, distillm, distillm_srkl, sft,
              skd (Speculative KD: K = 25, forward KL), minillm (MiniLLM: paper defaults)
  ablations   no_gate, no_indirect, no_em, gate_only (= no_indirect + no_em), em_alone (no direct, no indirect)
  data        offpolicy (λ = 0), mixed (λ = 0.5)
  shape       accum (2 micro-batches of 8), micro_norm (per-micro-batch means), smoke (4 steps, no eval)
  student     lora (rank-8 adapters on q,k,v,o,gate,up,down, α = 16; the base frozen; exports
              <workdir>/export merged and <workdir>/export_adapter for PEFT)
"""

import os

from tsdkd_jax.train import default_config, tiny, variants

VARIANTS = {
    "gkd": {"method": "gkd"},
    "official": {"method": "tsdkd_official"},
    "supervised_kd": {"method": "supervised_kd"},
    "seqkd": {"method": "seqkd"},
    "distillm": {"method": "distillm", "loss.divergence": "skl"},
    "distillm_srkl": {"method": "distillm", "loss.divergence": "srkl"},
    "sft": {"method": "sft", "teacher.path": ""},
    "skd": {"method": "skd"},  # the student proposes, the teacher replaces proposals outside its top 25
    # MiniLLM with the paper's defaults (config.loss.minillm: teacher-mixed α 0.2, clip 0.2, length norm)
    "minillm": {"method": "minillm"},
    "no_gate": {"loss.use_gate": False},
    "no_indirect": {"loss.use_indirect": False},
    "no_em": {"loss.use_em": False},
    "gate_only": {"loss.use_em": False, "loss.use_indirect": False},
    "em_alone": {"loss.use_direct": False, "loss.use_indirect": False},
    "offpolicy": {"loss.lam": 0.0},
    "mixed": {"loss.lam": 0.5},
    "accum": {"optim.grad_accum": 2, "data.batch_size": 16},
    "micro_norm": {"loss.normalize": "micro_batch"},
    "smoke": {"total_steps": 4, "eval_at_ends": False},
    "lora": {"lora.rank": 8, "lora.alpha": 16.0},
}


def get_config(arg=None):
    c = default_config()
    # Generated assets: built by the Trainer when the run starts (train/assets.py), not when this is read.
    c.assets.builder = "tiny"
    c.assets.dir = os.environ.get("TSDKD_TINY_DIR", "~/.cache/tsdkd_jax/tiny")
    c.assets.teacher_head_scale = float(os.environ.get("TSDKD_TINY_HEAD", "20"))
    paths = tiny.asset_paths(c.assets.dir, teacher_head_scale=c.assets.teacher_head_scale)
    c.method = "tsdkd"  # TSD-KD, paper variant
    c.seed = 0  # fixes data order, λ coins and sampling keys
    c.total_steps = 30  # optimizer steps
    c.log_every = 1  # one metrics row per step
    c.eval_at_ends = True  # held-out KL(teacher‖student) at steps 0 and total_steps
    c.eval_batches = 2  # held-out batches of data.batch_size prompts

    c.student.path = paths["student"]  # 2 layers, 32 wide, random init
    c.student.compute_dtype = "float32"  # CPU: float32 compute
    c.teacher.path = paths["teacher"]  # 2 layers, 64 wide, random init with a sharpened unembedding
    c.teacher.dtype = "float32"  # CPU: keep the teacher in float32 too

    c.data.path = paths["data"]  # local JSONL: {"prompt", "response"}
    c.data.prompt_field = "prompt"  # one user turn
    c.data.response_field = "response"  # used by the off-policy methods and λ < 1
    c.data.max_prompt_len = 32  # every tiny prompt fits
    c.data.max_response_len = 16  # responses are ≤ 10 tokens
    c.data.prompt_bucket = "max"  # one prompt shape → one compiled step
    c.data.holdout_size = 16  # held-out prompts for the KL evaluation
    c.data.batch_size = 8  # global prompts per step (divisible by 8 fake devices)

    c.loss.chunk_size = 64  # tokens per loss chunk
    c.sampling.max_new_tokens = 16  # response length N
    c.sampling.temperature = 1.0  # the paper's sampling: plain temperature 1

    c.optim.lr = 3e-2  # tiny random models learn fast
    c.optim.warmup_frac = 0.1
    c.optim.grad_clip = 1.0

    c.mesh.data = -1  # all devices on the data axis
    c.checkpoint.every = 10  # save at steps 10, 20, 30 (and on SIGTERM)
    c.checkpoint.keep = 2

    return variants.apply_variants(c, arg, VARIANTS, "configs/tiny.py")
