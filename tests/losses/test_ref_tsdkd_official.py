"""The official-code variant of ``tsdkd_loss`` (SPEC §2) against the float64 reference, and where it departs
from the paper variant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_np as ref
from loss_problems import (
    assert_aux_close,
    assert_close,
    np64,
    paper_inputs,
    quantile_position_is_safe,
    rand_logits,
    saturate,
)

from tsdkd_jax import losses


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra**2).sum() * (rb**2).sum()))


def test_indirect_gradient_direction_paper_vs_official():
    """Near-uniform student (V = k = 10, T = 12): a gradient step on the paper indirect term raises the student's
    logits in the teacher's order (Spearman +1); on the official prefix-sum term, in the reverse order (−1)."""
    B, T, V = 1, 12, 10
    s = (np.random.default_rng(70).standard_normal((B, T, V)) * 1e-3).astype(np.float32)
    t = rand_logits(71, (B, T, V))
    m = np.ones((B, T), dtype=np.float32)
    # official: flattened normalised entropies ≈ 1/12 each → d = 1 → only position 0
    assert ref.official_opener_len(ref.entropy(s), m, 0.1) == 1
    # paper: c·total = 1.2 H → m* = 1 → positions 0 and 1
    np.testing.assert_array_equal(ref.opener_mask(ref.entropy(s), m, 0.1)[0, :3], [1, 1, 0])

    for variant, sign in (("paper", +1), ("official", -1)):

        def f(z, variant=variant):
            return losses.tsdkd_loss(z, jnp.asarray(t), jnp.asarray(m), variant=variant)[1]["loss/indirect"]

        val = float(np64(f(jnp.asarray(s))))
        if variant == "paper":
            expected = ref.tsdkd_loss_paper(s, t, m)[1]["loss/indirect"]
        else:
            expected = ref.tsdkd_loss_official(s, t, m)[1]["loss/indirect"]
        assert_close(val, expected, what=f"{variant} loss/indirect")
        delta = -np64(jax.grad(f)(jnp.asarray(s)))[0, 0]
        rho = _spearman(delta, t[0, 0])
        assert sign * rho > 0.9, (variant, rho, delta, t[0, 0])


OFFICIAL_KEYS = ["loss/direct", "loss/em", "loss/indirect", "loss/total"]


def _official_case(name):
    if name == "B3_ragged":
        s, t, m = paper_inputs(120, [10, 6, 3], 10, 32)  # 19 masked tokens
        kw = {}
    elif name == "B3_all_pad_row":
        s, t, m = paper_inputs(121, [7, 0, 5], 8, 24)  # 12
        kw = {}
    elif name == "B4_beta0.5":
        s, t, m = paper_inputs(122, [6, 6, 2, 5], 6, 16)  # 19
        kw = {"beta": 0.5, "rank_weight": 0.2}  # both are passed through by the released code
    elif name == "d3_spans_short_row":
        # three low-entropy lead tokens in row 0 push d to 3; row 1 (length 2) then has a pad position in [0, d)
        s, t, m = paper_inputs(124, [6, 2, 5], 6, 16)  # 13
        s[0, :3] *= np.float32(8.0)
        kw = {}
    elif name == "d_beyond_T_clamped":
        # flattened masked entropies [0,0,0,0, 0,H,H,H] → d = 5 > T = 4 → every row uses [0, 4)
        s, t, m = paper_inputs(123, [4, 4], 4, 16)  # 8
        s = saturate(s, [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)])
        kw = {}
    else:
        raise ValueError(name)
    assert quantile_position_is_safe(int(m.sum()), 0.1)
    return s, t, m, kw


@pytest.mark.parametrize(
    "case", ["B3_ragged", "B3_all_pad_row", "B4_beta0.5", "d3_spans_short_row", "d_beyond_T_clamped"]
)
def test_official_total_and_terms(case):
    s, t, m, kw = _official_case(case)
    ref_loss, ref_aux = ref.tsdkd_loss_official(s, t, m, **kw)
    d = ref_aux["official/d"]
    assert d >= 1, "test design: the indirect term must be exercised"
    if case == "d3_spans_short_row":
        assert d == 3
    if case == "d_beyond_T_clamped":
        assert d == 5
    loss, aux = losses.tsdkd_loss(s, t, m, variant="official", **kw)
    assert_close(loss, ref_loss, what="loss")
    assert_aux_close(aux, ref_aux, OFFICIAL_KEYS + ["entropy/student", "entropy/teacher", "agree/top1"])


def test_official_em_sees_padding_but_paper_does_not():
    """Changing the student's logits only at padding positions changes the official EM term (its set is taken
    over the whole grid) and nothing in the paper variant."""
    s, t, m = paper_inputs(130, [8, 4, 6], 8, 24)  # 18 masked tokens
    pad = [(b, i) for b in range(3) for i in range(8) if m[b, i] == 0]
    s_hi = s.copy()
    for b, i in pad:
        s_hi[b, i] *= np.float32(1e-3)  # near-uniform: entropy ≈ log V, above the 0.1 quantile → in the set
    s_lo = saturate(s, pad)  # exactly zero entropy → below the threshold → out of the set

    ref_hi = ref.tsdkd_loss_official(s_hi, t, m)[1]
    ref_lo = ref.tsdkd_loss_official(s_lo, t, m)[1]
    assert abs(ref_hi["loss/em"] - ref_lo["loss/em"]) > 1e-2  # the reference shows the quirk
    assert_close(ref_hi["loss/direct"], ref_lo["loss/direct"], rtol=1e-12)
    assert_close(ref_hi["loss/indirect"], ref_lo["loss/indirect"], rtol=1e-12)

    _, off_hi = losses.tsdkd_loss(s_hi, t, m, variant="official")
    _, off_lo = losses.tsdkd_loss(s_lo, t, m, variant="official")
    assert_aux_close(off_hi, ref_hi, OFFICIAL_KEYS)
    assert_aux_close(off_lo, ref_lo, OFFICIAL_KEYS)
    assert abs(float(np64(off_hi["loss/em"])) - float(np64(off_lo["loss/em"]))) > 1e-2

    pap_hi_loss, pap_hi = losses.tsdkd_loss(s_hi, t, m, variant="paper")
    pap_lo_loss, pap_lo = losses.tsdkd_loss(s_lo, t, m, variant="paper")
    ref_pap_loss, ref_pap = ref.tsdkd_loss_paper(s_hi, t, m)
    assert_close(pap_hi_loss, ref_pap_loss)
    assert_close(pap_lo_loss, ref_pap_loss)
    for key in ("loss/direct", "loss/em", "loss/indirect", "loss/total"):
        assert_close(pap_hi[key], ref_pap[key], what=key)
        assert_close(pap_lo[key], ref_pap[key], what=key)
