"""Each load failure names the file/tensor and what was expected."""

import json
import os

import numpy as np
import pytest
import tiny_hf
from safetensors.numpy import load_file, save_file

from tsdkd_jax import models


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2")
    tiny_hf.build("qwen2_untied").save_pretrained(path)
    return path


def _copy(saved, tmp_path, edit_tensors=None, edit_config=None):
    with open(saved / "config.json") as f:
        config = json.load(f)
    if edit_config:
        edit_config(config)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    tensors = load_file(saved / "model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    return tmp_path


def test_no_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No config.json in .*"):
        models.from_pretrained(tmp_path)


def test_unknown_model_type(saved, tmp_path):
    path = _copy(saved, tmp_path, edit_config=lambda c: c.update(model_type="mamba"))
    with pytest.raises(
        ValueError, match=r"Unsupported model_type 'mamba' in .*config.json; supported: qwen2"
    ):
        models.from_pretrained(path)


def test_missing_tensor(saved, tmp_path):
    path = _copy(saved, tmp_path, edit_tensors=lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(
        KeyError, match=r"Missing tensor 'model.layers.1.self_attn.k_proj.weight'.*expected shape"
    ):
        models.from_pretrained(path)


def test_misshaped_tensor(saved, tmp_path):
    def edit(t):
        t["lm_head.weight"] = np.zeros((200, 64), np.float32)

    path = _copy(saved, tmp_path, edit_tensors=edit)
    with pytest.raises(
        ValueError,
        match=r"'lm_head.weight' in .*model.safetensors has shape \(200, 64\), "
        r"expected \(256, 64\)",
    ):
        models.from_pretrained(path)


def test_truncated_file(saved, tmp_path):
    path = _copy(saved, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"Cannot read safetensors file .*model.safetensors"):
        models.from_pretrained(path)


def test_no_weights(saved, tmp_path):
    path = _copy(saved, tmp_path)
    os.remove(path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"No weights in .*expected model.safetensors"):
        models.from_pretrained(path)
