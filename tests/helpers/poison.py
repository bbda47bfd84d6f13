"""Test-only NaN injection: a wrapper of a Trainer's compiled step (nothing of it is traced into the step)."""

import dataclasses

import jax


def nan_at_step(trainer, step: int, term: str) -> None:
    """Make `trainer`'s 1-based optimizer step `step` return `term`, the loss and the new parameters as NaN,
    as a step whose loss term overflowed would (the loop must stop there without a checkpoint)."""
    real = trainer.built.step_fn

    def poisoned(state, teacher_params, batch):
        new_state, metrics = real(state, teacher_params, batch)
        if int(new_state["step"]) == step:  # waits for this step: fine in a test
            nan = float("nan")
            metrics = {**metrics, term: metrics[term] + nan, "loss": metrics["loss"] + nan}
            new_state = {**new_state, "params": jax.tree.map(lambda x: x + nan, new_state["params"])}
        return new_state, metrics

    trainer.built = dataclasses.replace(trainer.built, step_fn=poisoned)
