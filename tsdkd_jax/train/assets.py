"""Building a config's generated assets: an explicit step before a run, never an effect of reading a config.

A config whose model folders and data are generated (configs/tiny.py) names its builder in `assets`; the
build (and the tools that read those files: the planner, the tests' fixtures) call `ensure(config)` first.
"""

from __future__ import annotations


def _tiny(a) -> None:
    from tsdkd_jax.train import tiny  # transformers and tokenizers: only when a config asks for them

    tiny.build(a.dir, teacher_head_scale=float(a.teacher_head_scale))


BUILDERS = {"tiny": _tiny}


def ensure(config) -> None:
    """Builds (or finds already built) the assets `config.assets` names; a no-op for other configs."""
    a = config.get("assets")
    if a is None or not a.builder:
        return
    if a.builder not in BUILDERS:
        raise ValueError(f"assets.builder: unknown builder {a.builder!r}; known: {sorted(BUILDERS)}")
    BUILDERS[a.builder](a)
