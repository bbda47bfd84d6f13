"""Each config mistake is rejected before anything compiles, with a message naming the field."""

import json
import os
import shutil

import pytest

from tsdkd_jax import data, train


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"method": "distill_everything"}, "method: unknown method 'distill_everything'"),
        ({"loss.beta": 1.5}, r"loss.beta: must be in \[0, 1\], got 1.5"),
        ({"loss.lam": -0.1}, r"loss.lam: must be in \[0, 1\], got -0.1"),
        (
            {"data.batch_size": 6},
            r"data.batch_size: the micro-batch .* = 6 is not divisible by the data axes",
        ),
        ({"optim.grad_accum": 3}, "data.batch_size: 8 is not divisible by optim.grad_accum=3"),
        ({"loss.normalize": "tokens"}, "loss.normalize: must be one of"),
        ({"method": "distillm", "loss.divergence": "gjsd"}, "loss.divergence: distillm needs"),
        ({"teacher.dtype": "float16"}, "teacher.dtype: must be one of"),
        ({"student.path": ""}, "student.path: is empty"),
        ({"teacher.path": ""}, "teacher.path: is empty"),
        ({"data.response_field": "", "loss.lam": 0.5}, "data.response_field: method=tsdkd with λ=0.5 needs"),
        ({"data.max_response_len": 32}, "data.max_response_len: 32 exceeds sampling.max_new_tokens=16"),
        (
            {"sampling.length_bucket": -1},
            r"sampling.length_bucket: must be >= 0 \(0 = the method's default\)",
        ),
        ({"lora.rank": 4, "lora.targets": "q,attn"}, "lora.targets: expected distinct names from"),
        (
            {"loss.use_direct": False, "loss.use_em": False, "loss.use_indirect": False},
            "loss.use_direct: with use_em and use_indirect also False the loss is empty",
        ),
        ({"method": "seqkd", "loss.fused": True}, "loss.fused: only the KD losses"),
        ({"method": "minillm", "loss.fused": True}, "loss.fused: only the KD losses"),
        ({"cpu_inline_dispatch": None}, "cpu_inline_dispatch: must be True or False, got None"),
    ],
)
def test_config_errors_name_the_field(tiny_config, overrides, message):
    c = tiny_config()
    for key, value in overrides.items():
        section, _, field = key.rpartition(".")
        (c[section] if section else c)[field] = value
    with pytest.raises(ValueError, match=message):
        train.validate(c, device_count=8)


def test_missing_paths(tiny_config, tmp_path):
    c = tiny_config()
    c.teacher.path = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="teacher.path=.*no such model folder"):
        train.validate(c, device_count=8)
    c = tiny_config()
    c.data.path = str(tmp_path / "prompts.jsonl")
    with pytest.raises(FileNotFoundError, match="data.path=.*no such file"):
        train.validate(c, device_count=8)


def test_vocab_mismatch(tiny_config, tmp_path):
    c = tiny_config()
    small = tmp_path / "teacher"
    shutil.copytree(c.teacher.path, small)
    cfg = json.loads((small / "config.json").read_text())
    cfg["vocab_size"] = 300
    (small / "config.json").write_text(json.dumps(cfg))
    c.teacher.path = str(small)
    tok = data.load_tokenizer(c.student.path)
    with pytest.raises(
        ValueError, match="teacher.path: vocab mismatch: the student's vocab_size 384 exceeds"
    ):
        train.check_pair(c, tok)


@pytest.mark.parametrize("method", ["skd", "supervised_kd", "minillm"])
def test_teacher_with_more_ids_needs_truncation_for_forward_kl_and_the_mixture(tiny_config, tmp_path, method):
    """A teacher with extra ids (the Qwen2.5 pair): forward KL would be infinite under pad_student."""
    c = tiny_config(method)
    big = tmp_path / "teacher"
    shutil.copytree(c.teacher.path, big)
    cfg = json.loads((big / "config.json").read_text())
    cfg["vocab_size"] = 400  # the student has 384
    (big / "config.json").write_text(json.dumps(cfg))
    c.teacher.path = str(big)
    tok = data.load_tokenizer(c.student.path)
    with pytest.raises(ValueError, match='loss.vocab_policy: .* use "truncate_teacher"'):
        train.check_pair(c, tok)
    c.loss.vocab_policy = "truncate_teacher"
    train.check_pair(c, tok)
    c.method, c.loss.vocab_policy = "gkd", "pad_student"  # generalized JSD stays finite: no cut needed
    train.check_pair(c, tok)


def test_tokenizer_mismatch(tiny_config, tmp_path):
    c = tiny_config()
    other = data.train_tokenizer(
        ["completely different words here"] * 10, str(tmp_path / "tok"), vocab_size=300
    )
    tok = data.load_tokenizer(c.student.path)
    with pytest.raises(ValueError, match="teacher.tokenizer: tokenizer mismatch"):
        train.check_pair(c, tok, other)


def test_tiny_variants_and_unknown_variant(tiny_config):
    assert tiny_config("gkd,accum").method == "gkd"
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        tiny_config("nope")
    assert os.path.isdir(tiny_config().student.path)
