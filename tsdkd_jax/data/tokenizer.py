"""Tokenizers: load (local folder or hub name), chat templates, EOS ids, and a tiny locally trained one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import transformers

# ChatML, the format of Qwen2.5/Qwen3 instruct models; used for locally trained tokenizers.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def load_tokenizer(name_or_path: str) -> transformers.PreTrainedTokenizerBase:
    """Loads a tokenizer from a local folder, a .gguf file (its vocabulary), or the hub (a name, online)."""
    if os.path.isfile(name_or_path) and name_or_path.endswith(".gguf"):
        from tsdkd_jax.weights import gguf

        return gguf.load_tokenizer(name_or_path)
    if os.path.isdir(name_or_path):
        if not any(
            os.path.exists(os.path.join(name_or_path, f)) for f in ("tokenizer.json", "tokenizer_config.json")
        ):
            raise FileNotFoundError(
                f"{name_or_path}: no tokenizer.json or tokenizer_config.json; expected a Hugging Face "
                "tokenizer folder"
            )
        if _tokenizer_class(name_or_path) in _GENERIC_CLASSES:
            # A tokenizer.json-defined tokenizer (e.g. one from train_tokenizer). AutoTokenizer would follow a
            # config.json beside it (model_type qwen2 → Qwen2Tokenizer) and re-split text its own way.
            return transformers.PreTrainedTokenizerFast.from_pretrained(name_or_path, local_files_only=True)
        return transformers.AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    if name_or_path.startswith((os.path.sep, ".", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"{name_or_path}: no such tokenizer folder (and not a hub name 'org/name')")
    return transformers.AutoTokenizer.from_pretrained(name_or_path)


_GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def _tokenizer_class(folder: str) -> str | None:
    path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f).get("tokenizer_class")


def chat_prompt_ids(
    tokenizer: transformers.PreTrainedTokenizerBase,
    messages: Sequence[dict[str, str]] | str,
    *,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of a chat (a string is one user turn) ending with the assistant's turn header."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if tokenizer.chat_template is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat_template; set one in its tokenizer_config.json"
        )
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return with_bos(tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"])


def bos_prefix(tokenizer: transformers.PreTrainedTokenizerBase) -> list[int]:
    """[bos id] when the tokenizer puts BOS before text by default (Gemma, Llama), else [] (Qwen)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    return [int(bos)] if tokenizer("a")["input_ids"][:1] == [bos] else []


def with_bos(tokenizer: transformers.PreTrainedTokenizerBase, ids: Sequence[int]) -> list[int]:
    """`ids` with the tokenizer's BOS in front when it expects one and `ids` does not start with it already.

    Text that becomes tokens with `add_special_tokens=False` (a rendered chat template, a raw prompt) gets the
    BOS the model was trained with even when the template (or the lack of one) does not write it, as
    transformers' and lm-eval's default encodings do; a template that writes it is not given a second one.
    """
    ids = [int(i) for i in ids]
    prefix = bos_prefix(tokenizer)
    return ids if not prefix or ids[:1] == prefix else prefix + ids


def eos_token_ids(
    model_path: str | None, tokenizer: transformers.PreTrainedTokenizerBase | None = None
) -> tuple[int, ...]:
    """EOS ids: generation_config.json's eos_token_id (int or list; Qwen2.5 has two), else the tokenizer's."""
    ids: list[int] = []
    gen_path = os.path.join(model_path, "generation_config.json") if model_path else None
    if gen_path and os.path.exists(gen_path):
        with open(gen_path) as f:
            eos = json.load(f).get("eos_token_id")
        ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids and tokenizer is not None and tokenizer.eos_token_id is not None:
        ids = [tokenizer.eos_token_id]
    if not ids:
        raise ValueError(
            f"no EOS id found: {gen_path or '(no model path)'} has no eos_token_id and the tokenizer has no "
            "eos_token"
        )
    return tuple(dict.fromkeys(int(i) for i in ids))


def train_tokenizer(
    texts: Iterable[str], out_dir: str, *, vocab_size: int = 512, chat_template: str = CHATML_TEMPLATE
) -> transformers.PreTrainedTokenizerFast:
    """Trains a byte-level BPE tokenizer offline and saves it as an HF folder with ChatML specials."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHATML_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = chat_template
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast
