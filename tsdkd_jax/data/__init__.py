"""Data: tokenizers, chat templates, rows → filtered chat-templated token batches, a resumable iterator."""

from tsdkd_jax.data.config import default_config, validate
from tsdkd_jax.data.iterator import PromptIterator, bucket_length, eval_batches, make_batch
from tsdkd_jax.data.prompts import (
    PromptSet,
    end_of_turn_id,
    load_prompt_data,
    resolve_pad_id,
    split_holdout,
    tokenize_rows,
)
from tsdkd_jax.data.source import read_rows
from tsdkd_jax.data.tokenizer import (
    CHATML_TEMPLATE,
    chat_prompt_ids,
    eos_token_ids,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "CHATML_TEMPLATE",
    "PromptIterator",
    "PromptSet",
    "bucket_length",
    "chat_prompt_ids",
    "default_config",
    "end_of_turn_id",
    "eos_token_ids",
    "eval_batches",
    "load_prompt_data",
    "load_tokenizer",
    "make_batch",
    "read_rows",
    "resolve_pad_id",
    "split_holdout",
    "tokenize_rows",
    "train_tokenizer",
    "validate",
]
