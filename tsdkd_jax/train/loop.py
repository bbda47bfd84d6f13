"""The loop: `train_and_evaluate(run)` trains a built run (builder.py) to `config.total_steps`, then exports.

Per step (`_train_phase`): the data iterator gives this host's prompts; the λ coin of the step (from the
state's saved key) picks on-policy (the current student samples responses for the whole global batch in one
call; seqkd: the teacher samples) or dataset responses; the jitted step is dispatched, and only then are the
previous step's metrics pulled to the host (`_metrics_phase`: the host never stalls the device). Then
`_eval_and_checkpoint_phase` (held-out KL, every `checkpoint.every` steps, on SIGTERM and at the end) and,
after the loop, `_export_phase`. A non-finite loss stops the run naming the step and the term, without a
checkpoint.

`Trainer(config, workdir)` / `run(config, workdir)` are the public API's thin wrappers over build +
train_and_evaluate.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from tsdkd_jax import checkpoint
from tsdkd_jax.eval import during_training
from tsdkd_jax.parallel import distributed
from tsdkd_jax.train import builder, diagnostics, evaluate, rollout
from tsdkd_jax.train import export as export_lib
from tsdkd_jax.train.metrics import MetricsWriter, NonFiniteLossError, host_values

log = logging.getLogger(__name__)

__all__ = ["NonFiniteLossError", "Trainer", "close", "export", "run", "train_and_evaluate"]


@dataclasses.dataclass
class _Loop:
    """What the phases pass along: the state, the dispatched step not yet pulled, the last pulled metrics."""

    state: dict
    key: object  # the run's key (rollout.run_key of the state)
    writer: MetricsWriter
    hook: object = None
    response_metrics: object = None
    pending: tuple | None = None
    last: dict = dataclasses.field(default_factory=dict)


def train_and_evaluate(run, state=None, *, hook=None, response_metrics=None) -> tuple[dict, dict]:
    """Train `run` (from `state`, default run.state) to total_steps or a stop signal; closes the run.
    Returns (the final state, the last step's metrics).

    `hook(step, params) -> dict | None` is called at step 0 (fresh runs) and after every step's update; a dict
    it returns is logged as that step's extra metrics (e.g. held-out accuracy). `response_metrics(texts) ->
    {name: value}` is logged for every sampled step's decoded responses (diagnostics.py).
    """
    c = run.config
    state = run.state if state is None else state
    hook = during_training.with_benchmarks(run, hook)  # config.eval.benchmarks' accuracy rows
    try:  # W&B may fail to start: the checkpoint manager and the workdir lock are still released
        writer = MetricsWriter(run.workdir, total_steps=c.total_steps, start_step=run.start_step, config=c)
    except BaseException:
        close(run)
        raise
    loop = _Loop(state, rollout.run_key(state), writer, hook, response_metrics)
    try:
        eval_batches = _start_phase(run, loop)
        with checkpoint.PreemptionGuard() as guard:
            for step in range(run.start_step + 1, c.total_steps + 1):
                _train_phase(run, loop, step)
                if hook is not None and (values := hook(step, loop.state["params"])):
                    writer.write(step, values)
                stop = guard.should_stop(step)
                _eval_and_checkpoint_phase(run, loop, step, eval_batches, stop)
                if stop:
                    log.warning("stopping at step %d after a stop signal (checkpoint saved)", step)
                    break
            if loop.pending is not None:
                _metrics_phase(run, loop)
        _export_phase(run, loop.state)
    finally:
        try:
            writer.close()
        finally:
            close(run)
    return loop.state, loop.last


def _start_phase(run, loop: _Loop) -> list[dict]:
    """Step-0 rows of a fresh run (the hook's, the held-out KL); returns the held-out batches."""
    c, fresh = run.config, run.start_step == 0
    if loop.hook is not None and fresh and (values := loop.hook(0, loop.state["params"])):
        loop.writer.write(0, values)
    teacher = None if run.teacher_params is None else (run.teacher_graphdef, run.teacher_params)
    eval_batches = evaluate.heldout_batches(
        run.heldout, c, pad_id=run.pad_id, teacher=teacher, sample=run.sample, to_global=run.to_global
    )
    if eval_batches and fresh and c.eval_at_ends:
        loop.writer.write(0, {"eval/kl_teacher_student": _heldout_kl(run, loop.state, eval_batches)})
    return eval_batches


def _heldout_kl(run, state, eval_batches) -> float:
    return evaluate.heldout_kl(
        state["params"], eval_batches, graphdef=run.graphdef, teacher_graphdef=run.teacher_graphdef,
        teacher_params=run.teacher_params, chunk_size=run.config.loss.chunk_size,
        vocab_policy=run.config.loss.vocab_policy,
    )  # fmt: skip


def _train_phase(run, loop: _Loop, step: int) -> None:
    """Samples and dispatches `step`; then pulls the previous step's metrics (the host never stalls the
    device)."""
    c = run.config
    batch, t_sample, sampled, sample_stats = rollout.step_batch(
        run, loop.state["params"], step, next(run.iterator), loop.key
    )
    profiled = {}
    if c.profile_every and step % c.profile_every == 0:  # time the pieces; discard the update
        profiled = run.split_step(loop.state, run.teacher_params, batch)[2]
    t_dispatch = time.perf_counter()
    loop.state, metrics = run.step_fn(loop.state, run.teacher_params, batch)
    if loop.pending is not None:
        _metrics_phase(run, loop)
    extra = {"time/sample": t_sample, "on_policy": float(sampled), "flops": builder.step_flops(run, batch)}
    extra.update(profiled)
    extra.update(sample_stats)  # SKD's skd/kept_frac
    if sampled:  # host work, overlapping the device's
        extra.update(diagnostics.response_metrics(loop.response_metrics, run.tokenizer, batch))
    loop.pending = (step, metrics, extra, t_dispatch)


def _metrics_phase(run, loop: _Loop, eval_value=None) -> None:
    """Pull the pending step's metrics to the host, check them (NonFiniteLossError), write them."""
    step, metrics, extra, t_dispatch = loop.pending
    values = host_values(
        step, metrics, extra, t_dispatch, peak_flops=run.peak_flops, n_devices=run.mesh.devices.size
    )
    if eval_value is not None:
        values["eval/kl_teacher_student"] = eval_value
    c = run.config
    if step % c.log_every == 0 or step == c.total_steps or eval_value is not None:
        loop.writer.write(step, values)
    loop.pending, loop.last = None, values


def _eval_and_checkpoint_phase(run, loop: _Loop, step: int, eval_batches, stop: bool) -> None:
    """At an eval, checkpoint, stop or final step: held-out KL, the step's row and a checkpoint."""
    c = run.config
    evaluate_now = eval_batches and (
        (c.eval_every and step % c.eval_every == 0) or (c.eval_at_ends and step == c.total_steps)
    )
    if not (stop or evaluate_now or step % c.checkpoint.every == 0 or step == c.total_steps):
        return
    kl = _heldout_kl(run, loop.state, eval_batches) if evaluate_now else None
    _metrics_phase(run, loop, kl)
    meta = {"data": run.iterator.get_state(), "method": c.method}
    run.ckpt.save(step, loop.state, meta, metrics={"loss": loop.last["loss"]},
                  force=stop or step == c.total_steps)  # fmt: skip
    loop.writer.flush()  # rows up to a checkpoint are never lost (gs:// buffers them)


def _export_phase(run, state) -> None:
    """After the loop: wait for the checkpoint; a finished run exports and marks its workdir DONE."""
    run.ckpt.wait_until_finished()
    if int(state["step"]) == run.config.total_steps:
        if run.config.checkpoint.export:
            export(run, state)
        distributed.mark_done(run.workdir)  # launch/ scripts stop resuming once this exists


def close(run) -> None:
    """Close the checkpoint manager and release the workdir lock (train_and_evaluate does this itself)."""
    run.ckpt.close()
    run.lock.release()


def export(run, state) -> str:
    """The student as an HF folder at <workdir>/export (see export.py)."""
    return export_lib.export_student(
        run.graphdef, state["params"], run.tokenizer, run.workdir,
        method=run.config.method, steps=int(state["step"]), base_model=run.config.student.path,
    )  # fmt: skip


class Trainer:
    """`build` + `train_and_evaluate` behind the public API's object: its `built` Run's fields read as
    attributes (t.mesh, t.graphdef, ...), `state` is the current train state, `run()` trains."""

    response_metrics = None  # fn(texts) -> {name: value} of each sampled step's responses, or None
    sample_stats = None  # the sampler's statistics of the last make_batch (SKD's skd/kept_frac)

    def __init__(self, config, workdir: str):
        self.built = builder.build(config, workdir)
        self.state = self.built.state

    def __getattr__(self, name):  # only for names not set on the Trainer itself
        if name == "built":
            raise AttributeError(name)
        return getattr(self.built, name)

    def make_batch(self, step: int, host_batch) -> tuple[dict, float, bool]:
        """Global arrays of the step's prompts and responses, the sampling time, and whether it sampled."""
        key = rollout.run_key(self.state)
        batch, seconds, sampled, self.sample_stats = rollout.step_batch(
            self.built, self.state["params"], step, host_batch, key
        )
        return batch, seconds, sampled

    def run(self, hook=None) -> dict:
        """Train to total_steps (or until SIGTERM); returns the last step's metrics."""
        self.state, last = train_and_evaluate(
            self.built, self.state, hook=hook, response_metrics=self.response_metrics
        )
        return last

    def close(self) -> None:
        close(self.built)

    def export(self) -> str:
        return export(self.built, self.state)


def run(config, workdir: str) -> dict:
    """Build the run and train it; returns the last step's metrics."""
    return train_and_evaluate(builder.build(config, workdir))[1]
