"""The offline reasoning testbed, the default run: teacher → student → TSD-KD / GKD / SeqKD / SFT → accuracy.

    python -m tsdkd_jax.main                      # = --config=configs/testbed.py --workdir=./workdir/testbed

Everything is built locally from seed 0 (no network). Testbed v2 (tsdkd_jax.eval.testbed_problems): arithmetic
word problems of 2-3 steps (values ≤ 24, ± 1..6, × 2) whose step-by-step solutions branch: an optional
restating line, equation or sentence form ("12 - 3 = 9" / "12 minus 3 is 9"), either operand order for + and
*; every style ends in `#### N`. The teacher learns the mixture, so it has real forks (~1 nat of entropy at
fork tokens, ~0.09 elsewhere) and a student can be right in its own words. 10 % extra SFT rows carry one wrong
intermediate as a loss-masked prefix, the solution continued from the true value, so the teacher can score
trajectories with mistakes. Splits: train (6000), validation (500; lr selection and the training curves),
held-out (1000; the test split) and "hard" (256, 4-5 steps, longer than any training chain), disjoint by
construction. A byte-level BPE tokenizer; a teacher (3 layers × 96) trained by SFT for 1200 steps and a
student (1 layer × 48) for 1800 steps; then that initial student distilled for 150 steps by each method at
its lr (`testbed.lr`), and greedy accuracy (GSM8K strict `#### N`) of every model on every split, with 95 %
bootstrap CIs and paired differences (results.json `summary`, the verdict). Prints the table and writes
<workdir>/results.md, results.json, results.png, and the per-token view of the TSD-KD stage
(seed0/tsdkd/selections.html and .png). Finished stages are skipped on a rerun; an interrupted one resumes.

Runtime on 2 CPU cores and the measured table: benchmarks/RESULTS.md ("Testbed v2"). The pilot that chose these
numbers, with the SFT curves, fork entropies and the positive control: benchmarks/testbed_v2_pilot.md. The
student is not at a true capacity plateau (doubling its SFT still helps; the 15-minute budget does not allow
more), but continued SFT on gold solutions for the distillation budget does not improve it, while GKD does.

Variants (comma-separated after a colon):
  smoke   a shrunken end-to-end run for CI (tiny models, a few steps each; accuracies are meaningless)
  study   the evidence run: 5 paired seeds (each its own initial student; problems, tokenizer and teacher
          shared), the lr sweep (every method at lr 3e-5, 1e-4, 3e-4 on seed 0, chosen on validation), the
          ablations (gate only, gate + EM, gate + ranking, EM alone) and sensitivity (EM weight 0.1, k = 2) at
          TSD-KD's lr; paired CIs over seeds × problems. ~40 min on 2 shared CPU cores (2026-11-29;
          benchmarks/RESULTS.md "Testbed v2" has its table and verdict)
  more    adds supervised KD, DistiLLM (skew KL), Speculative KD (K = 25, forward KL) and MiniLLM (paper
          defaults) to the compared methods
  ablate  adds the ablation and sensitivity stages to a one-seed run

Deviations from the paper's hyper-parameters. The loss's are the paper's: β = 0.9, τ = 1, k = 10, α = 0.1,
c = 0.1, ρ = 0.1, EM weight 1, λ = 1 (on-policy), sampling temperature 1, AdamW, grad clip 1. Changed for the
scale: peak lr per method from the grid 3e-5, 1e-4, 3e-4 (the paper: 5e-6 on 1.5B-14B models), warm-up 5 %
(paper 10 %) then cosine to 10 % of the peak, 150 steps of 32 prompts, responses ≤ 28 tokens, float32
everywhere (CPU). The same grid, steps and batch for every method. GKD: the generalized JSD with the same
β = 0.9 and λ = 1, without gate, ranking or EM terms (TRL's defaults would be β = 0.5, λ = 0.5). SeqKD: teacher
samples at temperature 1, cross-entropy. SFT: continued cross-entropy on the gold solutions (no teacher).
"""

import ml_collections

from tsdkd_jax.train import default_config

METHODS = ("tsdkd", "gkd", "seqkd", "sft")  # the compared stages of the default run
MORE = ("supervised_kd", "distillm", "skd", "minillm")  # the stages `:more` adds
# Every distillation stage a variant can add: a name → the trainer fields it sets (besides the shared ones).
STAGES = {
    "tsdkd": {"method": "tsdkd"},  # the paper variant with the paper's loss hyper-parameters
    "gkd": {"method": "gkd"},  # on-policy generalized JSD, β 0.9, λ 1 (the positive control)
    "seqkd": {"method": "seqkd"},  # SFT on teacher samples
    "sft": {"method": "sft"},  # continued SFT on the gold solutions (the same budget, no teacher)
    "supervised_kd": {"method": "supervised_kd"},  # forward KL on the gold solutions
    "distillm": {"method": "distillm"},  # skew KL
    "skd": {"method": "skd"},  # Speculative KD: student proposes, teacher replaces outside its top 25
    "minillm": {"method": "minillm"},  # reverse KL by policy gradient, teacher-mixed α 0.2 (loss.minillm)
    # ablations of TSD-KD (its lr): which terms are on
    "tsdkd_gate_only": {"method": "tsdkd", "loss__use_em": False, "loss__use_indirect": False},
    "tsdkd_gate_em": {"method": "tsdkd", "loss__use_indirect": False},
    "tsdkd_gate_rank": {"method": "tsdkd", "loss__use_em": False},
    "tsdkd_em_only": {"method": "tsdkd", "loss__use_direct": False, "loss__use_indirect": False},
    # sensitivity: EM weight 0.1 (paper 1) and k = 2 candidates (paper 10)
    "tsdkd_em_w0p1": {"method": "tsdkd", "loss__em_weight": 0.1},
    "tsdkd_k2": {"method": "tsdkd", "loss__rank_k": 2},
}
ABLATIONS = (
    "tsdkd_gate_only",
    "tsdkd_gate_em",
    "tsdkd_gate_rank",
    "tsdkd_em_only",
    "tsdkd_em_w0p1",
    "tsdkd_k2",
)
VARIANTS = ("smoke", "study", "more", "ablate")
LR_GRID = (3e-5, 1e-4, 3e-4)  # the same grid for every method (the study's sweep)


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
    unknown = variants - set(VARIANTS)
    if unknown:
        raise ValueError(
            f"configs/testbed.py: unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}"
        )
    study = "study" in variants
    c = ml_collections.ConfigDict()
    c.testbed = ml_collections.ConfigDict()
    tb = c.testbed
    tb.seeds = (0, 1, 2, 3, 4) if study else (0,)  # one initial student and distillation run per seed
    tb.data_seed = 0  # seeds the problems, the tokenizer and the teacher (shared by all seeds)
    tb.methods = METHODS + (MORE if "more" in variants else ())
    tb.methods += ABLATIONS if (study or "ablate" in variants) else ()  # the distillation stages, in order
    tb.stages = ml_collections.ConfigDict(STAGES)  # stage name → trainer fields (see STAGES)
    # Distillation peak lr per method: what `:study`'s sweep chose on the validation split (seed 0, 150 steps,
    # 2026-11-29, 2 CPU cores; validation accuracy %, initial student 69.6):
    #              lr 3e-5   1e-4   3e-4
    #   tsdkd        77.0   80.8   80.8   → 1e-4 (ties: the smaller lr)
    #   gkd          71.4   73.8   73.0   → 1e-4
    #   seqkd        69.2   67.8   68.4   → 3e-5
    #   sft          68.0   70.4   69.6   → 1e-4
    # Ablations use TSD-KD's; supervised_kd, distillm and minillm (`:more`, not swept) use the grid's middle.
    tb.lr = ml_collections.ConfigDict(
        {"tsdkd": 1e-4, "gkd": 1e-4, "seqkd": 3e-5, "sft": 1e-4, **dict.fromkeys(MORE, 1e-4)}
    )
    tb.sweep = ml_collections.ConfigDict()
    tb.sweep.lrs = LR_GRID if study else ()  # empty: no sweep, use testbed.lr
    tb.sweep.methods = tuple(m for m in METHODS + MORE if m in tb.methods)
    tb.sweep.seed = 0  # the sweep trains from this seed's initial student (the first of testbed.seeds)

    tb.problems = ml_collections.ConfigDict()
    tb.problems.n_train = 6000  # training problems (SFT and distillation prompts)
    tb.problems.n_validation = 500  # lr selection and the training curves (never reported as the result)
    tb.problems.n_heldout = 1000  # the test split: held-out problems, 2-3 steps like train
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
    tb.teacher = _model(3, 96, 4, 2, 256, sft_steps=1200, sft_lr=3e-3, eval_every=300)
    tb.student = _model(1, 48, 2, 1, 128, sft_steps=1800, sft_lr=3e-3, eval_every=300)
    tb.sft_batch = 32  # SFT prompts per step

    tb.distill_steps = 150  # distillation steps per stage
    tb.eval_every = 0 if study else 50  # validation accuracy every N distillation steps (curve); 0: none
    tb.curve_size = 256  # validation problems used for the curve
    tb.eval_batch = 64  # prompts per greedy-decoding batch
    tb.eval_max_new_tokens = 40  # hard solutions are ≤ 38 tokens

    # The trainer config every stage starts from (tsdkd_jax.train.default_config); stages set method, paths,
    # steps and lr. Override with e.g. --config.base.loss.beta=0.5.
    c.base = default_config()
    b = c.base
    b.log_every = 5  # metrics.jsonl row every 5 steps
    b.student.compute_dtype = "float32"  # CPU
    b.teacher.dtype = "float32"  # CPU: bfloat16 matmuls are slow there
    # CPU: programs inline, scratch memory kept (tsdkd_jax/hostmem.py): the teacher's SFT steps are ~1.4x
    # faster, the small distillation steps about as fast; the default run 4:37 → 3:57 (benchmarks/RESULTS.md)
    b.cpu_inline_dispatch = True
    b.data.prompt_field = "prompt"
    b.data.response_field = "response"  # the correct solution (SFT, supervised KD)
    b.data.max_prompt_len = 64  # every prompt fits (≤ 64 tokens with the chat template and a recovery prefix)
    b.data.max_response_len = 28  # every train solution fits (≤ 26 tokens incl. end of turn)
    b.data.prompt_bucket = "max"  # one prompt shape → one compiled step
    b.data.batch_size = 32  # distillation prompts per step
    b.sampling.max_new_tokens = 28  # on-policy response length
    b.sampling.temperature = 1.0  # the paper's sampling
    b.loss.chunk_size = 256  # tokens per loss chunk
    b.optim.lr = 1e-4  # overridden per stage by testbed.lr (the paper: 5e-6 at 1.5B-14B parameters)
    b.optim.warmup_frac = 0.05
    b.optim.end_lr_frac = 0.1
    b.checkpoint.every = 50  # resumable stages
    b.checkpoint.keep = 1
    b.checkpoint.async_save = False

    if "smoke" in variants:
        tb.problems.n_train, tb.problems.n_heldout, tb.problems.n_hard = 400, 16, 16
        tb.problems.n_validation = 16
        tb.sweep.lrs = (1e-4, 3e-4) if study else ()
        tb.seeds = (0, 1) if study else (0,)
        tb.vocab_size = 320
        tb.teacher = _model(1, 32, 2, 1, 64, sft_steps=4, sft_lr=2e-3)
        tb.student = _model(1, 32, 2, 1, 64, sft_steps=2, sft_lr=2e-3)
        tb.sft_batch = 8
        tb.distill_steps, tb.eval_every, tb.curve_size, tb.eval_batch = 3, 3, 8, 8
        tb.eval_max_new_tokens = 16
        b.data.batch_size = 8
        b.checkpoint.every = 2
    return c
