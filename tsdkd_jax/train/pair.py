"""The teacher/student pair: tokenizer folders, and their compatibility from config.json and the tokenizers."""

from __future__ import annotations

import os

from tsdkd_jax.train import config as config_lib
from tsdkd_jax.train import methods


def tokenizer_path(config, side: str) -> str:
    """The tokenizer folder/name of "student" or "teacher" (teacher falls back to the student's)."""
    if side == "student":
        return config.student.tokenizer or config.student.path
    return config.teacher.tokenizer or (
        config.teacher.path
        if os.path.exists(os.path.join(os.path.expanduser(config.teacher.path), "tokenizer.json"))
        else tokenizer_path(config, "student")
    )


def check_pair(config, student_tokenizer, teacher_tokenizer=None) -> None:
    """Teacher/student compatibility from config.json and the tokenizers (no weights are read)."""
    s = config_lib.hf_config(config.student.path, "student.path")
    if len(student_tokenizer) > s["vocab_size"]:
        raise config_lib.err(
            "student.tokenizer",
            f"has {len(student_tokenizer)} tokens but the student's vocab_size is {s['vocab_size']}",
        )
    if not methods.of(config).needs_teacher:
        return
    t = config_lib.hf_config(config.teacher.path, "teacher.path")
    # the loss's top-k runs over the vocabulary both sides' logits are brought to (see loss.vocab_policy)
    vocab = t["vocab_size"] if config.loss.vocab_policy == "pad_student" else s["vocab_size"]
    loss_cfg = methods.loss_config(config)
    if loss_cfg is not None and loss_cfg.use_indirect and config.loss.rank_k > vocab:
        raise config_lib.err(
            "loss.rank_k", f"{config.loss.rank_k} exceeds the models' vocabulary size {vocab}"
        )
    if s["vocab_size"] > t["vocab_size"]:
        raise config_lib.err(
            "teacher.path",
            f"vocab mismatch: the student's vocab_size {s['vocab_size']} exceeds the teacher's {t['vocab_size']}",
        )
    extra = t["vocab_size"] - s["vocab_size"]
    needs_cut = getattr(loss_cfg, "divergence", None) == "fkl" or methods.of(config).teacher_mix is not None
    if (
        needs_cut
        and extra > 0
        and config.loss.vocab_policy == "pad_student"
        and not config.student.resize_vocab_to_teacher
    ):
        raise config_lib.err(
            "loss.vocab_policy",
            f"{config.method} needs the teacher's distribution over the student's ids: with \"pad_student\" the "
            f"teacher's {extra} extra ids make forward KL infinite (student probability 0) or differ from what "
            'the sampler draws from; use "truncate_teacher"',
        )
    if teacher_tokenizer is not None and teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise config_lib.err(
            "teacher.tokenizer",
            "tokenizer mismatch: the teacher's vocabulary differs from the student's "
            f"({len(teacher_tokenizer)} vs {len(student_tokenizer)} tokens); distillation needs one vocabulary",
        )
