"""The training progress bar: tqdm's notebook-aware bar (a widget in Jupyter, a text bar in a terminal).

Shown when stderr is a terminal or the run is inside a Jupyter kernel; never in logs written to files (CI,
pods), where metrics.jsonl is the record. Process 0 only (the caller decides).
"""

from __future__ import annotations

import sys


def wanted() -> bool:
    """A person is watching: a terminal, or a notebook (ipykernel)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


class Bar:
    """Steps done out of the run's total, with the last loss and the rate/ETA tqdm computes."""

    def __init__(self, total_steps: int, start_step: int = 0):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
        self._step = start_step

    def update(self, step: int, loss: float) -> None:
        if step > self._step:
            self._bar.update(step - self._step)
            self._step = step
        self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self) -> None:
        self._bar.close()
