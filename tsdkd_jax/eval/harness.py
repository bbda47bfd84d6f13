"""lm-evaluation-harness bridge: an lm-eval `LM` backed by our JAX model and sampler, registered "tsdkd_jax".

Any lm-eval task (IFEval, BBH, MuSR, ...) runs on a JAX model without exporting it:

    python -m tsdkd_jax.eval.harness run --model tsdkd_jax --model_args path=/ckpt/export \\
        --tasks ifeval --batch_size 8 --output_path out/      # lm-eval's CLI with our model registered

    import tsdkd_jax.eval.harness, lm_eval                  # importing registers the model
    lm_eval.simple_evaluate(model="tsdkd_jax", model_args="path=/ckpt/export", tasks=["ifeval"])

(`lm_eval --model tsdkd_jax` itself cannot find the model: lm-eval 0.4.13 has no plugin discovery, so the
module must be imported first, which `python -m tsdkd_jax.eval.harness` does.) model_args: path (HF folder,
required unless a model object is given), tokenizer (default: path), dtype, max_length (default: the
config's max_position_embeddings, else 2048), max_gen_toks (256), seed, add_bos_token (default: the tokenizer's own default, as lm-eval's HF backend:
Gemma's adds <bos>), bucket_multiple.
Generation uses `runner.generate_texts`, scoring `runner.continuation_logprobs`, the same code as the native
evaluation, so both give the same outputs and log-likelihoods for the same token ids.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from tsdkd_jax.eval import runner


@register_model("tsdkd_jax")
class TsdkdLM(TemplateLM):
    """lm-eval model: greedy/sampled `generate_until`, `loglikelihood`, `loglikelihood_rolling`."""

    def __init__(
        self,
        path: str | None = None,
        pretrained: str | None = None,
        tokenizer: Any = None,
        model: Any = None,
        dtype: str = "float32",
        batch_size: int | str | None = 8,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        seed: int = 0,
        add_bos_token: bool | None = None,
        bucket_multiple: int = 64,
        eos_token_ids: tuple[int, ...] | None = None,
        **_: Any,  # lm-eval also passes device / max_batch_size; they do not apply here
    ):
        super().__init__()
        from tsdkd_jax import data, models

        path = path or pretrained
        if model is None:
            if not path:
                raise ValueError("tsdkd_jax: give model_args path=<HF folder> (or a model object)")
            model = models.from_pretrained(path, dtype=dtype)
        self.model = model
        if tokenizer is None or isinstance(tokenizer, str):
            if not (tokenizer or path):
                raise ValueError("tsdkd_jax: give tokenizer=<folder> when passing a model object")
            tokenizer = data.load_tokenizer(tokenizer or path)
        self.tokenizer = tokenizer
        self.eos_ids = tuple(eos_token_ids or data.eos_token_ids(path, tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        hf = getattr(model.config, "hf_config", None) or {}
        self._max_length = int(max_length or hf.get("max_position_embeddings") or 2048)
        self.batch_size = int(batch_size) if str(batch_size or "").isdigit() else 8
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        # None: the tokenizer's own default, like lm-eval's HF backend (Gemma's tokenizer adds <bos>)
        self.add_bos_token = None if add_bos_token is None else _as_bool(add_bos_token)
        self.bucket_multiple = int(bucket_multiple)
        self._name = str(path or getattr(tokenizer, "name_or_path", "model"))

    # ---- TemplateLM plumbing --------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return int(self.eos_ids[0])

    @property
    def prefix_token_id(self) -> int:
        # As lm-eval's HF backend: the context of an empty-context request is BOS, else the end-of-text id.
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self._name.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:
            add_special_tokens = self.add_bos_token
            bos = self.tokenizer.bos_token
            if bos and string.startswith(bos):  # already there (e.g. a chat template wrote it): not twice
                add_special_tokens = False
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer(string, **kwargs)["input_ids"]

    def tok_decode(self, tokens) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=False)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt=True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    # ---- requests -----------------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, **kwargs
    ) -> list[tuple[float, bool]]:
        return runner.continuation_logprobs(
            self.model,
            [ctx for _, ctx, _ in requests],
            [cont for _, _, cont in requests],
            batch_size=self.batch_size,
            pad_token_id=self.pad_id,
            max_length=self.max_length,
            bucket_multiple=self.bucket_multiple,
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(string, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owner.append(i)
        scores = self._loglikelihood_tokens(windows) if windows else []
        totals = [0.0] * len(requests)
        for (lp, _), i in zip(scores, owner):
            totals[i] += lp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        results: list[str] = [""] * len(requests)
        eos_text = self.tok_decode([self.eot_token_id])
        for members in groups.values():
            kwargs = normalize_gen_kwargs(requests[members[0]].args[1], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos_text)
            max_gen = int(kwargs.pop("max_gen_toks"))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            max_ctx = self.max_length - max_gen
            if max_ctx <= 0:
                raise ValueError(f"max_gen_toks={max_gen} leaves no room for a prompt in {self.max_length}")
            prompts = [self.tok_encode(requests[i].args[0])[-max_ctx:] for i in members]
            texts = runner.generate_texts(
                self.model,
                prompts,
                self.tokenizer,
                batch_size=self.batch_size,
                max_new_tokens=max_gen,
                eos_token_ids=self.eos_ids,
                pad_token_id=self.pad_id,
                temperature=temperature,
                seed=self.seed,
                stop=until,
                bucket_multiple=self.bucket_multiple,
            )
            for i, text in zip(members, texts):
                results[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results


def _as_bool(value) -> bool:
    """model_args arrive as strings from lm-eval's command line ("add_bos_token=False")."""
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"tsdkd_jax: add_bos_token must be true or false, got {value!r}")
        return value.lower() in ("true", "1")
    return bool(value)


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the "tsdkd_jax" model registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
