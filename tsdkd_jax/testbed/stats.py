"""Bootstrap confidence intervals for the testbed: accuracies and paired differences over seeds × problems.

A result is a 0/1 matrix [seeds, problems]: every method is run from the same initial student of each seed
and scored on the same problems, so two methods' matrices are paired on both axes. The interval resamples
seeds and problems independently (a two-level percentile bootstrap); with one seed only problems vary.
Pairing is kept by resampling the *difference* matrix, so what the student of a given seed gets right on a
given problem under both methods cancels.
"""

from __future__ import annotations

import numpy as np

N_RESAMPLES = 10_000
LEVEL = 0.95


def _as_matrix(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"expected a non-empty [seeds, problems] array, got shape {x.shape}")
    return x


def bootstrap_means(x_SP: np.ndarray, *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `n_resamples` two-level resamples of x_SP (seeds and problems drawn with replacement)."""
    x_SP = _as_matrix(x_SP)
    n_s, n_p = x_SP.shape
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    block = max(1, 2_000_000 // max(n_s * n_p, 1))  # resamples per vectorised block, bounded memory
    for start in range(0, n_resamples, block):
        r = min(block, n_resamples - start)
        seeds_RS = rng.integers(0, n_s, size=(r, n_s)) if n_s > 1 else np.zeros((r, 1), dtype=np.int64)
        probs_RP = rng.integers(0, n_p, size=(r, n_p))
        # row means over the resampled problems, for every seed, then averaged over the resampled seeds
        per_seed_RS = x_SP[:, probs_RP].mean(axis=2).T  # [r, n_s]
        out[start : start + r] = np.take_along_axis(per_seed_RS, seeds_RS, axis=1).mean(axis=1)
    return out


def mean_ci(values, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """{"mean", "ci_low", "ci_high"} of a [seeds, problems] (or [problems]) 0/1 matrix, percentile bootstrap."""
    x = _as_matrix(values)
    draws = bootstrap_means(x, n_resamples=n_resamples, seed=seed)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return {"mean": float(x.mean()), "ci_low": float(low), "ci_high": float(high)}


def paired_diff_ci(a, b, **kwargs) -> dict:
    """mean_ci of a − b, where a and b are paired [seeds, problems] matrices (same seeds, same problems)."""
    a, b = _as_matrix(a), _as_matrix(b)
    if a.shape != b.shape:
        raise ValueError(
            f"paired results must have the same [seeds, problems] shape, got {a.shape} vs {b.shape}"
        )
    return mean_ci(a - b, **kwargs)
