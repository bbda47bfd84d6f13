"""The experiment config schema (every section but `data`, which is tsdkd_jax.data's) and its validation.

`default_config()` lists every field with its default; experiment files (configs/*.py) start from it and
override. `validate(config)` runs before anything is loaded or compiled and raises ValueError (or
FileNotFoundError for a missing path) naming the field at fault; `check_pair(config)` reads the two models'
config.json and tokenizers and rejects a teacher/student pair that cannot be distilled.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections

from tsdkd_jax import data as data_lib
from tsdkd_jax import losses
from tsdkd_jax.models import lora as lora_lib
from tsdkd_jax.train import methods as methods_lib
from tsdkd_jax.train import reporting
from tsdkd_jax.train.run_record import RUN_CONFIG, record, recorded  # noqa: F401 (config_lib.record etc.)

METHODS = methods_lib.METHODS  # name → what the method is (methods.py)
NORMALIZE = ("global", "micro_batch")
DTYPES = ("float32", "bfloat16")


def default_config() -> ml_collections.ConfigDict:
    """Every field with its default; comments say what it means."""
    c = ml_collections.ConfigDict()
    c.method = "tsdkd"  # one of METHODS
    c.seed = 0  # the state's rng: each step's λ coin and sampling key fold the step into it (rollout.py)
    c.total_steps = 100  # optimizer steps of the run
    c.log_every = 1  # metrics.jsonl / TensorBoard row every N steps
    # held-out KL(teacher‖student) and eval.benchmarks every N steps (0 = only at the ends with eval_at_ends)
    c.eval_every = 0
    c.eval_at_ends = False  # held-out KL at step 0 and at the last step (logged as eval/kl_teacher_student)
    c.eval_batches = 1  # held-out batches per evaluation
    # every N steps also time the step's pieces (time/teacher, time/student_loss, time/update) as separately
    # jitted calls on the same batch: an extra step's compute and compile, so 0 (off) by default (perf.py)
    c.profile_every = 0
    # CPU-only hosts, read by `python -m tsdkd_jax.main` before its first JAX computation: run XLA programs
    # inline and keep their scratch memory between steps (tsdkd_jax/hostmem.py). Faster for large steps
    # (the testbed teacher's SFT step: no 27k page faults a step), slower for small on-policy loops (no
    # overlap of host work with the program); no effect with a GPU or TPU
    c.cpu_inline_dispatch = False

    c.student = ml_collections.ConfigDict()
    c.student.path = ""  # HF folder of the student (config.json + safetensors); the start point
    c.student.tokenizer = ""  # tokenizer folder or hub name ("" = student.path)
    c.student.compute_dtype = "float32"  # activations/matmuls (weights are cast to it at use)
    # Parameters, gradients and AdamW state. "float32": a master copy (updates far below a weight's bf16
    # resolution still add up). "bfloat16": the released run's pure-bf16 training, where they are lost.
    c.student.param_dtype = "float32"
    c.student.remat = False  # recompute each block in the backward pass (less memory, more compute)
    c.student.resize_vocab_to_teacher = False  # zero-pad the student's embedding to the teacher's vocab

    c.teacher = ml_collections.ConfigDict()
    c.teacher.path = ""  # HF folder of the frozen teacher ("" only for a method without one: sft)
    c.teacher.tokenizer = ""  # its tokenizer ("" = teacher.path, then student's); must equal the student's
    c.teacher.dtype = "bfloat16"  # storage and compute dtype of the teacher (never trained)
    c.teacher.rules = ml_collections.ConfigDict()  # logical-axis overrides for the teacher (e.g. more tensor)

    c.data = data_lib.default_config()
    c.lora = lora_lib.default_config()  # LoRA student: rank (0 = off), alpha, targets (models/lora.py)

    c.loss = ml_collections.ConfigDict()
    c.loss.beta = 0.9  # generalized JSD β (0 = forward KL, 1 = reverse KL)
    c.loss.gate_tau = 1.0  # τ of the entropy gate
    c.loss.rank_k = 10  # k of the indirect (ranking) term
    c.loss.rank_weight = 0.1  # α: weight of the indirect term
    c.loss.opener_frac = 0.1  # c: opener = prefix holding this fraction of the response entropy
    c.loss.em_frac = 0.1  # ρ: EM set = top ρ fraction of each response's entropies
    c.loss.em_weight = 1.0  # weight of the entropy-minimisation term
    c.loss.use_gate = True  # ablation: gate ≡ 1 when False
    c.loss.use_indirect = True  # ablation: drop the ranking term
    c.loss.use_em = True  # ablation: drop the entropy term
    c.loss.use_direct = True  # ablation: drop the gated divergence term (with use_indirect=False: EM alone)
    c.loss.divergence = "skl"  # distillm only: "skl" (skew KL) or "srkl" (skew reverse KL)
    c.loss.skew_alpha = 0.1  # distillm skew α
    c.loss.skd_top_k = 25  # skd: a proposal outside the teacher's top K is replaced (paper: K = 25)
    c.loss.minillm = methods_lib.minillm_defaults()  # minillm only: mixing α, clip ε, length norm
    c.loss.normalize = "global"  # "global": Σ token terms / global counts; "micro_batch": mean of means
    c.loss.chunk_size = 1024  # tokens per chunk of the from-hidden loss (peak memory ∝ chunk × vocab)
    c.loss.vocab_policy = "pad_student"  # student vocab < teacher's: "pad_student" or "truncate_teacher"
    c.loss.lam = 1.0  # λ: probability that a step's responses are sampled by the student (on-policy)
    c.loss.term_grad_norms = True  # log grad_norm/<term> (diagnostics.py): a loss-head backward per term
    c.loss.fused = False  # KD loss value+grad in one chunked pass, no remat (losses/fused.py): same numbers
    c.loss.logits_dtype = "float32"  # "bfloat16": round logits to bf16 before the loss (official bf16 math)

    c.sampling = ml_collections.ConfigDict()
    c.sampling.max_new_tokens = 256  # response length N (dataset responses are padded to it)
    # responses are cut to a multiple of this that holds the batch's longest (train/buckets.py); 0 = the
    # method's default: 1 for tsdkd_official (the released run's grid), 64 otherwise
    c.sampling.length_bucket = 0
    c.sampling.temperature = 1.0  # 0 = greedy
    c.sampling.top_k = 0  # 0 = off
    c.sampling.top_p = 1.0  # 1 = off
    # False: sampler calls (on-policy, seqkd, held-out teacher) decode from the weights' own shards, XLA
    # gathering one block at a time every step: slower, for a model too big to hold whole on a device
    c.sampling.gather_weights = True

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-6  # peak learning rate
    c.optim.warmup_frac = 0.1  # linear warm-up over this fraction of total_steps, then cosine to end_lr_frac
    c.optim.end_lr_frac = 0.0  # final lr as a fraction of the peak
    c.optim.weight_decay = 0.0  # AdamW decoupled weight decay
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.grad_clip = 1.0  # clip_by_global_norm (0 = off)
    c.optim.grad_accum = 1  # micro-batches per step; data.batch_size is the global batch

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # mesh axis sizes; one may be -1 (= all remaining devices)
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.devices = 0  # use only the first N devices (0 = all); for tests and single-device baselines
    c.mesh.rules = ml_collections.ConfigDict()  # logical-axis → mesh-axis overrides for the student

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 1000  # save every N steps (and on SIGTERM, and at the end)
    c.checkpoint.keep = 3  # keep the newest N steps
    c.checkpoint.async_save = True
    # Resume a checkpoint saved with another method/loss/optim/data/model path (warns; shapes must still match)
    c.checkpoint.allow_config_change = False
    c.checkpoint.export = True  # write the final student to <workdir>/export as an HF folder

    c.assets = ml_collections.ConfigDict()  # generated model folders and data (train/assets.py)
    c.assets.builder = ""  # "" = none; "tiny": tiny.build(dir, teacher_head_scale) before the run starts
    c.assets.dir = ""
    c.assets.teacher_head_scale = 40.0

    reporting.add_defaults(c)  # eval (benchmark accuracy during training), logging (W&B)
    return c


def err(field: str, msg: str) -> ValueError:
    return ValueError(f"{field}: {msg}")


def hf_config(path: str, field: str) -> dict[str, Any]:
    cfg_path = os.path.join(os.path.expanduser(path), "config.json")
    if not os.path.isdir(os.path.expanduser(path)):
        raise FileNotFoundError(f"{field}={path!r}: no such model folder")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{field}={path!r}: no config.json (expected a Hugging Face model folder)")
    with open(cfg_path) as f:
        return json.load(f)


def mesh_batch_ways(config, device_count: int) -> int:
    """How many ways the batch is split: the product of the data and fsdp mesh axes."""
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        sizes[sizes.index(-1)] = max(device_count // max(known, 1), 1)
    return sizes[0] * sizes[1]


def validate(config, *, device_count: int = 1, process_count: int = 1, check_paths: bool = True) -> None:
    """Checks the config before anything is loaded or compiled; errors name the field.

    check_paths=False skips what needs the files (model folders, a local data file): for checking an
    experiment file on a machine without its models, e.g. the paper configs in tests.
    """
    _check_values(config)
    _check_shapes(config, device_count)
    _check_models(config, check_paths)
    lora_lib.validate(config.lora)
    reporting.check(config, process_count=process_count, check_paths=check_paths)
    try:
        data_lib.validate(config.data, process_count=process_count)
    except FileNotFoundError:
        if check_paths:
            raise


def _check_values(config) -> None:
    """Each field's own range, and the method's own requirements (methods.py)."""
    if config.method not in METHODS:
        raise err("method", f"unknown method {config.method!r}; expected one of {tuple(METHODS)}")
    for name in ("beta", "lam"):
        v = config.loss[name]
        if not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
            raise err(f"loss.{name}", f"must be in [0, 1], got {v!r}")
    if config.loss.normalize not in NORMALIZE:
        raise err("loss.normalize", f"must be one of {NORMALIZE}, got {config.loss.normalize!r}")
    method = methods_lib.METHODS[config.method]
    if (problem := method.check(config.loss)) is not None:
        raise err(*problem)
    if config.loss.fused and not isinstance(methods_lib.loss_config(config), losses.LossConfig):
        raise err(
            "loss.fused",
            f"only the KD losses (tsdkd, gkd, distillm, ...) have a fused path, not {config.method}",
        )
    s = config.sampling  # teacher-mixed rollouts (MiniLLM) sample the mixture as it is: no warping to ignore
    if method.teacher_mix is not None and (s.temperature != 1.0 or s.top_k != 0 or s.top_p != 1.0):
        raise err("sampling", f"{config.method} samples at temperature 1 with no top-k/top-p; got "
                   f"temperature={s.temperature}, top_k={s.top_k}, top_p={s.top_p}")  # fmt: skip
    dtype_fields = (("student", "compute_dtype"), ("student", "param_dtype"), ("teacher", "dtype"),
                    ("loss", "logits_dtype"))  # fmt: skip
    for section, field in dtype_fields:
        if config[section][field] not in DTYPES:
            raise err(f"{section}.{field}", f"must be one of {DTYPES}, got {config[section][field]!r}")
    if not isinstance(config.cpu_inline_dispatch, bool):
        raise err("cpu_inline_dispatch", f"must be True or False, got {config.cpu_inline_dispatch!r}")
    if config.profile_every < 0:
        raise err("profile_every", f"must be >= 0, got {config.profile_every}")
    for field in ("total_steps", "log_every", "eval_batches"):
        if config[field] < 1:
            raise err(field, f"must be >= 1, got {config[field]}")
    if config.sampling.max_new_tokens < 1:
        raise err("sampling.max_new_tokens", f"must be >= 1, got {config.sampling.max_new_tokens}")
    if config.sampling.length_bucket < 0:
        raise err(
            "sampling.length_bucket",
            f"must be >= 0 (0 = the method's default), got {config.sampling.length_bucket}",
        )
    o = config.optim
    if o.lr < 0 or not 0 <= o.warmup_frac <= 1:
        raise err("optim.lr/warmup_frac", f"got lr={o.lr}, warmup_frac={o.warmup_frac}")
    if config.optim.grad_accum < 1:
        raise err("optim.grad_accum", f"must be >= 1, got {config.optim.grad_accum}")
    for field in ("every", "keep"):  # keep=0 would keep no checkpoint at all
        if config.checkpoint[field] < 1:
            raise err(f"checkpoint.{field}", f"must be >= 1, got {config.checkpoint[field]}")
    for field in ("chunk_size", "rank_k"):
        if config.loss[field] < 1:
            raise err(f"loss.{field}", f"must be >= 1, got {config.loss[field]}")


def _check_shapes(config, device_count: int) -> None:
    """The batch over micro-batches and the mesh; the responses the method trains on."""
    b, k = config.data.batch_size, config.optim.grad_accum
    if b % k:
        raise err("data.batch_size", f"{b} is not divisible by optim.grad_accum={k}")
    ways = mesh_batch_ways(config, device_count)
    if (b // k) % ways:
        raise err(
            "data.batch_size",
            f"the micro-batch data.batch_size/optim.grad_accum = {b // k} is not divisible by the data axes "
            f"of the mesh (mesh.data × mesh.fsdp = {ways})",
        )
    if methods_lib.needs_dataset_responses(config) and not config.data.response_field:
        need = f"method={config.method} with λ={config.loss.lam} needs dataset responses"
        raise err("data.response_field", need)
    if config.data.response_field and config.data.max_response_len > config.sampling.max_new_tokens:
        raise err(
            "data.max_response_len",
            f"{config.data.max_response_len} exceeds sampling.max_new_tokens={config.sampling.max_new_tokens} "
            "(the response length every batch is padded to)",
        )


def _check_models(config, check_paths: bool) -> None:
    """The model folders (a teacher where the method needs one)."""
    if not config.student.path:
        raise err("student.path", "is empty")
    if check_paths:
        hf_config(config.student.path, "student.path")
    if methods_lib.of(config).needs_teacher:
        if not config.teacher.path:
            raise err("teacher.path", f"is empty (method={config.method} needs a teacher)")
        if check_paths:
            hf_config(config.teacher.path, "teacher.path")
