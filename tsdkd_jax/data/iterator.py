"""Fixed-shape, per-host, resumable batches of prompts (and optional responses).

Order. Epoch e visits the training examples in `np.random.default_rng([seed, e]).permutation(n)`; step s of
the epoch takes global batch `order[s*B:(s+1)*B]`. The last `n % B` examples of an epoch's order are dropped
(static shapes), so `steps_per_epoch = n // B`; a different permutation next epoch drops different ones.

Hosts. Every process holds the same examples and computes the same global batch; process p keeps rows
`[p*B/P, (p+1)*B/P)` of it, so the shards of one step are disjoint and together the whole global batch, in
the order `jax.make_array_from_process_local_data` expects for a batch axis laid out process by process.

Shapes. Prompts are LEFT-padded (the sampler appends after the last column) to a bucket length chosen from
the longest prompt of the GLOBAL batch, so every host pads to the same length: "multiple" rounds it up to a
multiple of `bucket_multiple`, "pow2" to the next power of two, "max" always uses `max_prompt_len`; all are
capped at `max_prompt_len`. Responses are RIGHT-padded to `max_response_len`. Masks are int32 1/0.

State. `get_state()` is {"seed", "epoch", "position" (next step within the epoch), "batch_size",
"num_examples"}: JSON-able, and `set_state` of it resumes the exact batch sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from tsdkd_jax.data.config import PROMPT_BUCKETS
from tsdkd_jax.data.prompts import PromptSet

_STATE_KEYS = ("seed", "epoch", "position", "batch_size", "num_examples")


def bucket_length(longest: int, *, max_len: int, policy: str = "multiple", multiple: int = 64) -> int:
    """Padded prompt length for a batch whose longest prompt has `longest` tokens."""
    if policy == "max":
        return max_len
    if policy == "pow2":
        length = 1 << max(0, longest - 1).bit_length()
    elif policy == "multiple":
        length = -(-max(longest, 1) // multiple) * multiple
    else:
        raise ValueError(f"data.prompt_bucket must be one of {PROMPT_BUCKETS}, got {policy!r}")
    return min(max_len, length)


def make_batch(
    examples: PromptSet, indices: Sequence[int], *, prompt_len: int, response_len: int, pad_id: int
) -> dict[str, np.ndarray]:
    """prompt_ids/prompt_mask [b, prompt_len] left-padded; response_ids/response_mask [b, response_len]
    right-padded when the examples have responses."""
    b = len(indices)
    batch = {
        "prompt_ids": np.full((b, prompt_len), pad_id, np.int32),
        "prompt_mask": np.zeros((b, prompt_len), np.int32),
    }
    if examples.responses is not None:
        batch["response_ids"] = np.full((b, response_len), pad_id, np.int32)
        batch["response_mask"] = np.zeros((b, response_len), np.int32)
    for j, i in enumerate(indices):
        p = examples.prompts[i]
        if len(p) > prompt_len or (
            examples.responses is not None and len(examples.responses[i]) > response_len
        ):
            raise ValueError(f"example {i} does not fit prompt_len={prompt_len}, response_len={response_len}")
        batch["prompt_ids"][j, prompt_len - len(p) :] = p
        batch["prompt_mask"][j, prompt_len - len(p) :] = 1
        if examples.responses is not None:
            r = examples.responses[i]
            batch["response_ids"][j, : len(r)] = r
            batch["response_mask"][j, : len(r)] = 1
    return batch


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How a global batch of example indices becomes this process's arrays (see the module docstring)."""

    max_prompt_len: int
    max_response_len: int
    pad_id: int
    prompt_bucket: str
    bucket_multiple: int
    process_index: int
    process_count: int


def _host_batch(
    examples: PromptSet, lengths: np.ndarray, idx: np.ndarray, layout: _Layout
) -> dict[str, np.ndarray]:
    """This process's rows of the global batch `idx`; prompts padded to the bucket of the longest prompt in
    the whole global batch, so every process pads to the same length."""
    prompt_len = bucket_length(
        int(lengths[idx].max()),
        max_len=layout.max_prompt_len,
        policy=layout.prompt_bucket,
        multiple=layout.bucket_multiple,
    )
    rows = _process_rows(len(idx), layout)
    return make_batch(
        examples, idx[rows], prompt_len=prompt_len, response_len=layout.max_response_len, pad_id=layout.pad_id
    )


def _process_rows(global_size: int, layout: _Layout) -> slice:
    """This process's rows of a global batch: the p-th of process_count equal, contiguous shares."""
    b = global_size // layout.process_count
    return slice(layout.process_index * b, (layout.process_index + 1) * b)


class PromptIterator:
    """Endless iterator of this process's share of each global batch; see the module docstring."""

    def __init__(
        self,
        examples: PromptSet,
        *,
        batch_size: int,
        seed: int,
        max_prompt_len: int,
        max_response_len: int = 0,
        pad_id: int,
        prompt_bucket: str = "multiple",
        bucket_multiple: int = 64,
        process_index: int = 0,
        process_count: int = 1,
        shuffle: bool = True,
    ):
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(
                f"data.batch_size={batch_size} is not a positive multiple of the process count "
                f"{process_count}"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
        if len(examples) < batch_size:
            raise ValueError(f"{len(examples)} training examples are fewer than data.batch_size={batch_size}")
        longest = max(len(p) for p in examples.prompts)
        if longest > max_prompt_len:
            raise ValueError(f"a prompt has {longest} tokens, more than data.max_prompt_len={max_prompt_len}")
        if examples.responses is not None and max(len(r) for r in examples.responses) > max_response_len:
            raise ValueError(f"a response is longer than data.max_response_len={max_response_len}")
        if prompt_bucket not in PROMPT_BUCKETS:
            raise ValueError(f"data.prompt_bucket must be one of {PROMPT_BUCKETS}, got {prompt_bucket!r}")
        self.examples = examples
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.layout = _Layout(
            max_prompt_len,
            max_response_len,
            pad_id,
            prompt_bucket,
            bucket_multiple,
            process_index,
            process_count,
        )
        self.steps_per_epoch = len(examples) // batch_size
        self._lengths = np.asarray([len(p) for p in examples.prompts], np.int64)
        self._epoch, self._position = 0, 0
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, permutation), cached

    @classmethod
    def from_config(
        cls,
        examples: PromptSet,
        config: Mapping[str, Any],
        *,
        pad_id: int,
        process_index: int | None = None,
        process_count: int | None = None,
        shuffle: bool = True,
    ) -> PromptIterator:
        """Built from the `config.data` section; process index/count default to jax's."""
        if process_index is None or process_count is None:
            import jax

            process_index, process_count = jax.process_index(), jax.process_count()
        return cls(
            examples,
            batch_size=config["batch_size"],
            seed=config["seed"],
            max_prompt_len=config["max_prompt_len"],
            max_response_len=config["max_response_len"],
            pad_id=pad_id,
            prompt_bucket=config["prompt_bucket"],
            bucket_multiple=config["bucket_multiple"],
            process_index=process_index,
            process_count=process_count,
            shuffle=shuffle,
        )

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.layout.process_count

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The example order of `epoch` (identical on every process)."""
        if self._order is None or self._order[0] != epoch:
            n = len(self.examples)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order = (epoch, order)
        return self._order[1]

    def global_indices(self, epoch: int, position: int) -> np.ndarray:
        """Example indices of the global batch at (epoch, position)."""
        return self.epoch_order(epoch)[position * self.batch_size : (position + 1) * self.batch_size]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = _host_batch(
            self.examples, self._lengths, self.global_indices(self._epoch, self._position), self.layout
        )
        self._position += 1
        if self._position == self.steps_per_epoch:
            self._epoch, self._position = self._epoch + 1, 0
        return batch

    def get_state(self) -> dict[str, int]:
        """Where the next batch comes from; JSON-able."""
        return {
            "seed": self.seed,
            "epoch": self._epoch,
            "position": self._position,
            "batch_size": self.batch_size,
            "num_examples": len(self.examples),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resumes from `get_state()`'s dict (the seed comes from the state); rejects a different dataset size
        or batch size, under which the saved position would mean other examples."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"data iterator state lacks {missing}; got keys {sorted(state)}")
        for k, have in (("num_examples", len(self.examples)), ("batch_size", self.batch_size)):
            if int(state[k]) != have:
                raise ValueError(f"data iterator state has {k}={state[k]}, but this run has {k}={have}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.steps_per_epoch:
            raise ValueError(f"data iterator state epoch={epoch}, position={position} is out of range")
        self.seed, self._epoch, self._position, self._order = int(state["seed"]), epoch, position, None


def eval_batches(
    examples: PromptSet,
    *,
    batch_size: int,
    max_prompt_len: int,
    max_response_len: int = 0,
    pad_id: int,
    prompt_bucket: str = "multiple",
    bucket_multiple: int = 64,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over every example (e.g. the held-out split) in fixed-size batches; the last batch is
    filled by repeating example 0 and `example_mask` [b] (1 = real) marks which rows count."""
    if batch_size <= 0 or batch_size % process_count:
        raise ValueError(
            f"batch_size={batch_size} is not a positive multiple of the process count {process_count}"
        )
    layout = _Layout(
        max_prompt_len, max_response_len, pad_id, prompt_bucket, bucket_multiple, process_index, process_count
    )
    n = len(examples)
    lengths = np.asarray([len(p) for p in examples.prompts], np.int64)
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        real = (idx < n).astype(np.int32)
        batch = _host_batch(examples, lengths, np.where(idx < n, idx, 0), layout)
        batch["example_mask"] = real[_process_rows(batch_size, layout)]
        yield batch
