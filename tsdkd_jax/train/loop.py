"""The run: validate → load (student fp32, teacher frozen) → resume or init → on-policy loop → export.

Per step: the data iterator gives this host's prompts; the λ coin of (seed, step) picks on-policy (the current
student samples responses for the whole global batch in one call; seqkd: the teacher samples) or dataset
responses; the jitted `train_step` is dispatched, and only then are the previous step's metrics pulled to the
host (so the host never stalls the device). Checkpoints every `checkpoint.every` steps, on SIGTERM and at the
end; a non-finite loss stops the run naming the step and the term, without a checkpoint.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np
from flax import nnx

from tsdkd_jax import checkpoint, data, models, parallel, plan
from tsdkd_jax.checkpoint import workdir as workdir_lib
from tsdkd_jax.eval import during_training
from tsdkd_jax.models import lora
from tsdkd_jax.parallel import distributed
from tsdkd_jax.train import assets, diagnostics, evaluate, methods, perf, rollout
from tsdkd_jax.train import config as config_lib
from tsdkd_jax.train import export as export_lib
from tsdkd_jax.train import metrics as metrics_lib
from tsdkd_jax.train import state as state_lib
from tsdkd_jax.train import step as step_lib
from tsdkd_jax.train.metrics import MetricsWriter, NonFiniteLossError, host_values

log = logging.getLogger(__name__)
# train_step's rng argument: the step is deterministic given its batch (sampling keys come from (seed, step)).
_NO_RNG = np.zeros((2,), np.uint32)

__all__ = ["NonFiniteLossError", "Trainer", "run"]


class Trainer:
    """Holds the run's models, state and compiled step; `run()` trains to `config.total_steps`."""

    # fn(texts) -> {name: value}: metrics of each sampled step's decoded responses (diagnostics.py), or None
    response_metrics = None

    def __init__(self, config, workdir: str):
        workdir_lib.check(workdir)  # a gs:// workdir without gcsfs fails here, not at the first save
        assets.ensure(config)  # generated model folders and data (configs/tiny.py), before validation
        self.config, self.workdir = config, os.fspath(workdir_lib.path(workdir))
        c = config
        devices = jax.devices()[: c.mesh.devices or None]
        config_lib.validate(c, device_count=len(devices), process_count=jax.process_count())
        self.lock = checkpoint.acquire_workdir_lock(self.workdir)  # one trainer per workdir (process 0)
        config_lib.record(c, self.workdir)  # <workdir>/config.json, read by tsdkd_jax.inspect
        plan.warn_if_too_big(c, devices)  # before loading or compiling anything
        self._load_tokenizers()
        self.mesh = parallel.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor, devices=devices)
        self.rules = {**parallel.DEFAULT_RULES, **c.mesh.rules.to_dict()}
        self.teacher_rules = {**self.rules, **c.teacher.rules.to_dict()}
        self.sampling_rules = {**self.rules, "embed": None}
        self.batch_axes = self.rules["batch"]
        self._load_teacher()
        params, p_shardings = self._load_student()
        self.tx = state_lib.optimizer(c)
        abstract_params = jax.eval_shape(lambda p: p, params)
        self.shardings = state_lib.state_shardings(p_shardings, self.tx, abstract_params, self.mesh)
        train_set = self._load_data()
        self.ckpt = checkpoint.Checkpointer(
            self.workdir, save_interval_steps=c.checkpoint.every, max_to_keep=c.checkpoint.keep,
            async_save=c.checkpoint.async_save, run_identity=checkpoint.run_identity(c, train_set),
            allow_config_change=c.checkpoint.allow_config_change,
        )  # fmt: skip
        if self.ckpt.latest_step() is not None:
            del params  # the restored copy replaces it: never both in memory
            self._restore(abstract_params)
        else:
            self.start_step = 0
            self.state = state_lib.init_state(params, self.tx, c.seed, self.shardings)
        export_lib.prepare_workdir(self.workdir, c, self.start_step)  # after a kill -9, a copy, a DONE run
        self._compile_step()
        metrics_lib.log_run_summary(self)

    # ---- setup phases ----------------------------------------------------------------------------------

    def _load_tokenizers(self):
        """The student's tokenizer (the teacher's must equal it), EOS ids and the pad id."""
        c, method = self.config, methods.of(self.config)
        self.tokenizer = data.load_tokenizer(config_lib.tokenizer_path(c, "student"))
        t_tok_path, t_tok = config_lib.tokenizer_path(c, "teacher"), None
        if method.needs_teacher and t_tok_path != config_lib.tokenizer_path(c, "student"):
            t_tok = data.load_tokenizer(t_tok_path)
        config_lib.check_pair(c, self.tokenizer, t_tok)
        self.eos_ids = data.eos_token_ids(c.student.path, self.tokenizer)
        pad_id = data.resolve_pad_id(c.data.pad_id, self.tokenizer, self.eos_ids)
        self.pad_id = self.eos_ids[0] if method.pad_is_eos else pad_id

    def _load_teacher(self):
        """The frozen teacher in its own sharded tree (None, None for a method without one)."""
        c = self.config
        self.teacher_graphdef, self.teacher_params, self.teacher_config = None, None, None
        if methods.of(c).needs_teacher:
            teacher = models.from_pretrained(c.teacher.path, c.teacher.dtype, self.mesh, self.teacher_rules)
            self.teacher_config = teacher.config
            self.teacher_graphdef, t_state = nnx.split(teacher)
            self.teacher_params = nnx.to_pure_dict(t_state)

    def _load_student(self):
        """(params, their shardings) of the student; sets graphdef and model_config."""
        c = self.config
        resize = None
        if c.student.resize_vocab_to_teacher and self.teacher_config is not None:
            resize = self.teacher_config.vocab_size
        p_dtype = c.student.param_dtype  # float32: the optimizer's master copy; bfloat16: the official run's
        student = models.from_pretrained(c.student.path, p_dtype, self.mesh, self.rules, vocab_size=resize)
        student.dtype = jax.numpy.dtype(c.student.compute_dtype)
        student.remat = bool(c.student.remat)
        lora.add_adapters(student, c.lora, seed=c.seed, mesh=self.mesh, rules=self.rules)  # rank 0: none
        self.model_config = student.config
        p_shardings = state_lib.param_shardings(student, self.mesh, self.rules)
        self.graphdef, s_state = nnx.split(student)
        return nnx.to_pure_dict(s_state), p_shardings

    def _load_data(self):
        """This host's prompt iterator and the held-out prompts; returns the train set."""
        c = self.config
        train_set, self.heldout, self.data_stats = data.load_prompt_data(
            c.data, self.tokenizer, eos_ids=self.eos_ids, process_count=jax.process_count()
        )
        self.iterator = data.PromptIterator.from_config(train_set, c.data, pad_id=self.pad_id)
        return train_set

    def _restore(self, abstract_params):
        """The latest checkpoint onto this run's shardings, with the data iterator's position."""
        state = state_lib.abstract_state(abstract_params, self.tx)
        self.state, meta = self.ckpt.restore(checkpoint.abstract_target(state, self.shardings))
        self.iterator.set_state(meta["data"])
        self.start_step = int(self.state["step"])
        checkpoint.check_resume_step(self.start_step, self.config.total_steps, self.ckpt.directory)
        log.info("resumed from %s at step %d", self.ckpt.directory, self.start_step)

    def _compile_step(self):
        c = self.config
        self.spec = step_lib.make_spec(c, pad_id=self.pad_id, mesh=self.mesh, batch_axes=self.batch_axes)
        kw = {"graphdef": self.graphdef, "teacher_graphdef": self.teacher_graphdef, "tx": self.tx,
              "lr_fn": state_lib.schedule(c)}  # fmt: skip
        self.step_fn = step_lib.jit_train_step(
            self.spec,
            **kw,
            state_shardings=self.shardings,
            teacher_params=self.teacher_params,
            mesh=self.mesh,
        )
        self.split_step = perf.SplitStep(self.spec, **kw) if c.profile_every else None
        self.peak_flops = perf.peak_flops(self.mesh.devices.flat[0])

    def step_flops(self, batch) -> float:
        """Model FLOPs of one step on `batch` (see perf.py)."""
        n = batch["response_ids"].shape[1]
        rows, seq_len = batch["prompt_ids"].shape[0], batch["prompt_ids"].shape[1] + n
        return perf.step_flops(
            self.model_config, self.teacher_config, rows=rows, seq_len=seq_len, response_len=n,
            prepass=perf.has_prepass(self.spec),
        )  # fmt: skip

    def to_global(self, x):
        return rollout.to_global(np.asarray(x), self.mesh, self.batch_axes)

    def sample(self, graphdef, params, prompt_ids, prompt_mask, key):
        return rollout.sample(
            graphdef, params, prompt_ids, prompt_mask, key, config=self.config, eos_ids=self.eos_ids,
            pad_id=self.pad_id, mesh=self.mesh, rules=self.sampling_rules,
        )  # fmt: skip

    # ---- one step's batch ----------------------------------------------------------------------------

    def make_batch(self, step: int, host_batch) -> tuple[dict, float, bool]:
        """Global arrays of the step's prompts and responses, the sampling time, and whether it sampled."""
        return rollout.step_batch(self, step, host_batch)

    # ---- the loop ------------------------------------------------------------------------------------

    def _meta(self):
        return {"data": self.iterator.get_state(), "method": self.config.method}

    def _finish(self, pending, writer, eval_value=None) -> dict:
        """Pull a dispatched step's metrics to the host, check them, write them."""
        step, metrics, extra, t_dispatch = pending
        values = host_values(
            step, metrics, extra, t_dispatch, peak_flops=self.peak_flops, n_devices=self.mesh.devices.size
        )
        if eval_value is not None:
            values["eval/kl_teacher_student"] = eval_value
        if step % self.config.log_every == 0 or step == self.config.total_steps or eval_value is not None:
            writer.write(step, values)
        return values

    def run(self, hook=None) -> dict:
        """Train to total_steps (or until SIGTERM); returns the last step's metrics.

        `hook(step, params) -> dict | None`, when given, is called at step 0 (fresh runs) and after every
        step's update; a dict it returns is logged as that step's extra metrics (e.g. held-out accuracy).
        """
        c = self.config
        hook = during_training.with_benchmarks(self, hook)  # config.eval.benchmarks' accuracy rows
        writer = MetricsWriter(self.workdir, total_steps=c.total_steps, start_step=self.start_step, config=c)
        last, pending = {}, None
        try:
            eval_batches = self._start(writer, hook)
            with checkpoint.PreemptionGuard() as guard:
                for step in range(self.start_step + 1, c.total_steps + 1):
                    pending, last = self._dispatch(step, pending, writer, last)
                    if hook is not None and (values := hook(step, self.state["params"])):
                        writer.write(step, values)
                    stop = guard.should_stop(step)
                    pending, last = self._evaluate_and_save(step, pending, writer, eval_batches, stop, last)
                    if c.debug.step_sleep:
                        time.sleep(c.debug.step_sleep)
                    if stop:
                        log.warning("stopping at step %d after a stop signal (checkpoint saved)", step)
                        break
                if pending is not None:
                    last = self._finish(pending, writer)
            self._complete()
        finally:
            try:
                writer.close()
            finally:
                self.close()
        return last

    # ---- the loop's phases -----------------------------------------------------------------------------

    def _start(self, writer, hook) -> list[dict]:
        """Step-0 rows of a fresh run (the hook's, the held-out KL); returns the held-out batches."""
        if hook is not None and self.start_step == 0 and (values := hook(0, self.state["params"])):
            writer.write(0, values)
        eval_batches = evaluate.heldout_batches(self)
        if eval_batches and self.start_step == 0 and self.config.eval_at_ends:
            kl = evaluate.heldout_kl(self, self.state["params"], eval_batches)
            writer.write(0, {"eval/kl_teacher_student": kl})
        return eval_batches

    def _dispatch(self, step: int, pending, writer, last):
        """Samples and dispatches `step`; then pulls the previous step's metrics (the host never stalls the
        device). Returns (this step's pending metrics, the last finished ones)."""
        c = self.config
        batch, t_sample, sampled = self.make_batch(step, next(self.iterator))
        profiled = {}
        if c.profile_every and step % c.profile_every == 0:  # time the pieces; discard the update
            profiled = self.split_step(self.state, self.teacher_params, batch)[2]
        t_dispatch = time.perf_counter()
        self.state, metrics = self.step_fn(self.state, self.teacher_params, batch, _NO_RNG)
        if pending is not None:
            last = self._finish(pending, writer)
        extra = {"time/sample": t_sample, "on_policy": float(sampled), "flops": self.step_flops(batch)}
        extra.update(profiled)
        extra.update(diagnostics.response_metrics(self, batch) if sampled else {})  # host work
        return (step, metrics, extra, t_dispatch), last

    def _evaluate_and_save(self, step: int, pending, writer, eval_batches, stop: bool, last):
        """At an eval, checkpoint, stop or final step: held-out KL, the step's row and a checkpoint."""
        c = self.config
        evaluate_now = eval_batches and (
            (c.eval_every and step % c.eval_every == 0) or (c.eval_at_ends and step == c.total_steps)
        )
        if not (stop or evaluate_now or step % c.checkpoint.every == 0 or step == c.total_steps):
            return pending, last
        kl = evaluate.heldout_kl(self, self.state["params"], eval_batches) if evaluate_now else None
        last = self._finish(pending, writer, kl)
        self.ckpt.save(step, self.state, self._meta(), metrics={"loss": last["loss"]},
                       force=stop or step == c.total_steps)  # fmt: skip
        writer.flush()  # rows up to a checkpoint are never lost (gs:// buffers them)
        return None, last

    def _complete(self) -> None:
        """After the loop: wait for the checkpoint; a finished run exports and marks its workdir DONE."""
        self.ckpt.wait_until_finished()
        if int(self.state["step"]) == self.config.total_steps:
            if self.config.checkpoint.export:
                self.export()
            distributed.mark_done(self.workdir)  # launch/ scripts stop resuming once this exists

    def close(self) -> None:
        """Close the checkpoint manager and release the workdir lock (run() does this itself)."""
        self.ckpt.close()
        self.lock.release()

    def export(self) -> str:
        """The student as an HF folder at <workdir>/export (see export.py)."""
        return export_lib.export_student(
            self.graphdef, self.state["params"], self.tokenizer, self.workdir,
            method=self.config.method, steps=int(self.state["step"]), base_model=self.config.student.path,
        )  # fmt: skip


def run(config, workdir: str) -> dict:
    """Build a Trainer and train; returns the last step's metrics."""
    return Trainer(config, workdir).run()
