"""Small random TSD-KD problems shared by the chunked / gradient / sharding tests."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass
class Problem:
    hs: jax.Array  # student hidden [B, T, Ds]
    ht: jax.Array  # teacher hidden [B, T, Dt]
    ws: jax.Array  # student unembedding [Ds, Vs]
    wt: jax.Array  # teacher unembedding [Dt, Vt]
    mask: jax.Array  # [B, T] right-padded response mask

    def student_logits(self, hs=None, ws=None):
        return student_unembed(self.hs if hs is None else hs, self.ws if ws is None else ws)

    def teacher_logits(self):
        return self.ht @ self.wt


def student_unembed(h, w, cap=30.0):
    """Matrix head with Gemma-style soft-capping, so the chunked path is tested with a non-linear unembed."""
    return cap * jnp.tanh((h @ w) / cap)


def make_problem(b=3, t=7, ds=16, dt=24, vs=64, vt=64, seed=0, lengths=None, dtype=jnp.float32) -> Problem:
    """Random hidden states and heads; logits have std ≈ 3 so entropies differ across tokens."""
    rng = np.random.default_rng(seed)
    hs = rng.normal(size=(b, t, ds))
    ht = rng.normal(size=(b, t, dt))
    ws = rng.normal(size=(ds, vs)) * 3.0 / np.sqrt(ds) * rng.uniform(0.3, 1.5, size=(1, vs))
    wt = rng.normal(size=(dt, vt)) * 3.0 / np.sqrt(dt) * rng.uniform(0.3, 1.5, size=(1, vt))
    # Per-token temperature so some tokens are confident and others not.
    hs *= rng.uniform(0.2, 2.0, size=(b, t, 1))
    ht *= rng.uniform(0.2, 2.0, size=(b, t, 1))
    if lengths is None:
        lengths = [t, max(1, t - 3), 1][:b] + [t] * max(0, b - 3)
    mask = (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
    cast = lambda x: jnp.asarray(x, dtype)
    return Problem(cast(hs), cast(ht), cast(ws), cast(wt), jnp.asarray(mask))


def rel_err(a, b) -> float:
    """Largest over leaves of max |a − b| / max |b| (a tiny floor for all-zero references)."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x - y))) / max(float(jnp.max(jnp.abs(y))), 1e-30) for x, y in pairs)


def pad_student(z, vt):
    """Explicit −inf padding of student logits to the teacher's vocabulary (what pad_student must equal)."""
    return jnp.concatenate([z, jnp.full(z.shape[:-1] + (vt - z.shape[-1],), -jnp.inf, z.dtype)], axis=-1)
