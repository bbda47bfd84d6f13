"""The offline reasoning testbed, the default run: teacher → weak student → TSD-KD / GKD / SeqKD → accuracy.

    python -m tsdkd_jax.main                      # = --config=configs/testbed.py --workdir=./workdir/testbed

Everything is built locally from seed 0 (no network): arithmetic word problems of 2-3 steps whose
step-by-step solutions branch (tsdkd_jax.eval.testbed_problems, testbed v2: an optional restating line,
equation or sentence form, either operand order for + and *; every style ends in `#### N`; values ≤ 24,
± 1..6, × 2), split into train, validation (lr selection), held-out (1000) and a "hard" held-out split of 4-5
steps (longer than any training chain); 10 % extra SFT rows with one wrong intermediate written as a
loss-masked prefix and the solution continued from the true value (so the teacher can score trajectories
with mistakes in them); a byte-level BPE tokenizer; a teacher (3 layers × 96) and a student (1 layer × 48)
trained by SFT (600 and 1800 steps: neither at its plateau, see benchmarks/testbed_v2_pilot.md); then the same
initial student distilled for 150 steps by each method, and greedy-decoding accuracy (GSM8K strict `#### N`)
of every model on the held-out splits. Held-out accuracy on the first 256 held-out problems is also logged
during training (`eval/heldout_accuracy` in each stage's metrics.jsonl). Prints the table and writes
<workdir>/results.md, results.json and results.png (accuracy and per-term losses over steps). Finished stages
are skipped on a rerun; an interrupted one resumes from its checkpoint.

Runtime on 2 CPU cores: ≤ 15 min (measured table and time in benchmarks/RESULTS.md). Pilot (seed 0,
benchmarks/testbed_v2_pilot.md): teacher ~84 % held-out, plateaued student ~65 %; which distillation method
gains most is whatever the run shows — nothing here is tuned for any method.

Variants (comma-separated after a colon):
  smoke   a shrunken end-to-end run for CI (tiny models, a few steps each; accuracies are meaningless)
  full    3 seeds (student init, data order and sampling differ; problems, tokenizer and teacher are shared)
          and 2× longer distillation
  more    adds supervised KD and DistiLLM (skew KL) to the compared methods
  ablate  adds TSD-KD with terms switched off: tsdkd_no_em, tsdkd_no_indirect, tsdkd_gate_only (the gated
          JSD alone); shows which term moves accuracy here (benchmarks/RESULTS.md: the EM term)

Deviations from the paper's hyper-parameters. The loss's are the paper's: β = 0.9, τ = 1, k = 10, α = 0.1,
c = 0.1, ρ = 0.1, EM weight 1, λ = 1 (on-policy), sampling temperature 1, AdamW, grad clip 1. Changed for the
scale: peak lr 1e-4 (from the pilot grid 3e-5, 1e-4, 3e-4; the paper: 5e-6 on 1.5B-14B models), warm-up 5 %
(paper 10 %) then cosine to 10 % of the peak, 150 steps of 32 prompts, responses ≤ 28 tokens, float32
everywhere (CPU). The same lr, steps and batch for every method. GKD: the generalized JSD with the same β = 0.9 and λ = 1, without gate, ranking or EM
terms (TRL's defaults would be β = 0.5, λ = 0.5). SeqKD: teacher samples at temperature 1, cross-entropy.
"""

import ml_collections

from tsdkd_jax.train import default_config

METHODS = ("tsdkd", "gkd", "seqkd")
# `:ablate` stages: a name → the trainer fields it sets (besides the shared ones); the name of a plain stage
# is its method.
ABLATIONS = {
    "tsdkd_no_em": {"method": "tsdkd", "loss__use_em": False},
    "tsdkd_no_indirect": {"method": "tsdkd", "loss__use_indirect": False},
    "tsdkd_gate_only": {"method": "tsdkd", "loss__use_em": False, "loss__use_indirect": False},
}


def _model(layers, hidden, heads, kv_heads, ffw, sft_steps, sft_lr, eval_every=0):
    m = ml_collections.ConfigDict()
    m.layers = layers  # decoder blocks (Qwen2 architecture, untied unembedding)
    m.hidden = hidden  # model width
    m.heads = heads  # attention heads (head_dim = hidden / heads)
    m.kv_heads = kv_heads  # grouped-query KV heads
    m.ffw = ffw  # SwiGLU hidden width
    m.sft_steps = sft_steps  # SFT steps on correct solutions from a random init
    m.sft_lr = sft_lr  # peak SFT learning rate (warm-up 5 %, cosine to 10 %)
    m.eval_every = eval_every or sft_steps  # held-out accuracy during SFT every N steps (for the curve)
    return m


def get_config(arg=None):
    variants = set(filter(None, (arg or "").split(",")))
    unknown = variants - {"smoke", "full", "more", "ablate"}
    if unknown:
        raise ValueError(
            f"configs/testbed.py: unknown variant(s) {sorted(unknown)}; known: smoke, full, more, ablate"
        )
    c = ml_collections.ConfigDict()
    c.testbed = ml_collections.ConfigDict()
    tb = c.testbed
    tb.seeds = (0, 1, 2) if "full" in variants else (0,)  # one student/distillation run per seed
    tb.data_seed = 0  # seeds the problems, the tokenizer and the teacher (shared by all seeds)
    tb.methods = METHODS + (("supervised_kd", "distillm") if "more" in variants else ())
    tb.ablations = ml_collections.ConfigDict(ABLATIONS if "ablate" in variants else {})  # see ABLATIONS
    tb.methods += tuple(tb.ablations)  # the distillation stages

    tb.problems = ml_collections.ConfigDict()
    tb.problems.n_train = 6000  # training problems (SFT and distillation prompts)
    tb.problems.n_validation = 500  # validation problems (lr selection), 2-3 steps like train
    tb.problems.n_heldout = 1000  # held-out problems, 2-3 steps like train
    tb.problems.n_hard = 256  # held-out problems with 4-5 steps (longer than any training chain)
    tb.problems.min_steps = 2  # operations per train / validation / held-out problem
    tb.problems.max_steps = 3
    tb.problems.hard_min_steps = 4  # operations per hard problem (longer than any training chain)
    tb.problems.hard_max_steps = 5
    tb.problems.max_value = 24  # every intermediate value lies in [0, max_value]
    tb.problems.max_operand = 6  # add/subtract 1..max_operand
    tb.problems.multipliers = (2,)  # multiply by these
    tb.problems.heldout_fraction = 0.2  # share of problem signatures reserved for held-out / hard
    tb.problems.validation_fraction = 0.1  # share reserved for validation
    tb.problems.recovery_fraction = 0.1  # recovery rows (a wrong intermediate, masked) per training problem

    tb.vocab_size = 512  # byte-level BPE trained on the training problems
    tb.teacher = _model(3, 96, 4, 2, 256, sft_steps=600, sft_lr=3e-3, eval_every=150)
    tb.student = _model(1, 48, 2, 1, 128, sft_steps=1800, sft_lr=3e-3, eval_every=300)
    tb.sft_batch = 32  # SFT prompts per step

    tb.distill_steps = 300 if "full" in variants else 150  # distillation steps per method
    tb.eval_every = 25  # held-out accuracy (greedy) during distillation every N steps, for the curve
    tb.curve_size = 256  # held-out problems used for the curve (the table uses all of them)
    tb.eval_batch = 64  # prompts per greedy-decoding batch
    tb.eval_max_new_tokens = 40  # hard solutions are ≤ 38 tokens

    # The trainer config every stage starts from (tsdkd_jax.train.default_config); stages set method, paths,
    # steps and lr. Override with e.g. --config.base.loss.beta=0.5.
    c.base = default_config()
    b = c.base
    b.log_every = 5  # metrics.jsonl row every 5 steps
    b.student.compute_dtype = "float32"  # CPU
    b.teacher.dtype = "float32"  # CPU: bfloat16 matmuls are slow there
    b.data.prompt_field = "prompt"
    b.data.response_field = "response"  # the correct solution (SFT, supervised KD)
    b.data.max_prompt_len = 64  # every prompt fits (≤ 64 tokens with the chat template and a recovery prefix)
    b.data.max_response_len = 28  # every train solution fits (≤ 26 tokens incl. end of turn)
    b.data.prompt_bucket = "max"  # one prompt shape → one compiled step
    b.data.batch_size = 32  # distillation prompts per step
    b.sampling.max_new_tokens = 28  # on-policy response length
    b.sampling.temperature = 1.0  # the paper's sampling
    b.loss.chunk_size = 256  # tokens per loss chunk
    b.optim.lr = 1e-4  # distillation peak lr, from the grid 3e-5, 1e-4, 3e-4 (the paper: 5e-6 at 1.5B-14B)
    b.optim.warmup_frac = 0.05
    b.optim.end_lr_frac = 0.1
    b.checkpoint.every = 50  # resumable stages
    b.checkpoint.keep = 1
    b.checkpoint.async_save = False

    if "smoke" in variants:
        tb.problems.n_train, tb.problems.n_heldout, tb.problems.n_hard = 400, 16, 16
        tb.problems.n_validation = 16
        tb.vocab_size = 320
        tb.teacher = _model(1, 32, 2, 1, 64, sft_steps=4, sft_lr=2e-3)
        tb.student = _model(1, 32, 2, 1, 64, sft_steps=2, sft_lr=2e-3)
        tb.sft_batch = 8
        tb.distill_steps, tb.eval_every, tb.curve_size, tb.eval_batch = 3, 3, 8, 8
        tb.eval_max_new_tokens = 16
        b.data.batch_size = 8
        b.checkpoint.every = 2
    return c
