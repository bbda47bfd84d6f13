"""The method table: the one place that says what each training method is.

Config validation, the loop's response source, the loss of the step, the memory planner and the benchmarks
read `METHODS[config.method]`; none of them compares method names. Adding a method (e.g. MiniLLM) is one row
here plus, if it needs one, a new kernel in tsdkd_jax/losses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections

from tsdkd_jax import losses
from tsdkd_jax.losses import minillm

RESPONSES = ("student", "teacher", "dataset")


@dataclasses.dataclass(frozen=True)
class Method:
    """What a method trains on and with.

    responses: who writes the step's responses. "student": the current student samples on-policy when the
      step's λ coin says so (loss.lam), else dataset responses; "teacher": the teacher samples every step
      (sequence-level KD); "dataset": always the dataset's responses.
    needs_teacher: loads the frozen teacher (for its logits or its samples).
    loss: loss config section → the KD LossConfig, or None for cross-entropy on the responses.
    check: loss config section → None or (field, message) for a setting the method cannot train with.
    pad_is_eos: the released code's convention (pad = EOS, every EOS unattended and unsupervised).
    interleave_k: None, or (SKD) loss config section → K: the "student" samples are drawn with the teacher
      in the sampler's loop, which replaces every proposal outside its top K tokens by its own sample
      (sampling/interleaved.py).
    teacher_mix: loss config section → α: the student's samples are drawn from α·p_teacher + (1 − α)·q_student
      (sampling/mixed.py), or None (the student's own distribution under config.sampling).
    """

    responses: str
    needs_teacher: bool
    loss: Callable[..., losses.LossConfig | None]
    check: Callable[..., tuple[str, str] | None] = lambda lc: None
    pad_is_eos: bool = False
    interleave_k: Callable[..., int] | None = None
    teacher_mix: Callable[..., float] | None = None


def _shared(lc) -> dict:
    return {"beta": lc.beta, "gate_tau": lc.gate_tau, "rank_k": lc.rank_k, "skew_alpha": lc.skew_alpha}


def _tsdkd(variant: str):
    def loss(lc):
        return losses.make_config(
            variant=variant, rank_weight=lc.rank_weight, opener_frac=lc.opener_frac, em_frac=lc.em_frac,
            em_weight=lc.em_weight, use_gate=lc.use_gate, use_indirect=lc.use_indirect, use_em=lc.use_em,
            use_direct=lc.use_direct, **_shared(lc),
        )  # fmt: skip

    return loss


def _divergence_only(divergence: Callable[..., str]):
    def loss(lc):
        kw = {"use_gate": False, "use_indirect": False, "use_em": False}
        return losses.make_config(divergence=divergence(lc), **kw, **_shared(lc))

    return loss


def _some_term(lc):
    if not any(lc[n] for n in ("use_indirect", "use_em", "use_direct")):
        return "loss.use_direct", "with use_em and use_indirect also False the loss is empty"
    return None


def _skew_divergence(lc):
    if lc.divergence not in ("skl", "srkl"):
        return "loss.divergence", f"distillm needs 'skl' or 'srkl', got {lc.divergence!r}"
    return None


def _skd_k(lc):
    k = lc.skd_top_k
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        return "loss.skd_top_k", f"must be a whole number >= 0, got {k!r}"
    return None


def _cross_entropy(lc):
    return None


def minillm_defaults() -> ml_collections.ConfigDict:
    """config.loss.minillm: MiniLLM's defaults from the paper (Gu et al., ICLR 2024, §2.2 and App. B) and its
    released scripts. Rollouts sample at temperature 1 from the full mixed distribution (no top-k/top-p).
    The paper's pre-training LM term (L_PT on a pre-training corpus) is not implemented: it is off here."""
    c = ml_collections.ConfigDict()
    c.mix_alpha = 0.2  # α of teacher-mixed sampling: sample from 0.2·p_teacher + 0.8·q_student
    c.clip_eps = 0.2  # ε: the importance ratio q/p̃ of the long-term term clipped to [0.8, 1.2] (PPO-style)
    c.length_norm = True  # long-term return from t+1 divided by the number of tokens after t
    return c


def _minillm_loss(lc):
    return minillm.MiniLLMConfig(**lc.minillm.to_dict())


def _on_policy_global(lc):
    if lc.lam != 1.0:
        return (
            "loss.lam",
            f"minillm trains on its own (teacher-mixed) samples only: needs 1.0, got {lc.lam!r}",
        )
    if lc.normalize != "global":
        return (
            "loss.normalize",
            f"minillm normalises over the step's tokens: needs 'global', got {lc.normalize!r}",
        )
    try:
        _minillm_loss(lc)
    except (ValueError, TypeError) as e:  # the message names the field
        return "loss.minillm", str(e)
    return None


METHODS: dict[str, Method] = {
    "tsdkd": Method("student", True, _tsdkd("paper"), check=_some_term),
    "tsdkd_official": Method("student", True, _tsdkd("official"), check=_some_term, pad_is_eos=True),
    "gkd": Method("student", True, _divergence_only(lambda lc: "gjsd")),
    "distillm": Method("student", True, _divergence_only(lambda lc: lc.divergence), check=_skew_divergence),
    "supervised_kd": Method("dataset", True, _divergence_only(lambda lc: "fkl")),
    "seqkd": Method("teacher", True, _cross_entropy),
    "sft": Method("dataset", False, _cross_entropy),
    # Speculative KD (Xu et al., ICLR 2025): forward KL on the student-proposed, teacher-corrected samples
    "skd": Method(
        "student",
        True,
        _divergence_only(lambda lc: "fkl"),
        check=_skd_k,
        interleave_k=lambda lc: lc.skd_top_k,
    ),
    "minillm": Method(
        "student", True, _minillm_loss, check=_on_policy_global, teacher_mix=lambda lc: lc.minillm.mix_alpha
    ),
}


def get(name: str) -> Method:
    """The table row of `name`; ValueError naming the field for an unknown one."""
    if name not in METHODS:
        raise ValueError(f"config.method: unknown method {name!r}; expected one of {tuple(METHODS)}")
    return METHODS[name]


def of(config) -> Method:
    return get(config.method)


def loss_config(config) -> losses.LossConfig | minillm.MiniLLMConfig | None:
    """The KD loss of `config.method` as a LossConfig; None for the cross-entropy methods."""
    return of(config).loss(config.loss)


def samples_on_policy(config) -> bool:
    """Whether some steps' responses are the student's samples (λ > 0 for a "student" method)."""
    return of(config).responses == "student" and config.loss.lam > 0


def needs_dataset_responses(config) -> bool:
    """Whether some steps train on the dataset's responses."""
    m = of(config)
    return m.responses == "dataset" or (m.responses == "student" and config.loss.lam < 1.0)


def interleave_k(config) -> int | None:
    """K of a method whose student samples the teacher corrects in the loop (SKD); None for the others."""
    fn = of(config).interleave_k
    return None if fn is None else int(fn(config.loss))


def responder(config, on_policy_step: bool) -> str | None:
    """Who samples this step's responses: "student", "teacher", or None (the dataset's)."""
    m = of(config)
    if m.responses == "teacher":
        return "teacher"
    if m.responses == "student" and on_policy_step:
        return "student"
    return None
