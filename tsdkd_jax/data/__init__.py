"""Data: tokenizers and chat templates (datasets → token batches arrive with the trainer)."""

from tsdkd_jax.data.tokenizer import (
    CHATML_TEMPLATE,
    chat_prompt_ids,
    eos_token_ids,
    load_tokenizer,
    train_tokenizer,
)

__all__ = ["CHATML_TEMPLATE", "chat_prompt_ids", "eos_token_ids", "load_tokenizer", "train_tokenizer"]
