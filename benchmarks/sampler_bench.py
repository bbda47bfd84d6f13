"""Sampler speed: ours vs transformers' PyTorch `generate` on CPU, and decode roofline on a GPU.

CPU (default): one random Qwen2-shaped model (V=4096, D=256, 4 layers), saved by transformers and loaded by
us, so both run the same weights; batch 8, 16-token prompts, 64 new tokens, greedy and sampled; warm-up then
the median of --reps runs of the whole `generate` call (prefill included), in one process:

    JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache python benchmarks/sampler_bench.py --json out.json

GPU (--gpu): a random Qwen2.5-1.5B-shaped model in bf16; decode tokens/s per batch size and the fraction of
the HBM roofline, (param bytes + KV-cache bytes read per step) / step time / peak bandwidth, with the step
time from (t(N new tokens) - t(1 new token)) / (N - 1). `--shape tiny` runs the same path small (CPU check):

    python benchmarks/sampler_bench.py --gpu --json gpu.json
    python benchmarks/sampler_bench.py --gpu --shape tiny --batch-sizes 1,2 --new-tokens 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import jax
import numpy as np
from flax import nnx

from tsdkd_jax import models, sampling

CPU_SHAPE = {
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
}
GPU_SHAPES = {  # ModelConfig fields
    "qwen2.5-1.5b": {
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_layers": 28,
        "num_heads": 12,
        "num_kv_heads": 2,
        "head_dim": 128,
        "qkv_bias": True,
        "tie_embeddings": True,
        "rope_theta": 1e6,
        "model_type": "qwen2",
    },
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_layers": 2,
        "num_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 16,
        "qkv_bias": True,
        "tie_embeddings": True,
        "model_type": "qwen2",
    },
}
PEAK_HBM = {"H200": 4.8e12, "H100": 3.35e12}  # bytes/s, SXM parts
SAMPLED = {"temperature": 1.0, "top_k": 50, "top_p": 0.95}


def _median_time(fn, reps: int) -> float:
    fn()  # warm-up (compiles ours)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_bench(args) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(transformers.Qwen2Config(**CPU_SHAPE)).eval()
    hf.generation_config.eos_token_id = None  # every row generates exactly N tokens
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = models.from_pretrained(tmp)
    B, T, N = args.batch, args.prompt_len, args.new_tokens
    ids = np.random.default_rng(0).integers(1, CPU_SHAPE["vocab_size"], (B, T)).astype(np.int32)
    mask = np.ones_like(ids)
    ids_t, mask_t = torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)
    rows, outputs = [], {}
    for mode, knobs in (("greedy", {"temperature": 0.0}), ("sampled", SAMPLED)):

        def run_hf(knobs=knobs, mode=mode):
            sample = dict(do_sample=True, **knobs) if knobs["temperature"] > 0 else {"do_sample": False}
            with torch.inference_mode():
                outputs["hf", mode] = hf.generate(
                    ids_t, attention_mask=mask_t, max_new_tokens=N, min_new_tokens=N, pad_token_id=0, **sample
                )

        def run_ours(knobs=knobs, mode=mode):
            out = sampling.generate(
                ours, ids, mask, max_new_tokens=N, rng=sampling.sample_key(0, 0, 0), **knobs
            )
            outputs["ours", mode] = jax.block_until_ready(out)

        for impl, fn in (("transformers", run_hf), ("ours", run_ours)):
            t = _median_time(fn, args.reps)
            rows.append({"impl": impl, "mode": mode, "median_s": t, "tokens_per_s": B * N / t})
    greedy_match = float(
        np.mean(np.asarray(outputs["ours", "greedy"].tokens) == outputs["hf", "greedy"][:, T:].numpy())
    )
    speedup = {
        mode: next(r["tokens_per_s"] for r in rows if r["impl"] == "ours" and r["mode"] == mode)
        / next(r["tokens_per_s"] for r in rows if r["impl"] == "transformers" and r["mode"] == mode)
        for mode in ("greedy", "sampled")
    }
    print(f"CPU, {jax.devices()[0].device_kind}, torch threads {torch.get_num_threads()}; B={B} T={T} N={N}")
    print(f"{'impl':<14}{'mode':<10}{'median s':>10}{'tokens/s':>12}")
    for r in rows:
        print(f"{r['impl']:<14}{r['mode']:<10}{r['median_s']:>10.4f}{r['tokens_per_s']:>12.1f}")
    print("speedup ours/transformers: " + ", ".join(f"{m} {s:.1f}x" for m, s in speedup.items()))
    print(f"greedy tokens equal to transformers': {greedy_match:.3f}")
    shape = dict(CPU_SHAPE, batch=B, prompt_len=T, new_tokens=N, reps=args.reps, sampled=SAMPLED)
    return {"mode": "cpu", "shape": shape, "results": rows, "speedup": speedup, "greedy_match": greedy_match}


def _peak_bandwidth(device) -> float | None:
    kind = device.device_kind
    if "PCIe" in kind or "NVL" in kind:
        return None  # other memory systems; no claim
    return next((bw for name, bw in PEAK_HBM.items() if name in kind), None)


def gpu_bench(args) -> dict:
    import jax.numpy as jnp

    config = models.ModelConfig(**GPU_SHAPES[args.shape])
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    model = nnx.jit(lambda: models.Decoder(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype))()
    state = nnx.state(model)
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    device = jax.devices()[0]
    peak = _peak_bandwidth(device)
    T, N = args.prompt_len, args.new_tokens
    c, itemsize = config, jnp.dtype(dtype).itemsize
    rows = []
    for B in args.batch_sizes:
        ids = np.random.default_rng(0).integers(1, c.vocab_size, (B, T)).astype(np.int32)
        mask = np.ones_like(ids)

        def run(n, ids=ids, mask=mask):
            out = sampling.generate(model, ids, mask, max_new_tokens=n, temperature=0.0)
            return int(jax.block_until_ready(out.num_steps))

        t_full = _median_time(lambda: run(N), args.reps)
        t_prefill = _median_time(lambda: run(1), args.reps)
        step_s = max(t_full - t_prefill, 1e-9) / (N - 1)
        S = T + N - 1  # the decode reads every cache slot each step
        kv_bytes = 2 * c.num_layers * B * S * c.num_kv_heads * c.head_dim * itemsize
        row = {
            "batch": B,
            "step_ms": 1e3 * step_s,
            "decode_tokens_per_s": B / step_s,
            "generate_s": t_full,
            "bytes_per_step": param_bytes + kv_bytes,
            "achieved_GBps": (param_bytes + kv_bytes) / step_s / 1e9,
            "roofline_frac": None if peak is None else (param_bytes + kv_bytes) / step_s / peak,
        }
        rows.append(row)
    print(f"{device.device_kind} (peak {peak and peak / 1e12} TB/s), shape {args.shape} {args.dtype}")
    print(f"params {param_bytes / 1e9:.3f} GB; prompt {T}, {N} new tokens, greedy")
    print(f"{'batch':>6}{'step ms':>10}{'tok/s':>10}{'GB/s':>9}{'roofline':>10}")
    for r in rows:
        frac = "-" if r["roofline_frac"] is None else f"{100 * r['roofline_frac']:.1f}%"
        print(
            f"{r['batch']:>6}{r['step_ms']:>10.3f}{r['decode_tokens_per_s']:>10.1f}"
            f"{r['achieved_GBps']:>9.1f}{frac:>10}"
        )
    meta = {"device": device.device_kind, "peak_Bps": peak, "param_bytes": param_bytes, "shape": args.shape}
    return {"mode": "gpu", **meta, "prompt_len": T, "new_tokens": N, "results": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="decode roofline mode")
    parser.add_argument("--shape", default="qwen2.5-1.5b", choices=sorted(GPU_SHAPES), help="--gpu model")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="--gpu dtype")
    parser.add_argument("--batch-sizes", default="1,4,16,64", help="--gpu batch sizes, comma separated")
    parser.add_argument("--batch", type=int, default=8, help="CPU batch")
    parser.add_argument("--prompt-len", type=int, default=None, help="default 16 (CPU), 128 (--gpu)")
    parser.add_argument("--new-tokens", type=int, default=None, help="default 64 (CPU), 256 (--gpu)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.prompt_len = args.prompt_len or (128 if args.gpu else 16)
    args.new_tokens = args.new_tokens or (256 if args.gpu else 64)
    result = gpu_bench(args) if args.gpu else cpu_bench(args)
    result["jax"] = jax.__version__
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
