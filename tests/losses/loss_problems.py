"""Small random TSD-KD problems shared by the loss tests.

``make_problem`` (hidden states and heads) serves the chunked / gradient / sharding tests; the NumPy helpers below
serve the comparisons against the float64 reference (``reference_np``): inputs are float32 (what the kernels
see), the reference gets the very same float32 values upcast to float64, and values agree to RTOL (plus an ATOL
floor for values that are ~0).
"""

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


# ----------------------------------------------------------------------------------------------------------
# Comparisons against reference_np
# ----------------------------------------------------------------------------------------------------------

RTOL = 1e-5
ATOL = 1e-6

AUX_KEYS = (
    "loss/direct",
    "loss/em",
    "loss/indirect",
    "loss/total",
    "gate/mean",
    "select/opener_len",
    "select/em_frac",
    "agree/top1",
    "entropy/student",
    "entropy/teacher",
)


def rand_logits(seed, shape, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def right_pad_mask(lengths, T):
    m = np.zeros((len(lengths), T), dtype=np.float32)
    for b, n in enumerate(lengths):
        m[b, :n] = 1.0
    return m


def paper_inputs(seed, lengths, T, V):
    """Random student logits (×3) and a teacher correlated with the student (so top-1 agreement varies)."""
    s = rand_logits(seed, (len(lengths), T, V))
    t = (0.7 * s + rand_logits(seed + 1000, (len(lengths), T, V), scale=2.2)).astype(np.float32)
    return s, t, right_pad_mask(lengths, T)


def saturate(logits, positions, big=1.0e4):
    """Make the given (b, t) positions one-hot-ish: one logit +1e4, so the softmax underflows to an exact
    one-hot in float32 AND float64 and the entropy is exactly 0 on both sides."""
    out = logits.copy()
    for b, t in positions:
        out[b, t, int(np.argmax(out[b, t]))] += np.float32(big)
    return out


def np64(x):
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected, rtol=RTOL, atol=ATOL, what=""):
    np.testing.assert_allclose(np64(actual), np64(expected), rtol=rtol, atol=atol, err_msg=what)


def assert_aux_close(aux, ref_aux, keys=AUX_KEYS):
    for key in keys:
        assert key in aux, f"aux lacks {key!r}; has {sorted(aux)}"
        assert_close(aux[key], ref_aux[key], what=f"aux[{key!r}]")


def quantile_position_is_safe(n, q):
    """True when the linear-quantile virtual index (n-1)*q is not (nearly) an integer: then float32 and float64
    cannot disagree about whether an order statistic sits exactly at the threshold."""
    pos = (n - 1) * q
    return n <= 1 or abs(pos - round(pos)) > 1e-3
