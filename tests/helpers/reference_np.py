"""Independent NumPy float64 reference of the TSD-KD losses (tests only).

Written from /work/shared/SPEC.md (§1 paper variant, §2 official-code variant), not from the JAX kernels in
``tsdkd_jax.losses``. Everything is computed in float64; loops are used wherever they make the equation
obvious (speed does not matter: shapes in the tests are tiny).

Conventions
-----------
* logits: ``[..., V]``; per-token functions reduce the last axis.
* ``mask``: ``[B, T]`` response mask (1 = real response token, first EOS included; 0 = padding).
* KL(p‖q) = Σ_v p_v (log p_v − log q_v); terms with p_v == 0 contribute exactly 0.
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------------------------------------
# Per-token primitives
# ----------------------------------------------------------------------------------------------------------


def f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def log_softmax(logits) -> np.ndarray:
    z = f64(logits)
    zmax = z.max(axis=-1, keepdims=True)
    return z - zmax - np.log(np.exp(z - zmax).sum(axis=-1, keepdims=True))


def softmax(logits) -> np.ndarray:
    return np.exp(log_softmax(logits))


def _xlogy_terms(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """p * a with the convention 0 * anything = 0 (handles a = -inf where p underflowed to 0)."""
    return np.where(p > 0, p * np.where(p > 0, a, 0.0), 0.0)


def entropy_from_logp(logp: np.ndarray) -> np.ndarray:
    p = np.exp(logp)
    return -_xlogy_terms(p, logp).sum(axis=-1)


def entropy(logits) -> np.ndarray:
    """H(softmax(z)) = −Σ p log p."""
    return entropy_from_logp(log_softmax(logits))


def kl_from_logp(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """KL(p‖q) from log-probabilities."""
    p = np.exp(logp)
    return _xlogy_terms(p, logp - logq).sum(axis=-1)


def log_mixture(logp: np.ndarray, logq: np.ndarray, w: float) -> np.ndarray:
    """log(w·p + (1−w)·q): a mixture of *probabilities* (not of log-probabilities)."""
    out = np.empty(np.broadcast(logp, logq).shape)
    out[...] = -np.inf
    if w > 0:
        out = np.logaddexp(out, logp + math.log(w))
    if w < 1:
        out = np.logaddexp(out, logq + math.log1p(-w))
    return out


def forward_kl(student_logits, teacher_logits) -> np.ndarray:
    """KL(p_T ‖ p_S)."""
    return kl_from_logp(log_softmax(teacher_logits), log_softmax(student_logits))


def reverse_kl(student_logits, teacher_logits) -> np.ndarray:
    """KL(p_S ‖ p_T)."""
    return kl_from_logp(log_softmax(student_logits), log_softmax(teacher_logits))


def generalized_jsd(student_logits, teacher_logits, beta: float) -> np.ndarray:
    """JSD_β = β·KL(p_T‖M) + (1−β)·KL(p_S‖M), M = β·p_T + (1−β)·p_S.

    Endpoints follow the TRL/GKD convention (SPEC §1): β = 0 → forward KL(p_T‖p_S), β = 1 → reverse
    KL(p_S‖p_T) (special-cased: the formula itself degenerates to 0 there).
    """
    beta = float(beta)
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits)
    lt = log_softmax(teacher_logits)
    ls = log_softmax(student_logits)
    lm = log_mixture(lt, ls, beta)
    return beta * kl_from_logp(lt, lm) + (1.0 - beta) * kl_from_logp(ls, lm)


def generalized_jsd_logspace_mixture(student_logits, teacher_logits, beta: float) -> np.ndarray:
    """The WRONG variant (for a negative test): M' ∝ exp(β log p_T + (1−β) log p_S), renormalised."""
    lt = log_softmax(teacher_logits)
    ls = log_softmax(student_logits)
    lm = log_softmax(beta * lt + (1.0 - beta) * ls)
    return beta * kl_from_logp(lt, lm) + (1.0 - beta) * kl_from_logp(ls, lm)


def skew_kl(student_logits, teacher_logits, alpha: float) -> np.ndarray:
    """DistiLLM skew KL: KL(p_T ‖ α·p_T + (1−α)·p_S)."""
    lt = log_softmax(teacher_logits)
    ls = log_softmax(student_logits)
    return kl_from_logp(lt, log_mixture(lt, ls, float(alpha)))


def skew_reverse_kl(student_logits, teacher_logits, alpha: float) -> np.ndarray:
    """DistiLLM skew reverse KL: KL(p_S ‖ (1−α)·p_T + α·p_S)."""
    lt = log_softmax(teacher_logits)
    ls = log_softmax(student_logits)
    return kl_from_logp(ls, log_mixture(ls, lt, float(alpha)))


def cross_entropy(logits, labels) -> np.ndarray:
    """−log softmax(z)[label], per token."""
    lp = log_softmax(logits)
    labels = np.asarray(labels)
    return -np.take_along_axis(lp, labels[..., None].astype(np.int64), axis=-1)[..., 0]


def masked_mean(values, mask) -> float:
    v = f64(values)
    m = f64(mask)
    return float((v * m).sum() / m.sum())


def sigmoid(x) -> np.ndarray:
    x = f64(x)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def entropy_gate(h_student, h_teacher, tau: float) -> np.ndarray:
    """gate = σ((H_S − H_T)/τ) (stop-gradient in the kernel; values only here)."""
    return sigmoid((f64(h_student) - f64(h_teacher)) / float(tau))


def divergence(name: str, student_logits, teacher_logits, *, beta: float, skew_alpha: float) -> np.ndarray:
    if name == "gjsd":
        return generalized_jsd(student_logits, teacher_logits, beta)
    if name == "fkl":
        return forward_kl(student_logits, teacher_logits)
    if name == "rkl":
        return reverse_kl(student_logits, teacher_logits)
    if name == "skl":
        return skew_kl(student_logits, teacher_logits, skew_alpha)
    if name == "srkl":
        return skew_reverse_kl(student_logits, teacher_logits, skew_alpha)
    raise ValueError(name)


# ----------------------------------------------------------------------------------------------------------
# Paper variant (SPEC §1): selections
# ----------------------------------------------------------------------------------------------------------


def opener_mask(h_student, mask, frac: float) -> np.ndarray:
    """Per sequence: m* = min{j : Σ_{t≤j} m_t H_t ≥ c·Σ_t m_t H_t}; opener = masked positions t ≤ m*.

    A row with zero total (all-pad, or all-zero entropies) has an empty opener. The total is taken as the
    last element of the same running sum so that c = 1 reaches it exactly.
    """
    h = f64(h_student)
    m = f64(mask)
    B, T = h.shape
    out = np.zeros((B, T))
    for b in range(B):
        running = 0.0
        cums = []
        for t in range(T):
            running += m[b, t] * h[b, t]
            cums.append(running)
        total = cums[-1] if T else 0.0
        if not total > 0.0:
            continue
        m_star = None
        for j in range(T):
            if cums[j] >= frac * total:
                m_star = j
                break
        if m_star is None:  # cannot happen for frac <= 1
            continue
        for t in range(m_star + 1):
            out[b, t] = 1.0 if m[b, t] > 0 else 0.0
    return out


def em_mask(h_student, mask, frac: float) -> np.ndarray:
    """Per sequence: I_b = masked tokens with H ≥ quantile_{1−ρ}(that row's masked H) (linear interp.)."""
    h = f64(h_student)
    m = f64(mask) > 0
    out = np.zeros(h.shape)
    for b in range(h.shape[0]):
        vals = h[b][m[b]]
        if vals.size == 0:
            continue
        q = np.quantile(vals, 1.0 - frac)  # numpy default method == "linear"
        for t in range(h.shape[1]):
            if m[b, t] and h[b, t] >= q:
                out[b, t] = 1.0
    return out


def _logsumexp(x: np.ndarray) -> float:
    x = f64(x)
    mx = x.max()
    return float(mx + np.log(np.exp(x - mx).sum()))


def _teacher_ordered_student_topk(s_row: np.ndarray, t_row: np.ndarray, k: int) -> np.ndarray:
    """Student's top-k ids (by student logit), re-ordered by the teacher's logit, best first; returns the
    student logits in that order."""
    ids = sorted(range(s_row.shape[0]), key=lambda v: -s_row[v])[:k]
    ids = sorted(ids, key=lambda v: -t_row[v])
    return np.array([s_row[v] for v in ids], dtype=np.float64)


def _rank_nll_per_token(student_logits, teacher_logits, k: int, row_nll) -> np.ndarray:
    """``row_nll`` of the student's top-k logits in the teacher's order, at every leading position."""
    s = f64(student_logits)
    t = f64(teacher_logits)
    s2 = s.reshape(-1, s.shape[-1])
    t2 = t.reshape(-1, t.shape[-1])
    out = np.zeros(s2.shape[0])
    for n in range(s2.shape[0]):
        out[n] = row_nll(_teacher_ordered_student_topk(s2[n], t2[n], k))
    return out.reshape(s.shape[:-1])


def _suffix_nll(sv: np.ndarray) -> float:
    """−Σ_j [s_j − log Σ_{l=j..k} exp(s_l)]."""
    nll = 0.0
    for j in range(sv.shape[0]):
        nll -= sv[j] - _logsumexp(sv[j:])
    return nll


def _prefix_nll_centred(sv: np.ndarray) -> float:
    """−Σ_j [s_j − log Σ_{l≤j} exp(s_l)] of the mean-centred s."""
    sv = sv - sv.mean()  # released code: "mean normalization (optional)"; shift-invariant, no effect
    nll = 0.0
    for j in range(sv.shape[0]):
        nll -= sv[j] - _logsumexp(sv[: j + 1])
    return nll


def plackett_luce_nll(student_logits, teacher_logits, k: int) -> np.ndarray:
    """Paper ListMLE (suffix sums): NLL = −Σ_j [s_j − log Σ_{l=j..k} exp(s_l)], s in the teacher's order."""
    return _rank_nll_per_token(student_logits, teacher_logits, k, _suffix_nll)


def official_prefix_rank_nll(student_logits, teacher_logits, k: int) -> np.ndarray:
    """Released code's ranking loss (SPEC §2.4): mean-centred s, −Σ_j [s_j − log Σ_{l≤j} exp(s_l)].

    Prefix sums (a logcumsumexp along the teacher's best-first order) = PL likelihood of the REVERSED ranking.
    """
    return _rank_nll_per_token(student_logits, teacher_logits, k, _prefix_nll_centred)


# ----------------------------------------------------------------------------------------------------------
# Totals
# ----------------------------------------------------------------------------------------------------------


def _inputs_and_entropies(student_logits, teacher_logits, response_mask):
    """The three inputs in float64, and the per-token entropies of student and teacher."""
    s = f64(student_logits)
    t = f64(teacher_logits)
    return s, t, f64(response_mask), entropy(s), entropy(t)


def _common_aux(s, t, m, hs, ht, gate):
    msum = m.sum()
    agree = (np.argmax(f64(s), axis=-1) == np.argmax(f64(t), axis=-1)).astype(np.float64)
    return {
        "gate/mean": float((gate * m).sum() / msum) if msum > 0 else 0.0,
        "agree/top1": float((agree * m).sum() / msum) if msum > 0 else 0.0,
        "entropy/student": float((hs * m).sum() / msum) if msum > 0 else 0.0,
        "entropy/teacher": float((ht * m).sum() / msum) if msum > 0 else 0.0,
    }


def tsdkd_loss_paper(
    student_logits,
    teacher_logits,
    response_mask,
    *,
    beta=0.9,
    gate_tau=1.0,
    rank_k=10,
    rank_weight=0.1,
    opener_frac=0.1,
    em_frac=0.1,
    em_weight=1.0,
    use_gate=True,
    use_indirect=True,
    use_em=True,
    use_direct=True,
    divergence_name="gjsd",
    skew_alpha=0.1,
):
    """SPEC §1: L = L_direct + w_em·L_em + α·L_indirect. Returns (total, aux dict of floats)."""
    s, t, m, hs, ht = _inputs_and_entropies(student_logits, teacher_logits, response_mask)
    B, T = m.shape
    gate = entropy_gate(hs, ht, gate_tau) if use_gate else np.ones_like(hs)

    # Direct: token mean over the batch.
    d = divergence(divergence_name, s, t, beta=beta, skew_alpha=skew_alpha)
    msum = m.sum()
    num = 0.0
    for b in range(B):
        for i in range(T):
            num += m[b, i] * gate[b, i] * d[b, i]
    l_direct = num / msum if msum > 0 else 0.0

    # Indirect: PL NLL over opener positions / number of opener positions in the batch.
    opener = opener_mask(hs, m, opener_frac)
    nll = plackett_luce_nll(s, t, rank_k)
    n_open = opener.sum()
    l_indirect = float((opener * nll).sum() / n_open) if n_open > 0 else 0.0

    # EM: per-row top-ρ entropies, pooled: Σ_b Σ_{I_b} H / Σ_b |I_b|.
    em = em_mask(hs, m, em_frac)
    n_em = em.sum()
    l_em = float((em * hs).sum() / n_em) if n_em > 0 else 0.0

    total = l_direct if use_direct else 0.0
    if use_em:
        total += em_weight * l_em
    if use_indirect:
        total += rank_weight * l_indirect

    aux = {
        "loss/direct": float(l_direct),
        "loss/em": l_em,
        "loss/indirect": l_indirect,
        "loss/total": float(total),
        "select/opener_len": float(opener.sum() / B),
        "select/em_frac": float(n_em / msum) if msum > 0 else 0.0,
    }
    aux.update(_common_aux(s, t, m, hs, ht, gate))
    return float(total), aux


def official_opener_len(h_student, mask, thr: float) -> int:
    """SPEC §2.3 / released ``top_k_entropy_position`` applied to the flattened masked entropies.

    The masked entropies of the whole micro-batch, flattened row-major (the released code's ``entropies[mask]``),
    are divided by their total and cumulatively summed; d = the first index with cum ≥ thr (0-based). The
    released code takes ``(cum >= thr).float().argmax()``, which is 0 when no index qualifies (e.g. a zero total
    gives NaNs); that behaviour is reproduced. An empty selection gives d = 0 (released: ``d_token_len = 0``).
    """
    h = f64(h_student)
    m = f64(mask) > 0
    flat = [h[b, i] for b in range(h.shape[0]) for i in range(h.shape[1]) if m[b, i]]
    if not flat:
        return 0
    total = float(np.sum(flat))
    if not total > 0:
        return 0  # NaN cumsum in the released code -> no True -> argmax = 0
    running = 0.0
    for idx, v in enumerate(flat):
        running += v / total
        if running >= thr:
            return idx
    return 0  # argmax of an all-False mask


def tsdkd_loss_official(
    student_logits,
    teacher_logits,
    response_mask,
    *,
    beta=0.9,
    gate_tau=1.0,
    thr=0.1,
    rank_k=10,
    rank_weight=0.1,
):
    """SPEC §2, step by step, re-stated from the released ``generalized_jsd_loss`` (float64 here).

    Hyper-parameters of the released code: ``beta`` (passed), ``token_entropy_percentile_threshold`` = thr (passed;
    plays both the opener fraction and the EM quantile), ``indirect_kd_alpha`` (passed, default 0.1 = rank_weight);
    the gate has no temperature (τ = 1), K = 10 and the EM weight 1 are hard-coded. ``gate_tau``/``rank_k`` are
    kept as parameters here but the released behaviour is τ = 1, k = 10.

    Released-code behaviours that are NOT reproduced (documented, never exercised in tests):
      * β ∈ {0, 1}: the released mixture formula gives 0 there; here (and per SPEC §2.1 "as above") the
        TRL endpoints are used.
      * a micro-batch with no masked token gives 0/0 = NaN in the released code (direct and EM terms).
    """
    s, t, m, hs, ht = _inputs_and_entropies(student_logits, teacher_logits, response_mask)
    B, T = m.shape

    # 1. Gate, JSD and direct term: computed at all positions, averaged over mask positions.
    gate = entropy_gate(hs, ht, gate_tau)
    jsd = generalized_jsd(s, t, beta)
    msum = m.sum()
    if msum == 0:
        nan = float("nan")
        return nan, {"loss/direct": nan, "loss/em": nan, "loss/indirect": 0.0, "loss/total": nan}
    l_direct = float((jsd * gate * m).sum() / msum)

    # 2. EM: threshold = linear quantile(thr) of the masked entropies of the micro-batch; the set is taken over
    #    the WHOLE [B, T] grid (released: ``entropies >= entropy_threshold``), padding positions included.
    flat = np.array([hs[b, i] for b in range(B) for i in range(T) if m[b, i] > 0])
    q = np.quantile(flat, thr)  # torch.quantile default interpolation is also "linear"
    em_set = (hs >= q).astype(np.float64)  # no mask applied: this is the released bug
    l_em = float((hs * em_set).sum() / em_set.sum())

    # 3. Opener: flattened-masked index d; every row uses positions [0, d) (slice: clamped to T).
    d = official_opener_len(hs, m, thr)
    d_eff = min(d, T)

    # 4. Indirect: prefix-sum ranking loss at positions [0, d) of every row, Σ loss·m / (Σ m + 1e-8).
    num = 0.0
    den = 0.0
    if d_eff > 0:
        loss_pos = official_prefix_rank_nll(s[:, :d_eff], t[:, :d_eff], rank_k)
        for b in range(B):
            for i in range(d_eff):
                num += loss_pos[b, i] * m[b, i]
                den += m[b, i]
    l_indirect = num / (den + 1e-8)

    # 5. Total (released: jsd.sum()/mask.sum() + regularization.sum()/entropy_mask.sum() + alpha * topk_loss).
    total = l_direct + l_em + rank_weight * l_indirect
    aux = {
        "loss/direct": l_direct,
        "loss/em": l_em,
        "loss/indirect": float(l_indirect),
        "loss/total": float(total),
        "official/d": d,
        "official/em_set_size": float(em_set.sum()),
        "official/em_threshold": float(q),
    }
    aux.update(_common_aux(s, t, m, hs, ht, gate))
    return float(total), aux
