"""On-device generation: prefill + `lax.while_loop` decode with greedy/temperature/top-k/top-p and EOS."""

from tsdkd_jax.sampling.batching import PaddedBatch, pad_batch, sample_key
from tsdkd_jax.sampling.distributions import SamplingParams, choose, make_params, sampling_logits
from tsdkd_jax.sampling.generate import (
    SAMPLING_RULES,
    SampleOutput,
    generate,
    generate_from_state,
)
from tsdkd_jax.sampling.mixed import generate_mixed, mixture_logprobs

__all__ = [
    "SAMPLING_RULES",
    "PaddedBatch",
    "SampleOutput",
    "SamplingParams",
    "choose",
    "generate",
    "generate_from_state",
    "generate_mixed",
    "make_params",
    "mixture_logprobs",
    "pad_batch",
    "sample_key",
    "sampling_logits",
]
