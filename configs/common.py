"""Shared pieces of the paper's experiment files (big_vision `configs/common.py` style).

`paper_config(...)` is SPEC.md §3's setup for one teacher/student pair; `apply_variants(config, arg, ...)`
applies the comma-separated variants of the config argument (`configs/x.py:gkd,smoke`), including
`field=value` overrides (`:opener_frac=1.0`, `:optim.lr=1e-6`). Model folders are looked up under
$TSDKD_MODELS (default ~/models), one folder per hub model, e.g.

    hf download Qwen/Qwen2.5-1.5B-Instruct --local-dir ~/models/Qwen2.5-1.5B-Instruct
"""

from __future__ import annotations

import os

from tsdkd_jax.train import default_config, variants

ULTRAINTERACT = "openbmb/UltraInteract_sft"  # hub dataset: columns task, dataset, instruction, response, id
NUM_PROMPTS = 80_000  # SPEC §3: ~80k UltraInteract-SFT prompts (the first rows of the train split)
GLOBAL_BATCH = 128
EPOCHS = 3
TOTAL_STEPS = EPOCHS * NUM_PROMPTS // GLOBAL_BATCH  # 1875 optimizer steps
OFFICIAL_NEW_TOKENS = 128  # TRL's default max_new_tokens, which cut the released run's rollouts

# Each variant: overrides of dotted fields. Methods (baselines), ablations, data regime, shape.
VARIANTS = {
    # methods: the baselines of SPEC §3 that run from this code
    "gkd": {"method": "gkd"},  # GKD, β = 0.9, λ = 1
    "official": {  # the released code's loss and every reproducible quirk of its run (SPEC §2)
        "method": "tsdkd_official",
        "sampling.max_new_tokens": OFFICIAL_NEW_TOKENS,
        "data.max_response_len": OFFICIAL_NEW_TOKENS,
        "loss.normalize": "micro_batch",  # per-micro-batch means
        "loss.logits_dtype": "bfloat16",  # bf16 loss math (the logits' rounding; kernels still upcast)
        "student.compute_dtype": "bfloat16",
        "student.param_dtype": "bfloat16",  # pure-bf16 weights and AdamW state: no fp32 master copy
        "teacher.dtype": "bfloat16",
        # pad = EOS masking is implied by method=tsdkd_official (train/step.py score_inputs)
    },
    # forward KL / MiniLLM's mixture need the teacher cut to the student's ids (the Qwen2.5 pair: 152,064 vs
    # 151,936; the extra ids are padding rows), so these three truncate the teacher's vocabulary
    "supervised_kd": {"method": "supervised_kd", "loss.vocab_policy": "truncate_teacher"},
    "seqkd": {"method": "seqkd"},  # SFT on teacher samples
    "distillm": {"method": "distillm", "loss.divergence": "skl"},  # skew KL, α = 0.1
    "distillm_srkl": {"method": "distillm", "loss.divergence": "srkl"},  # skew reverse KL
    "sft": {"method": "sft", "teacher.path": ""},  # cross-entropy on the dataset's responses
    "skd": {
        "method": "skd",
        "loss.vocab_policy": "truncate_teacher",
    },  # Speculative KD: K = 25 (loss.skd_top_k), forward KL, λ = 1
    # MiniLLM: reverse KL by policy gradient on teacher-mixed samples; the paper's defaults are config.loss
    # .minillm's (α 0.2, clip ε 0.2, length norm; temperature 1, no top-k/top-p; no pre-training LM term)
    "minillm": {"method": "minillm", "loss.vocab_policy": "truncate_teacher"},
    # ablations (SPEC §3: gate only 18.2, gate + indirect 20.9, gate + EM 22.3, all 26.1 on MATH)
    "no_gate": {"loss.use_gate": False},
    "no_indirect": {"loss.use_indirect": False},  # = gate + EM
    "no_em": {"loss.use_em": False},  # = gate + indirect
    "gate_only": {"loss.use_em": False, "loss.use_indirect": False},
    "c100": {"loss.opener_frac": 1.0},  # opener = the whole response (fell below GKD in the paper)
    # data regime
    "offpolicy": {"loss.lam": 0.0},  # dataset responses only (paper: avg 43.4 vs 45.7 on-policy)
    "mixed": {"loss.lam": 0.5},
    # shape
    "smoke": {  # a few steps on the first prompts, to check a new machine before the full run
        "total_steps": 4,
        "data.max_examples": 512,
        "data.batch_size": 32,
        "sampling.max_new_tokens": 64,
        "data.max_response_len": 64,
        "checkpoint.every": 2,
        "checkpoint.export": False,
        "mesh.data": 1,  # every device on fsdp: fits one host (4-8 chips) and whole slices alike
        "mesh.fsdp": -1,
    },
}

# Bare field names accepted in `name=value` variants, with their section.
_BARE = {"opener_frac": "loss", "em_frac": "loss", "rank_k": "loss", "rank_weight": "loss", "gate_tau": "loss",
         "beta": "loss", "lam": "loss", "em_weight": "loss", "skd_top_k": "loss", "lr": "optim",
         "seed": ""}  # fmt: skip


def model_dir(name: str) -> str:
    """The local folder of hub model `name` under $TSDKD_MODELS (default ~/models)."""
    root = os.environ.get("TSDKD_MODELS", "~/models")
    return os.path.join(os.path.expanduser(root), name.split("/")[-1])


def paper_config(*, teacher: str, student: str, lr: float, mesh: tuple[int, int, int]):
    """SPEC §3's hyper-parameters for one pair (hub names of the instruct models)."""
    c = default_config()
    c.method = "tsdkd"  # TSD-KD, paper variant (SPEC §1)
    c.seed = 0
    c.total_steps = TOTAL_STEPS  # 3 epochs × 80,000 prompts / global batch 128
    c.log_every = 10
    c.eval_every = 250  # held-out KL(teacher‖student) on teacher samples
    c.eval_batches = 2

    c.student.path = model_dir(student)
    c.student.compute_dtype = "bfloat16"  # params stay fp32 (the optimizer's master copy)
    c.student.remat = True  # 1024-token sequences × 152k-vocab chunks: recompute blocks in the backward
    c.teacher.path = model_dir(teacher)
    c.teacher.dtype = "bfloat16"  # frozen; never in the optimizer or the checkpoints

    c.data.path = ULTRAINTERACT  # hub dataset (needs the network once; cached by `datasets`)
    c.data.split = "train"
    c.data.prompt_field = "instruction"  # one user turn, the student's chat template
    c.data.response_field = "response"  # for λ < 1 and the off-policy baselines
    c.data.max_examples = NUM_PROMPTS
    c.data.max_prompt_len = 512  # prompt + response ≤ 1024 tokens (SPEC §3 max length)
    c.data.max_response_len = 512
    c.data.truncate_responses = True  # dataset responses longer than 512 tokens are cut (off-policy only)
    c.data.holdout_size = 512  # fixed held-out prompts for the KL evaluation
    c.data.batch_size = GLOBAL_BATCH
    c.data.prompt_bucket = "multiple"  # prompt lengths rounded up to 64: a few compiled shapes
    c.data.bucket_multiple = 64

    c.loss.beta = 0.9  # JSD β
    c.loss.gate_tau = 1.0  # τ
    c.loss.rank_k = 10  # k
    c.loss.rank_weight = 0.1  # α
    c.loss.opener_frac = 0.1  # c
    c.loss.em_frac = 0.1  # ρ
    c.loss.em_weight = 1.0
    c.loss.lam = 1.0  # λ = 1: always on-policy
    c.loss.normalize = "global"  # token means over the global batch (official: per micro-batch)
    c.loss.chunk_size = 1024  # peak loss memory ∝ chunk × vocab
    c.loss.vocab_policy = "pad_student"  # Qwen2.5 1.5B (151,936) vs 14B (152,064): −inf for missing ids

    c.sampling.max_new_tokens = 512  # response budget (the released run cut at 128: see :official)
    c.sampling.temperature = 1.0  # plain temperature-1 sampling, no top-k / top-p
    c.sampling.top_k = 0
    c.sampling.top_p = 1.0

    c.optim.lr = lr  # AdamW, cosine, 10 % warm-up, clip 1.0
    c.optim.warmup_frac = 0.1
    c.optim.end_lr_frac = 0.0
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 1.0
    c.optim.grad_accum = 1  # raise (e.g. 2, 4) on smaller slices; the loss stays globally normalised

    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh  # -1 = the remaining devices
    c.checkpoint.every = 250
    c.checkpoint.keep = 3
    c.checkpoint.export = True
    return c


def apply_variants(c, arg: str | None, source: str, extra: dict | None = None):
    """Applies `arg`'s comma-separated variants (names of VARIANTS/extra, or field=value) in order."""
    return variants.apply_variants(c, arg, {**VARIANTS, **(extra or {})}, source, bare=_BARE)
