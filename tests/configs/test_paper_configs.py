"""The paper's experiment files: every config and variant loads and validates (without the model files),
carries SPEC §3's hyper-parameters, and bad overrides fail naming the field."""

import importlib.util
import os

import pytest

from tsdkd_jax import train
from tsdkd_jax.train import objectives

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PAPER = {  # file → devices of the slice its docstring names
    "tsdkd_qwen2_5_14b_to_1_5b.py": 32,
    "tsdkd_gemma2_9b_to_2b.py": 16,
    "tsdkd_qwen3_8b_to_1_7b.py": 16,
}


def load(name):
    spec = importlib.util.spec_from_file_location(f"cfg_{name[:-3]}", os.path.join(REPO, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def common():
    return load("common.py")


VARIANT_ARGS = sorted(common().VARIANTS) + ["opener_frac=1.0", "gkd,smoke", "official,smoke", "optim.lr=1e-6"]


@pytest.mark.parametrize("name", sorted(PAPER))
@pytest.mark.parametrize("arg", [None, *VARIANT_ARGS])
def test_every_paper_config_and_variant_validates(name, arg):
    c = load(name).get_config(arg)
    train.validate(c, device_count=PAPER[name], check_paths=False)
    objectives.loss_config(c)  # the loss hyper-parameters are accepted by the kernels too


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_hyper_parameters(name):
    c = load(name).get_config()
    assert c.method == "tsdkd" and c.loss.lam == 1.0
    assert c.optim.lr == (1e-7 if "gemma" in name else 5e-6)
    assert (c.optim.warmup_frac, c.optim.grad_clip, c.data.batch_size) == (0.1, 1.0, 128)
    assert c.total_steps == 3 * 80_000 // 128 == 1875
    assert c.data.max_prompt_len + c.sampling.max_new_tokens == 1024
    assert (c.data.path, c.data.prompt_field, c.data.response_field) == (
        "openbmb/UltraInteract_sft", "instruction", "response"
    )  # fmt: skip
    assert (c.loss.beta, c.loss.gate_tau, c.loss.rank_k, c.loss.rank_weight) == (0.9, 1.0, 10, 0.1)
    assert (c.loss.opener_frac, c.loss.em_frac, c.loss.em_weight) == (0.1, 0.1, 1.0)
    assert (c.sampling.temperature, c.sampling.top_k, c.sampling.top_p) == (1.0, 0, 1.0)
    assert load(name).__doc__.count("python -m tsdkd_jax.main") >= 1


def test_official_variant_reproduces_the_released_run():
    for name in PAPER:
        c = load(name).get_config("official")
        assert c.method == "tsdkd_official"
        assert c.sampling.max_new_tokens == 128 and c.data.max_response_len == 128
        assert c.loss.normalize == "micro_batch" and c.loss.logits_dtype == "bfloat16"
        assert c.student.compute_dtype == c.teacher.dtype == "bfloat16"
        # the embedding resize (151,936 → 152,064) only matters for the Qwen2.5 pair
        assert c.student.resize_vocab_to_teacher == ("qwen2_5" in name)


def test_variants_select_methods_and_ablations():
    q = load("tsdkd_qwen2_5_14b_to_1_5b.py")
    assert q.get_config("gkd").method == "gkd"
    gate_only = q.get_config("gate_only").loss
    assert not gate_only.use_em and not gate_only.use_indirect and gate_only.use_gate
    assert q.get_config("c100").loss.opener_frac == 1.0
    assert q.get_config("opener_frac=1.0").loss.opener_frac == 1.0
    assert q.get_config("sft").teacher.path == ""
    assert q.get_config("distillm_srkl").loss.divergence == "srkl"
    assert q.get_config("offpolicy").loss.lam == 0.0


@pytest.mark.parametrize(
    "arg, error, message",
    [
        ("loss.beta=2.0", ValueError, r"loss.beta: must be in \[0, 1\], got 2.0"),
        ("lam=-0.5", ValueError, r"loss.lam: must be in \[0, 1\], got -0.5"),
        ("data.batch_size=100", ValueError, r"data.batch_size: the micro-batch .* = 100 is not divisible"),
        ("method='distill'", ValueError, "method: unknown method 'distill'"),
        ("loss.logits_dtype='float16'", ValueError, "loss.logits_dtype: must be one of"),
        ("sampling.max_new_tokens=0", ValueError, "sampling.max_new_tokens: must be >= 1"),
    ],
)
def test_bad_override_fails_naming_the_field(arg, error, message):
    c = load("tsdkd_qwen2_5_14b_to_1_5b.py").get_config(arg)
    with pytest.raises(error, match=message):
        train.validate(c, device_count=32, check_paths=False)


def test_bad_variant_names_and_fields_are_rejected():
    q = load("tsdkd_qwen2_5_14b_to_1_5b.py")
    with pytest.raises(ValueError, match=r"tsdkd_qwen2_5_14b_to_1_5b.py: unknown variant 'gdk'"):
        q.get_config("gdk")
    with pytest.raises(ValueError, match=r"unknown field 'loss.betta'"):
        q.get_config("loss.betta=0.5")


def test_check_paths_reports_missing_model_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("TSDKD_MODELS", str(tmp_path))
    c = load("tsdkd_qwen2_5_14b_to_1_5b.py").get_config()
    assert c.student.path == str(tmp_path / "Qwen2.5-1.5B-Instruct")
    with pytest.raises(FileNotFoundError, match="student.path=.*no such model folder"):
        train.validate(c, device_count=32)
    train.validate(c, device_count=32, check_paths=False)


@pytest.mark.parametrize("arg", [None, "tiny", "tiny,gkd", "tiny,official"])
def test_bench_config_validates(arg):
    c = load("bench_gpu.py").get_config(arg)
    train.validate(c, device_count=1, check_paths=False)
    shapes = load("bench_gpu.py").SHAPES
    assert c.bench.student in shapes and c.bench.teacher in shapes
