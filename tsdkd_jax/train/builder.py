"""`build(config, workdir) -> Run`: everything a run needs, made once, in one place.

validate → lock the workdir → tokenizers → mesh → frozen teacher (its own sharded tree) → student (fp32
master params) → optimizer and state shardings → data → checkpointer → restore or init → compiled step.
The Run is frozen; the loop (loop.py `train_and_evaluate`) threads the train state through its phases, and
evaluation, the testbed and benchmarks/train_bench.py read the fields they need from it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from tsdkd_jax import checkpoint, data, models, parallel, plan
from tsdkd_jax.checkpoint import workdir as workdir_lib
from tsdkd_jax.models import lora
from tsdkd_jax.train import assets, methods, pair, perf, rollout
from tsdkd_jax.train import config as config_lib
from tsdkd_jax.train import export as export_lib
from tsdkd_jax.train import metrics as metrics_lib
from tsdkd_jax.train import state as state_lib
from tsdkd_jax.train import step as step_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Run:
    """A built run. `state` is the train state at `start_step` (fresh or restored); the loop donates it."""

    config: Any
    workdir: str
    lock: Any  # the workdir lock (released by loop.close)
    mesh: Any
    rules: dict  # the student's logical-axis rules; the teacher's and the sampler's below
    teacher_rules: dict
    sampling_rules: dict
    tokenizer: Any
    eos_ids: tuple
    pad_id: int
    graphdef: Any  # the student's
    model_config: Any
    teacher_graphdef: Any  # None for a method without a teacher (teacher_params, teacher_config too)
    teacher_params: Any
    teacher_config: Any
    tx: Any
    shardings: dict  # of the train state
    spec: step_lib.StepSpec
    step_fn: Any  # jitted train_step(state, teacher_params, batch) -> (state, metrics), donating the state
    split_step: Any  # perf.SplitStep when config.profile_every, else None
    peak_flops: float | None
    iterator: data.PromptIterator  # this host's training prompts (stateful: its position is checkpointed)
    heldout: Any
    data_stats: Any
    ckpt: checkpoint.Checkpointer
    start_step: int
    state: dict

    @property
    def batch_axes(self):
        return self.rules["batch"]

    def to_global(self, x) -> jax.Array:
        """This host's rows → a global array with the batch axis over the mesh's data axes."""
        return rollout.to_global(np.asarray(x), self.mesh, self.batch_axes)

    def sample(self, graphdef, params, prompt_ids, prompt_mask, key):
        """One sampler call with this run's sampling settings, EOS ids, pad id and mesh."""
        return rollout.sample(
            graphdef, params, prompt_ids, prompt_mask, key, config=self.config, eos_ids=self.eos_ids,
            pad_id=self.pad_id, mesh=self.mesh, rules=self.sampling_rules,
        )  # fmt: skip


def build(config, workdir: str) -> Run:
    """Validates `config`, loads models and data, restores or initialises the state, compiles the step."""
    workdir_lib.check(workdir)  # a gs:// workdir without gcsfs fails here, not at the first save
    assets.ensure(config)  # generated model folders and data (configs/tiny.py), before validation
    c, workdir = config, os.fspath(workdir_lib.path(workdir))
    devices = jax.devices()[: c.mesh.devices or None]
    config_lib.validate(c, device_count=len(devices), process_count=jax.process_count())
    lock = checkpoint.acquire_workdir_lock(workdir)  # one trainer per workdir (process 0)
    plan.warn_if_too_big(c, devices)  # before loading or compiling anything
    f = {"config": c, "workdir": workdir, "lock": lock, **_tokenizers(c)}
    f["mesh"] = mesh = parallel.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor, devices=devices)
    f.update(_rules(c))
    f.update(_teacher(c, mesh, f["teacher_rules"]))
    params, p_shardings, student = _student(c, mesh, f["rules"], f["teacher_config"])
    f.update(student)
    f["tx"] = tx = state_lib.optimizer(c)
    abstract_params = jax.eval_shape(lambda p: p, params)
    f["shardings"] = state_lib.state_shardings(p_shardings, tx, abstract_params, mesh)
    train_set, loaded = _data(c, f["tokenizer"], f["eos_ids"], f["pad_id"])
    f.update(loaded)
    f["ckpt"] = _checkpointer(c, workdir, train_set)
    if f["ckpt"].latest_step() is not None:
        del params  # the restored copy replaces it: never both in memory
        f["state"], f["start_step"] = _restore(f, abstract_params)
    else:
        f["state"], f["start_step"] = state_lib.init_state(params, tx, c.seed, f["shardings"]), 0
    export_lib.prepare_workdir(workdir, c, f["start_step"])  # after a kill -9, a copy, a DONE run
    # <workdir>/config.json (read by tsdkd_jax.inspect): only once a resume has passed the identity check
    config_lib.record(c, workdir)
    f.update(_compile(c, f))
    run = Run(**f)
    metrics_lib.log_run_summary(run)
    return run


def _rules(c) -> dict:
    rules = {**parallel.DEFAULT_RULES, **c.mesh.rules.to_dict()}
    return {
        "rules": rules,
        "teacher_rules": {**rules, **c.teacher.rules.to_dict()},
        "sampling_rules": {**rules, "embed": None},
    }


def _tokenizers(c) -> dict:
    """The student's tokenizer (the teacher's must equal it), EOS ids and the pad id."""
    method = methods.of(c)
    tokenizer = data.load_tokenizer(pair.tokenizer_path(c, "student"))
    t_tok_path, t_tok = pair.tokenizer_path(c, "teacher"), None
    if method.needs_teacher and t_tok_path != pair.tokenizer_path(c, "student"):
        t_tok = data.load_tokenizer(t_tok_path)
    pair.check_pair(c, tokenizer, t_tok)
    eos_ids = data.eos_token_ids(c.student.path, tokenizer)
    pad_id = data.resolve_pad_id(c.data.pad_id, tokenizer, eos_ids)
    return {"tokenizer": tokenizer, "eos_ids": eos_ids, "pad_id": eos_ids[0] if method.pad_is_eos else pad_id}


def _teacher(c, mesh, rules) -> dict:
    """The frozen teacher in its own sharded tree (all None for a method without one)."""
    if not methods.of(c).needs_teacher:
        return {"teacher_graphdef": None, "teacher_params": None, "teacher_config": None}
    teacher = models.from_pretrained(c.teacher.path, c.teacher.dtype, mesh, rules)
    graphdef, t_state = nnx.split(teacher)
    return {
        "teacher_graphdef": graphdef,
        "teacher_params": nnx.to_pure_dict(t_state),
        "teacher_config": teacher.config,
    }


def _student(c, mesh, rules, teacher_config):
    """(params, their shardings, {graphdef, model_config}) of the student."""
    resize = None
    if c.student.resize_vocab_to_teacher and teacher_config is not None:
        resize = teacher_config.vocab_size
    p_dtype = c.student.param_dtype  # float32: the optimizer's master copy; bfloat16: the official run's
    student = models.from_pretrained(c.student.path, p_dtype, mesh, rules, vocab_size=resize)
    student.dtype = jax.numpy.dtype(c.student.compute_dtype)
    student.remat = bool(c.student.remat)
    lora.add_adapters(student, c.lora, seed=c.seed, mesh=mesh, rules=rules)  # rank 0: none
    p_shardings = state_lib.param_shardings(student, mesh, rules)
    graphdef, s_state = nnx.split(student)
    return nnx.to_pure_dict(s_state), p_shardings, {"graphdef": graphdef, "model_config": student.config}


def _data(c, tokenizer, eos_ids, pad_id):
    """(the train set, {this host's prompt iterator, the held-out prompts, the data stats})."""
    train_set, heldout, stats = data.load_prompt_data(
        c.data, tokenizer, eos_ids=eos_ids, process_count=jax.process_count()
    )
    iterator = data.PromptIterator.from_config(train_set, c.data, pad_id=pad_id)
    return train_set, {"iterator": iterator, "heldout": heldout, "data_stats": stats}


def _checkpointer(c, workdir, train_set) -> checkpoint.Checkpointer:
    return checkpoint.Checkpointer(
        workdir, save_interval_steps=c.checkpoint.every, max_to_keep=c.checkpoint.keep,
        async_save=c.checkpoint.async_save, run_identity=checkpoint.run_identity(c, train_set),
        allow_config_change=c.checkpoint.allow_config_change,
    )  # fmt: skip


def _restore(f, abstract_params):
    """(state, step) of the latest checkpoint on this run's shardings; moves the data iterator there."""
    abstract = state_lib.abstract_state(abstract_params, f["tx"])
    state, meta = f["ckpt"].restore(checkpoint.abstract_target(abstract, f["shardings"]))
    f["iterator"].set_state(meta["data"])
    start_step = int(state["step"])
    checkpoint.check_resume_step(start_step, f["config"].total_steps, f["ckpt"].directory)
    log.info("resumed from %s at step %d", f["ckpt"].directory, start_step)
    return state, start_step


def _compile(c, f) -> dict:
    """The step's spec, the jitted fused step and (profile mode) the split step; the device's peak FLOP/s."""
    spec = step_lib.make_spec(c, pad_id=f["pad_id"], mesh=f["mesh"], batch_axes=f["rules"]["batch"])
    kw = step_kwargs(c, f["graphdef"], f["teacher_graphdef"], f["tx"])
    step_fn = step_lib.jit_train_step(
        spec, **kw, state_shardings=f["shardings"], teacher_params=f["teacher_params"], mesh=f["mesh"]
    )
    return {
        "spec": spec,
        "step_fn": step_fn,
        "split_step": perf.SplitStep(spec, **kw) if c.profile_every else None,
        "peak_flops": perf.peak_flops(f["mesh"].devices.flat[0]),
    }


def step_kwargs(c, graphdef, teacher_graphdef, tx) -> dict:
    """The static keyword arguments of train_step (and of perf.SplitStep)."""
    return {
        "graphdef": graphdef,
        "teacher_graphdef": teacher_graphdef,
        "tx": tx,
        "lr_fn": state_lib.schedule(c),
    }


def step_flops(run: Run, batch) -> float:
    """Model FLOPs of one step on `batch` (see perf.py)."""
    n = batch["response_ids"].shape[1]
    rows, seq_len = batch["prompt_ids"].shape[0], batch["prompt_ids"].shape[1] + n
    return perf.step_flops(
        run.model_config, run.teacher_config, rows=rows, seq_len=seq_len, response_len=n,
        prepass=perf.has_prepass(run.spec),
    )  # fmt: skip
