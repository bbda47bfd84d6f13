"""A LoRA student's adapters → a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors).

PEFT's LoRA layer on an HF Linear (weight [out, in]) computes y = x·Wᵀ + (lora_alpha/r) · x·Aᵀ·Bᵀ with
lora_A.weight [r, in] and lora_B.weight [out, r], stored under `base_model.model.<module>.lora_A.weight`
where <module> is the Linear's name in the transformers model (e.g. model.layers.0.self_attn.q_proj). Our
adapters (models/lora.py) compute (α/r) · (x·A)·B with A [L, *in, r] and B [L, r, *out]; the HF weight's
name and its axes' grouping come from the same table the weight export uses (weights/mapping.py), so
`PeftModel.from_pretrained(<the original student>, folder)` adds exactly the update the JAX model trained.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import save_file

from tsdkd_jax.models.layers import weight_axes
from tsdkd_jax.weights import mapping

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def peft_tensors(model) -> dict[str, np.ndarray]:
    """PEFT's tensor name → array (float32) for every layer of every adapted projection of `model`."""
    adapters, config = model.lora, model.config
    entries = {e.ours: e for e in mapping.table(config)}
    tensors = {}
    for target in adapters.targets:
        entry = entries[f"layers.{target}"]
        in_axes, out_axes = weight_axes(target)
        if entry.hf_groups != [list(out_axes), list(in_axes)]:  # HF [out, in], each group in our axis order
            raise ValueError(f"{entry.hf}: HF axes {entry.hf_dims} are not [{out_axes}, {in_axes}]")
        module = "base_model.model." + entry.hf.removesuffix(".weight")
        a = np.asarray(getattr(adapters, f"{target}_a").get_value(), np.float32)
        b = np.asarray(getattr(adapters, f"{target}_b").get_value(), np.float32)
        rank = adapters.rank
        for i in range(config.num_layers):
            name = module.format(i=i)
            tensors[f"{name}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, rank).T)
            tensors[f"{name}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(rank, -1).T)
    return tensors


def adapter_config(model, *, base_model: str = "") -> dict:
    """adapter_config.json's content: plain LoRA (no dropout, bias or rsLoRA) on the adapted Linears."""
    adapters = model.lora
    entries = {e.ours: e for e in mapping.table(model.config)}
    modules = sorted(entries[f"layers.{t}"].hf.split(".")[-2] for t in adapters.targets)  # e.g. q_proj
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or None,
        "r": adapters.rank,
        "lora_alpha": int(adapters.alpha) if float(adapters.alpha).is_integer() else adapters.alpha,
        "target_modules": modules,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "inference_mode": True,
    }


def save_adapter(model, out_dir, *, base_model: str = "") -> None:
    """Write `model`'s adapters as a PEFT LoRA folder (see the module docstring)."""
    os.makedirs(out_dir, exist_ok=True)
    save_file(peft_tensors(model), os.path.join(out_dir, WEIGHTS_FILE), metadata={"format": "pt"})
    with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
        json.dump(adapter_config(model, base_model=base_model), f, indent=2)
