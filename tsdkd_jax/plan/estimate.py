"""Per-device memory of a run, from the model shapes, the mesh and the logical-axis rules (no arrays built).

Parameters are sharded exactly as the trainer shards them: each tensor's logical names go through
`parallel.logical_to_sharding` on an abstract mesh of the planned size, and its shard shape is counted.
Activations use the same rules for the batch (data × fsdp), heads / kv heads / MLP / vocab (tensor).

Phases. The resident state (student params, AdamW moments, teacher) lives all run. Each sampler call (the
student's on-policy rollouts, with the teacher's cache and weights too under SKD's interleaved sampling;
the teacher's for seqkd and the held-out eval: KV cache, the compute-dtype
copy of the weights with fsdp shards gathered, or with sampling.gather_weights=False one block's gathered
weights at a time, the prefill) and the train step (gradients, saved activations, one block's working
set, the loss chunk or the unchunked loss; activations.py) are separate programs run one after the other, so peak = resident + the largest phase.
Within a phase, lasting lines add up and of the transient ones (working sets that exist one at a time: a
block, the loss, the prefill) only the largest counts. tests/plan compares this with XLA's compiled
memory analysis of the tiny config's train step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from jax.sharding import AbstractMesh, AxisType

from tsdkd_jax.models import lora
from tsdkd_jax.models.decoder import layer_param_specs, scans_layers
from tsdkd_jax.parallel import DEFAULT_RULES
from tsdkd_jax.parallel.mesh import AXES
from tsdkd_jax.plan.activations import F32, block_bytes, loss_bytes, shard_elems, split, student_activations
from tsdkd_jax.plan.report import Line, Plan
from tsdkd_jax.train import methods
from tsdkd_jax.train import step as step_lib


def abstract_mesh(sizes) -> AbstractMesh:
    return AbstractMesh(tuple(int(s) for s in sizes), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def resolve_mesh(sizes, num_devices: int | None) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with a -1 filled from `num_devices`."""
    sizes = [int(s) for s in sizes]
    if -1 in sizes:
        if not num_devices:
            raise ValueError(f"mesh {sizes} has a -1 axis: give the device count (--devices)")
        known = math.prod(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = num_devices // known
    return tuple(sizes)


def param_tensors(cfg, vocab_size: int | None = None) -> list[tuple[tuple[int, ...], tuple[str, ...]]]:
    """(shape, logical names) of every parameter of the decoder (as models.Decoder creates them)."""
    v, d = vocab_size or cfg.vocab_size, cfg.hidden_size
    out = [((v, d), ("vocab", "embed")), ((d,), ("norm",))]
    if not cfg.tie_embeddings:
        out.append(((v, d), ("vocab", "embed")))
    for shape, names in layer_param_specs(cfg).values():
        out.append(((cfg.num_layers, *shape), ("layers", *names)))
    return out


def param_bytes(cfg, mesh, rules, itemsize: int, vocab_size: int | None = None) -> int:
    """Bytes of one device's shard of every parameter."""
    return sum(shard_elems(n, s, mesh, rules) * itemsize for s, n in param_tensors(cfg, vocab_size))


def lora_bytes(cfg, config, mesh, rules, itemsize: int) -> int:
    """Bytes of one device's shard of the LoRA adapters of experiment `config` (0 when lora.rank is 0)."""
    if "lora" not in config or not config.lora.rank:
        return 0
    specs = [lora.adapter_specs(cfg, t, config.lora.rank) for t in lora.targets_of(config.lora)]
    return sum(shard_elems(n, s, mesh, rules) * itemsize for a, b, _ in specs for s, n in (a, b))


def layer_gather_bytes(cfg, mesh, rules, itemsize: int) -> int:
    """One block's weights as a device holds them while computing it: fsdp shards all-gathered (0 without
    fsdp sharding)."""
    layer = [(s[1:], n[1:]) for s, n in param_tensors(cfg) if n[0] == "layers"]
    kept = sum(shard_elems(n, s, mesh, rules) for s, n in layer)
    full = sum(shard_elems(n, s, mesh, {**rules, "embed": None}) for s, n in layer)
    return 0 if full == kept else full * itemsize


def decode_copy_bytes(cfg, mesh, rules, param_item: int, compute_item: int, vocab_size=None) -> int:
    """The sampler's copy of the weights (gather_weights=True) on one device: every floating weight in the
    narrower of its dtype and the compute dtype (norm scales keep theirs), fsdp shards gathered (`rules` are
    the sampling rules, "embed" replicated)."""
    narrow = min(param_item, compute_item)
    tensors = param_tensors(cfg, vocab_size)
    return sum(shard_elems(n, s, mesh, rules) * (param_item if "norm" in n else narrow) for s, n in tensors)


def streamed_gather_bytes(cfg, mesh, rules, itemsize: int, vocab_size=None) -> int:
    """gather_weights=False: the most one device gathers at a time, one block's weights or the vocab table
    (the unembedding), fsdp shards only (`rules`: the model's own)."""
    v, d = vocab_size or cfg.vocab_size, cfg.hidden_size
    kept = shard_elems(("vocab", "embed"), (v, d), mesh, rules)
    full = shard_elems(("vocab", "embed"), (v, d), mesh, {**rules, "embed": None})
    table = 0 if full == kept else full * itemsize
    return max(layer_gather_bytes(cfg, mesh, rules, itemsize), table)


def _kv_cache(cfg, batch: int, slots: int, itemsize: int, mesh, rules) -> int:
    names = ("layers", "batch", "length", "kv_heads", "head_dim")
    shape = (cfg.num_layers, batch, slots, cfg.num_kv_heads, cfg.head_dim)
    return 2 * shard_elems(names, shape, mesh, rules) * itemsize


@dataclasses.dataclass(frozen=True)
class _Setting:
    """What every part of the plan reads: the config, the two models and the mesh with its rules."""

    c: Any
    student: Any
    teacher: Any  # None when the method has no teacher
    mesh: Any
    rules: dict
    t_rules: dict
    s_rules: dict  # the sampler's (builder.Run.sampling_rules)
    s_vocab: int
    params: int  # bytes of the student's parameters per device (LoRA adapters included)
    trained: int  # of those, the bytes that get gradients and AdamW state (a LoRA student: its adapters)

    @property
    def cs(self) -> int:
        return np.dtype(self.c.student.compute_dtype).itemsize

    @property
    def ct(self) -> int:
        return np.dtype(self.c.teacher.dtype).itemsize

    @property
    def sp(self) -> int:  # params, gradients and AdamW state share it
        return np.dtype(self.c.student.param_dtype).itemsize

    @property
    def t_len(self) -> int:
        return self.c.data.max_prompt_len + self.c.sampling.max_new_tokens


def plan(config, student, teacher, *, mesh_sizes, device: str, capacity: int) -> Plan:
    """The per-device memory plan of `config` (a train config) for ModelConfigs `student` / `teacher`."""
    c = config
    mesh = abstract_mesh(mesh_sizes)
    rules = {**DEFAULT_RULES, **c.mesh.rules.to_dict()}
    teacher = teacher if methods.of(c).needs_teacher else None
    s_vocab = (
        teacher.vocab_size
        if (teacher is not None and c.student.resize_vocab_to_teacher)
        else student.vocab_size
    )
    sp = np.dtype(c.student.param_dtype).itemsize
    base, adapters = param_bytes(student, mesh, rules, sp, s_vocab), lora_bytes(student, c, mesh, rules, sp)
    x = _Setting(
        c, student, teacher, mesh, rules, {**rules, **c.teacher.rules.to_dict()}, {**rules, "embed": None},
        s_vocab, base + adapters, adapters or base,
    )  # fmt: skip
    lines = _resident_lines(x)
    for who, cfg, item, p_item, m_rules, vocab in _samplers(x):
        lines += _sampling_lines(x, f"sampling ({who})", cfg, item, p_item, m_rules, vocab)
    lines += _train_lines(x)
    return Plan(lines, dict(zip(AXES, mesh_sizes, strict=True)), device, capacity)


def _resident_lines(x: _Setting) -> list[Line]:
    c = x.c
    p_name = {4: "fp32 master", 2: "pure bf16"}.get(x.sp, c.student.param_dtype)
    lines = [
        Line("student params", "resident", x.params, f"{p_name}, {x.student.num_layers} layers"),
        Line("optimizer state", "resident", 2 * x.trained, f"AdamW μ, ν ({c.student.param_dtype})"),
    ]
    if x.teacher is not None:
        t_bytes = param_bytes(x.teacher, x.mesh, x.t_rules, x.ct)
        lines.append(Line("teacher params", "resident", t_bytes, c.teacher.dtype))
    return lines


def _samplers(x: _Setting) -> list[tuple]:
    """Which models sample, with their (compute, parameter) itemsizes, rules and vocabulary."""
    c, out = x.c, []
    if methods.samples_on_policy(c):
        who = "student, on-policy"
        if x.teacher is not None and methods.interleave_k(c) is not None:  # SKD: one loop, two caches
            who = "student + teacher, interleaved"
        elif x.teacher is not None and methods.of(c).teacher_mix is not None:  # MiniLLM: both decode at once
            who = "student + teacher, mixed"
        out.append((who, x.student, x.cs, x.sp, x.rules, x.s_vocab))
        if who != "student, on-policy":  # the same phase: its lines add up
            out.append((who, x.teacher, x.ct, x.ct, x.t_rules, None))
    teacher_samples = methods.of(c).responses == "teacher"
    if x.teacher is not None and (teacher_samples or c.eval_every or c.eval_at_ends):
        why = c.method if teacher_samples else "held-out eval"
        out.append((f"teacher, {why}", x.teacher, x.ct, x.ct, x.t_rules, None))
    return out


def _sampling_lines(x: _Setting, phase, cfg, item, p_item, m_rules, vocab) -> list[Line]:
    c, mesh, s_rules = x.c, x.mesh, x.s_rules
    b, p_len, t_len = c.data.batch_size, c.data.max_prompt_len, x.t_len
    rows_s = shard_elems(("batch",), (b,), mesh, s_rules)
    cache = _kv_cache(cfg, b, t_len - 1, item, mesh, s_rules)
    kept = param_bytes(cfg, mesh, m_rules, p_item, vocab)
    prefill = block_bytes(cfg, rows_s, p_len, t_len - 1, item, mesh, s_rules, residuals=False)
    prefill += rows_s * split("vocab", vocab or cfg.vocab_size, mesh, s_rules) * F32
    note = f"{cfg.num_layers} layers, {b} prompts × {t_len - 1} slots (the global batch)"
    lines = [Line("KV cache", phase, cache, note)]
    # sampling.generate casts on the shards (a copy only when that narrows them); then it gathers them
    # once per call, or (gather_weights=False) one block at a time.
    shards = decode_copy_bytes(cfg, mesh, m_rules, p_item, item, vocab)
    cast = shards if shards != kept else 0
    if c.sampling.gather_weights:
        gathered = decode_copy_bytes(cfg, mesh, {**m_rules, "embed": None}, p_item, item, vocab)
        copy = cast + (gathered if gathered != shards else 0)
        if copy:
            note = "compute-dtype copy, fsdp shards gathered once per call"
            lines.append(Line("weight all-gather", phase, copy, note))
    else:
        if cast:
            lines.append(Line("compute-dtype copy", phase, cast, "the shards, cast where they lie"))
        streamed = streamed_gather_bytes(cfg, mesh, m_rules, min(item, p_item), vocab)
        note = "sampling.gather_weights=False: one block (or the vocab table) gathered at a time"
        lines.append(Line("weights gathered per block", phase, streamed, note))
    lines.append(Line("prefill", phase, prefill, f"{p_len}-token prompts, one block", True))
    return lines


def _train_lines(x: _Setting) -> list[Line]:
    """The train step, per micro-batch of b / k rows."""
    c, student, teacher, mesh, rules, t_len = x.c, x.student, x.teacher, x.mesh, x.rules, x.t_len
    b, k, n_len = c.data.batch_size, c.optim.grad_accum, c.sampling.max_new_tokens
    rows = shard_elems(("batch",), (b // k,), mesh, rules)
    grads_note = c.student.param_dtype + (" + accumulator" if k > 1 else "")
    lines = [Line("gradients", "train", x.trained * (2 if k > 1 else 1), grads_note)]
    remat = bool(c.student.remat)
    saved, working, how = student_activations(
        student, rows, t_len, x.cs, mesh, rules, remat=remat, scans=scans_layers(student.num_layers, remat)
    )
    working += 2 * layer_gather_bytes(student, mesh, rules, x.sp)  # the gathered weights and their gradient
    saved += 4 * rows * t_len * student.hidden_size * x.cs  # embeddings, final hidden states, the response
    # slice and its cotangent
    if teacher is not None:
        saved += rows * n_len * teacher.hidden_size * x.ct  # the teacher's response hidden states
    lines.append(Line("activations (saved)", "train", saved, f"{rows} rows × {t_len} tokens, {how}"))
    note = "one block's residuals + cotangents (+ fsdp-gathered weights)"
    lines.append(Line("student block backward", "train", working, note, True))
    if teacher is not None:
        t_block = block_bytes(teacher, rows, t_len, t_len, x.ct, mesh, x.t_rules, residuals=False)
        t_block += layer_gather_bytes(teacher, mesh, x.t_rules, x.ct)
        note = "frozen: one block at a time (+ fsdp-gathered weights)"
        lines.append(Line("teacher block forward", "train", t_block, note, True))
    spec = step_lib.make_spec(c, pad_id=0, mesh=None, batch_axes=None)
    t_vocab = teacher.vocab_size if teacher is not None else None
    loss, note = loss_bytes(spec, b // k, (b // k) * n_len, x.s_vocab, t_vocab, mesh, rules)
    # its residuals and working set are gone before the student's blocks run backward: transient as well
    lines.append(Line("loss chunk" if "vocab" in note else "loss (unchunked)", "train", loss, note, True))
    return lines
