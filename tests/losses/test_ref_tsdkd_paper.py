"""The paper variant of ``tsdkd_loss`` (SPEC §1): total and aux metrics against the float64 reference."""

import pytest
import reference_np as ref
from loss_problems import assert_aux_close, assert_close, paper_inputs, quantile_position_is_safe, saturate

from tsdkd_jax import losses

PAPER_CASES = {
    # name: (seed, lengths, T, V, kwargs)
    "default_B4": (80, [12, 7, 3, 1], 12, 32, {}),
    "default_all_pad_row": (81, [9, 0, 5], 10, 24, {}),
    "hyper": (
        82,
        [10, 6, 8],
        10,
        32,
        {
            "beta": 0.5,
            "gate_tau": 2.0,
            "rank_k": 4,
            "rank_weight": 0.2,
            "opener_frac": 0.5,
            "em_frac": 0.3,
            "em_weight": 0.5,
        },
    ),
    "opener_frac_1": (83, [8, 5], 8, 16, {"opener_frac": 1.0}),
    "beta_0": (84, [6, 4], 6, 16, {"beta": 0.0}),
    "beta_1": (85, [6, 4], 6, 16, {"beta": 1.0}),
}


@pytest.mark.parametrize("case", sorted(PAPER_CASES))
def test_paper_total_and_aux(case):
    seed, lengths, T, V, kw = PAPER_CASES[case]
    s, t, m = paper_inputs(seed, lengths, T, V)
    for n in lengths:
        assert quantile_position_is_safe(n, 1 - kw.get("em_frac", 0.1))
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper", **kw)
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m, **kw)
    assert ref_aux["loss/indirect"] > 0 and ref_aux["loss/em"] > 0  # every term is exercised
    assert_close(loss, ref_loss, what="loss")
    assert_aux_close(aux, ref_aux)


def test_paper_total_with_zero_entropy_row():
    """A saturated (exactly zero-entropy) student row: empty opener, all its tokens in its EM set (H ≥ q = 0)."""
    s, t, m = paper_inputs(90, [7, 5, 6], 8, 16)
    s = saturate(s, [(1, i) for i in range(8)])
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m)
    assert ref.opener_mask(ref.entropy(s), m, 0.1)[1].sum() == 0
    assert ref.em_mask(ref.entropy(s), m, 0.1)[1].sum() == 5
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper")
    assert_close(loss, ref_loss)
    assert_aux_close(aux, ref_aux)


ABLATIONS = [
    {"use_gate": False},
    {"use_indirect": False},
    {"use_em": False},
    {"use_gate": False, "use_indirect": False, "use_em": False},
    {"use_direct": False},
    {"use_direct": False, "use_indirect": False},  # EM alone
]


@pytest.mark.parametrize("switches", ABLATIONS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_paper_ablation_switches(switches):
    s, t, m = paper_inputs(100, [9, 4, 7], 9, 24)
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper", **switches)
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m, **switches)
    assert_close(loss, ref_loss, what="loss")
    keys = ["loss/total", "loss/direct", "entropy/student", "entropy/teacher", "agree/top1"]
    # the terms that are switched on must still be reported correctly
    if switches.get("use_indirect", True):
        keys.append("loss/indirect")
    if switches.get("use_em", True):
        keys.append("loss/em")
    if switches.get("use_gate", True):
        keys.append("gate/mean")
    assert_aux_close(aux, ref_aux, keys)
    # the full loss differs from every ablation on these inputs
    full, _ = ref.tsdkd_loss_paper(s, t, m)
    assert abs(full - ref_loss) > 1e-4


@pytest.mark.parametrize(
    "divergence,skew_alpha",
    [("gjsd", 0.1), ("fkl", 0.1), ("rkl", 0.1), ("skl", 0.1), ("skl", 0.3), ("srkl", 0.1)],
)
def test_paper_divergence_choice(divergence, skew_alpha):
    s, t, m = paper_inputs(110, [8, 3, 6], 8, 24)
    kw = {"divergence": divergence, "skew_alpha": skew_alpha}
    loss, aux = losses.tsdkd_loss(s, t, m, variant="paper", **kw)
    ref_loss, ref_aux = ref.tsdkd_loss_paper(s, t, m, divergence_name=divergence, skew_alpha=skew_alpha)
    assert_close(loss, ref_loss, what="loss")
    assert_aux_close(aux, ref_aux, ["loss/total", "loss/direct", "loss/em", "loss/indirect", "gate/mean"])
