"""A per-token view of a run's TSD-KD selections: `python -m tsdkd_jax.inspect --workdir=DIR`.

It rebuilds the run from <DIR>/config.json (recorded by the trainer) and its latest checkpoint, samples a few
held-out prompts with the student, and writes <DIR>/selections.html (self-contained; hover a token for its
numbers) and <DIR>/selections.png: each response token coloured by its entropy gate, opener and EM-set
membership marked, with H_S, H_T, the teacher's rank of the sampled token and the teacher's mass on the
student's top-k. In a notebook: `IPython.display.HTML(tsdkd_jax.inspect.selections_html(DIR))`.
"""

from __future__ import annotations

import os

from tsdkd_jax.inspect import render
from tsdkd_jax.inspect.tokens import STATS, collect, token_table

__all__ = ["STATS", "collect", "selections_html", "token_table", "write"]


def _title(workdir: str, view: dict) -> str:
    run = os.path.basename(os.path.normpath(workdir))
    return f"{run}: {view['method']} ({view['variant']}) at step {view['step']}, {view['prompts']}"


def selections_html(
    workdir: str, *, n_prompts: int = 4, seed: int = 0, prompts_path: str | None = None
) -> str:
    """The per-token view of the run in `workdir` as an HTML string (nothing written). prompts_path: a
    prompt file with the run's data fields to take the prompts from (default: the run's held-out split)."""
    view = collect(workdir, n_prompts=n_prompts, seed=seed, prompts_path=prompts_path)
    return render.to_html(view, _title(workdir, view))


def write(
    workdir: str, *, n_prompts: int = 4, seed: int = 0, prompts_path: str | None = None
) -> dict[str, str]:
    """Writes <workdir>/selections.html and selections.png; returns their paths."""
    view = collect(workdir, n_prompts=n_prompts, seed=seed, prompts_path=prompts_path)
    title = _title(workdir, view)
    paths = {"html": os.path.join(workdir, "selections.html"), "png": os.path.join(workdir, "selections.png")}
    with open(paths["html"], "w") as f:
        f.write(render.to_html(view, title))
    render.to_png(view, paths["png"], title)
    return paths
