"""Random-weight shapes for benchmarks/train_bench.py: no model files, tokenizer or data set needed.

    PYTHONPATH=. python benchmarks/train_bench.py --config=configs/bench_gpu.py --steps 3 --json train.json
    PYTHONPATH=. python benchmarks/train_bench.py --config=configs/bench_gpu.py:tiny --steps 2   # CPU check

Default: a Qwen2.5-1.5B-shaped student (fp32 master, bf16 compute, remat) and a Qwen2.5-7B-shaped teacher
(bf16), the paper's TSD-KD loss, batch 8 × (128 random prompt tokens + 256 sampled tokens, no EOS so every
row runs full length), one H100 or H200. Expected on one H100 (not yet measured): ~40 GB of weights and
optimizer state, a few seconds per step, sampling the largest part. `:tiny` runs the same code path with
two-layer models on CPU in about a minute (the tests and benchmarks/gpu_suite.sh --shape tiny use it).
Other variants of configs/common.py apply too (`:gkd`, `:official`, `:tiny,gkd`, field=value).
"""

import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable
from configs import common

SHAPES = {  # ModelConfig fields (tsdkd_jax.models.ModelConfig)
    "qwen2.5-1.5b": {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_layers": 28,
                     "num_heads": 12, "num_kv_heads": 2, "head_dim": 128, "qkv_bias": True,
                     "tie_embeddings": True, "rope_theta": 1e6, "model_type": "qwen2"},
    "qwen2.5-7b": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_layers": 28,
                   "num_heads": 28, "num_kv_heads": 4, "head_dim": 128, "qkv_bias": True,
                   "tie_embeddings": False, "rope_theta": 1e6, "model_type": "qwen2"},
    "tiny-student": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_layers": 2,
                     "num_heads": 4, "num_kv_heads": 2, "head_dim": 16, "qkv_bias": True,
                     "tie_embeddings": True, "model_type": "qwen2"},
    "tiny-teacher": {"vocab_size": 544, "hidden_size": 96, "intermediate_size": 192, "num_layers": 2,
                     "num_heads": 4, "num_kv_heads": 2, "head_dim": 24, "qkv_bias": True,
                     "tie_embeddings": False, "model_type": "qwen2"},
}  # fmt: skip

TINY = {
    "bench.student": "tiny-student",
    "bench.teacher": "tiny-teacher",
    "bench.prompt_len": 16,
    "sampling.max_new_tokens": 16,
    "data.max_response_len": 16,
    "student.compute_dtype": "float32",  # CPU: bf16 matmuls are emulated and slow
    "student.remat": False,
    "teacher.dtype": "float32",
    "loss.chunk_size": 64,
}


def get_config(arg=None):
    c = common.paper_config(
        teacher="random/qwen2.5-7b", student="random/qwen2.5-1.5b", lr=5e-6, mesh=(-1, 1, 1)
    )
    c.bench = ml_collections.ConfigDict()
    c.bench.student = "qwen2.5-1.5b"  # a SHAPES key: random weights of this shape
    c.bench.teacher = "qwen2.5-7b"
    c.bench.prompt_len = 128  # random prompt tokens per row (no padding)
    c.bench.seed = 0
    c.data.path = "random"  # unused: train_bench draws random prompt tokens
    c.data.batch_size = 8
    c.data.max_response_len = 256
    c.sampling.max_new_tokens = 256
    c.eval_every = 0
    c.checkpoint.export = False
    return common.apply_variants(c, arg, "configs/bench_gpu.py", {"tiny": TINY})
