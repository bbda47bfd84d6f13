"""Full-logit vs chunked TSD-KD loss: value+grad time and working memory.

    python benchmarks/loss_bench.py --tokens 2048 --vocab 151936 --hidden 1536 --chunk 256 --json out.json

Random student/teacher hidden states [B, T, D] and unembedding matrices [D, V] (fp32). Both paths take the
gradient w.r.t. the student's hidden states and unembedding matrix:
  full:    logits = h @ W for student and teacher, then tsdkd_loss on [B, T, V] logits;
  chunked: chunked_tsdkd_loss over token chunks of --chunk, never building [B, T, V].
Time: jit, one warm-up call excluded, median of --reps calls (block_until_ready).
  fused:   losses.fused (custom VJP: per chunk the value, the logits' gradient, dL/dh and dL/dW in the
           forward pass; nothing rematerialised in the backward). With the paper variant and rows of at most
           --chunk tokens (--tokens / --batch), no entropy pre-pass (losses/fused_rows.py): 4 vocabulary
           matmuls per chunk; fused_prepass: the same loss made to take the pre-pass (5);
  logits_full / logits_fused / torch: the loss alone given logits [B, T, V] (--logits-tokens, official
           variant), gradient w.r.t. the student logits: tsdkd_loss, the fused loss from logits, and the
           released PyTorch loss (DistillTrainer.generalized_jsd_loss of kmswin1/TSD-KD, imported from
           --torch-ref, a checkout outside this repository; --torch-path for trl 0.20.0).
Working memory: XLA's compiled memory_analysis().temp_size_in_bytes, i.e. the peak of the buffers the
program allocates besides its inputs and outputs (outputs = loss, aux and the gradients). Also reported:
peak RSS growth of the process while running (each path in its own subprocess, so the numbers are clean);
the RSS figure is approximate (allocator caching, the compile's own peak). --interleave runs both paths in
one process with alternating calls, for a fairer time ratio on a loaded machine (no RSS figure then).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

PATHS = ("full", "chunked", "fused", "fused_prepass", "logits_full", "logits_fused")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(args) -> dict:
    """Compile and time one path in this process."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from tsdkd_jax.losses import chunked_tsdkd_loss, fused, tsdkd_loss

    b = args.batch
    t = args.tokens // b
    rng = np.random.default_rng(0)
    dt = args.teacher_hidden or args.hidden
    vt = args.teacher_vocab or args.vocab
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    normal = lambda *shape: rng.standard_normal(size=shape, dtype=np.float32)
    hs = f32(normal(b, t, args.hidden))
    ht = f32(normal(b, t, dt))
    ws = f32(normal(args.hidden, args.vocab) * np.float32(2.0 / np.sqrt(args.hidden)))
    wt = f32(normal(dt, vt) * np.float32(2.0 / np.sqrt(dt)))
    lengths = rng.integers(t // 2, t + 1, size=b)
    mask = f32(np.arange(t)[None, :] < lengths[:, None])
    kw = {"variant": args.variant}

    # Teacher tensors and mask are arguments, not closed-over constants: XLA would constant-fold ht @ wt.
    def full(hs, ws, ht, wt, mask):
        z, u = hs @ ws, ht @ wt
        if vt > args.vocab:
            z = jnp.concatenate([z, jnp.full(z.shape[:-1] + (vt - args.vocab,), -jnp.inf, z.dtype)], -1)
        return tsdkd_loss(z, u, mask, **kw)

    def chunked(hs, ws, ht, wt, mask):
        return chunked_tsdkd_loss(
            hs, ht, mask,
            student_unembed=lambda h: h @ ws, teacher_unembed=lambda h: h @ wt, chunk_size=args.chunk, **kw,
        )  # fmt: skip

    def fused_path(hs, ws, ht, wt, mask, rows=lambda w, h, ids: jnp.einsum("nd,dnk->nk", h, w[:, ids])):
        return fused.fused_tsdkd_loss(
            hs, ht, mask, student_unembed=lambda w, h: h @ w, student_params=ws,
            teacher_unembed=lambda w, h: h @ w, teacher_params=wt, chunk_size=args.chunk,
            student_unembed_rows=rows, **kw,
        )  # fmt: skip

    # Given logits (the loss alone, gradient w.r.t. the student logits): today's tsdkd_loss vs the fused one.
    def logits_fused(z, u, mask):
        return fused.fused_tsdkd_loss_from_logits(z, u, mask, chunk_size=args.chunk, **kw)

    fns = {"full": full, "chunked": chunked, "fused": fused_path, "logits_full": lambda z, u, m: tsdkd_loss(z, u, m, **kw),
           "logits_fused": logits_fused,
           "fused_prepass": lambda *a: fused_path(*a, rows=None)}  # fmt: skip
    paths = tuple(args.only.split("+"))  # several: measured in this process, calls alternating
    given = None
    if any(p.startswith("logits") for p in paths):  # logits as inputs, built outside the timed program
        # one vocabulary, as the released loss takes it: a larger teacher vocab is cut to --vocab here
        given = (
            jax.jit(lambda a, b: a @ b)(hs, ws),
            jax.jit(lambda a, b: (a @ b)[..., : args.vocab])(ht, wt),
            mask,
        )
        del hs, ht, ws, wt
    compiled, compile_s, mem, in_of = {}, {}, {}, {}
    for path in paths:
        argnums = (0,) if path.startswith("logits") else (0, 1)
        in_of[path] = given if path.startswith("logits") else (hs, ws, ht, wt, mask)
        fn = jax.jit(jax.value_and_grad(fns[path], argnums=argnums, has_aux=True))
        t0 = time.perf_counter()
        compiled[path] = fn.lower(*in_of[path]).compile()
        compile_s[path] = time.perf_counter() - t0
        mem[path] = compiled[path].memory_analysis()
    rss0 = _rss_bytes()
    times, loss = {path: [] for path in paths}, {path: jnp.nan for path in paths}
    # With several paths, calls alternate (full, chunked, fused, full, ...) so that load drift hits all alike.
    for _ in range(0 if args.compile_only else args.reps + 1):
        for path in paths:
            t0 = time.perf_counter()
            (loss[path], _), grads = compiled[path](*in_of[path])
            jax.block_until_ready((loss[path], grads))
            times[path].append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return [
        {
            "path": path,
            "tokens": b * t,
            "vocab": args.vocab,
            "hidden": args.hidden,
            "chunk": args.chunk if path in ("chunked", "fused", "fused_prepass", "logits_fused") else None,
            "device": str(jax.devices()[0].device_kind),
            "loss": float(loss[path]),
            "compile_s": compile_s[path],
            "time_s": statistics.median(times[path][1:]) if len(times[path]) > 1 else float("nan"),
            "warmup_s": times[path][0] if times[path] else float("nan"),
            "times_s": times[path][1:],
            "temp_bytes": int(mem[path].temp_size_in_bytes),
            "argument_bytes": int(mem[path].argument_size_in_bytes),
            "output_bytes": int(mem[path].output_size_in_bytes),
            # Only meaningful when each path runs in its own process (not with --interleave).
            "rss_delta_bytes": max(0, peak - rss0) if len(paths) == 1 else 0,
        }
        for path in paths
    ]


def _measure_torch(args) -> list[dict]:
    """The released PyTorch loss (DistillTrainer.generalized_jsd_loss, kmswin1/TSD-KD) given logits: value
    and backward, imported from --torch-ref (a checkout outside this repository; --torch-path adds its
    dependencies, e.g. trl 0.20.0, to sys.path)."""
    sys.path[:0] = [p for p in (args.torch_ref, *args.torch_path.split(":")) if p]
    import numpy as np
    import torch
    from DistillTrainer import DistillTrainer

    b, t = args.batch, args.tokens // args.batch
    rng = np.random.default_rng(0)
    normal = lambda *shape: rng.standard_normal(size=shape, dtype=np.float32)
    hs, ht = normal(b, t, args.hidden), normal(b, t, args.hidden)  # the same draws as _measure
    ws = normal(args.hidden, args.vocab) * np.float32(2.0 / np.sqrt(args.hidden))
    wt = normal(args.hidden, args.vocab) * np.float32(2.0 / np.sqrt(args.hidden))
    lengths = rng.integers(t // 2, t + 1, size=b)
    z0, u = torch.from_numpy(hs @ ws), torch.from_numpy(ht @ wt)
    labels = torch.where(torch.from_numpy(np.arange(t)[None, :] < lengths[:, None]), 1, -100)
    del hs, ht, ws, wt
    rss0, times, loss = _rss_bytes(), [], float("nan")
    for _ in range(args.reps + 1):
        z = z0.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = DistillTrainer.generalized_jsd_loss(
            z, u, labels, beta=0.9, token_entropy_percentile_threshold=0.1
        )
        out.backward()
        times.append(time.perf_counter() - t0)
        loss = float(out.detach())
        del z, out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {"path": "torch", "tokens": b * t, "vocab": args.vocab, "hidden": args.hidden, "chunk": None,
           "device": "cpu", "loss": loss, "compile_s": 0.0, "time_s": statistics.median(times[1:]),
           "warmup_s": times[0], "times_s": times[1:], "temp_bytes": 0, "argument_bytes": 0, "output_bytes": 0,
           "rss_delta_bytes": max(0, peak - rss0), "torch_threads": torch.get_num_threads()}  # fmt: skip
    return [row]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=151_936)
    p.add_argument("--teacher-vocab", type=int, default=0, help="default: --vocab (larger: −inf padding)")
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--teacher-hidden", type=int, default=0, help="default: --hidden")
    p.add_argument("--chunk", type=int, default=256)
    p.add_argument(
        "--logits-tokens", type=int, default=0, help="N of the given-logits paths (default: --tokens)"
    )
    p.add_argument(
        "--torch-ref", default="", help="directory holding the released DistillTrainer.py (path torch)"
    )
    p.add_argument("--torch-path", default="", help="':'-separated dirs for its imports (trl)")
    p.add_argument("--batch", type=int, default=4, help="sequences; tokens are split evenly over them")
    p.add_argument("--variant", default="paper", choices=("paper", "official"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--paths", default="full,chunked", help=f"comma list of: {', '.join(PATHS)}, torch")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="the hidden-state paths in one process and the given-logits paths in another, calls alternating "
        "(fairer time ratios on a loaded machine; no RSS figure)",
    )
    p.add_argument("--compile-only", action="store_true", help="memory analysis only, no timing")
    p.add_argument("--json", default="")
    p.add_argument("--only", default="", help=argparse.SUPPRESS)  # internal: measure one path, print JSON
    args = p.parse_args(argv)
    if args.tokens % args.batch:
        p.error("--tokens must be divisible by --batch")
    if args.only:
        rows = _measure_torch(args) if args.only == "torch" else _measure(args)
        print("RESULT " + json.dumps(rows), flush=True)
        return

    rows = []
    for path in _groups(args.paths.split(","), args.interleave):
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--only", path]
        if path.startswith("logits") or path == "torch":  # given logits: own N, the released code's variant
            cmd += ["--tokens", str(args.logits_tokens or args.tokens), "--variant", "official"]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            rows.append({"path": path, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"})
        else:
            rows.extend(json.loads(lines[-1][len("RESULT ") :]))
    _print_table(rows, args.interleave)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"args": vars(args) | {"only": None}, "load_avg": os.getloadavg(), "rows": rows}, f, indent=2
            )


def _groups(paths: list[str], interleave: bool) -> list[str]:
    """One subprocess per path, or (--interleave) one for the hidden-state paths and one for the given-logits
    paths (they take other inputs), written `a+b+c`; the torch path always runs alone."""
    unknown = [p for p in paths if p not in (*PATHS, "torch")]
    if unknown:
        raise SystemExit(f"--paths: unknown {unknown}; known: {', '.join(PATHS)}, torch")
    if not interleave:
        return paths
    hidden = [p for p in paths if p in PATHS and not p.startswith("logits")]
    given = [p for p in paths if p.startswith("logits")]
    return ["+".join(g) for g in (hidden, given) if g] + [p for p in paths if p == "torch"]


def _print_table(rows, interleaved: bool) -> None:
    gib = 2.0**30
    ok = {r["path"]: r for r in rows if "error" not in r}
    print(f"{'path':12} {'tokens':>7} {'vocab':>7} {'hidden':>6} {'chunk':>5} {'time_s':>8} {'compile_s':>9} "
          f"{'work_GiB':>8} {'rss_GiB':>7} {'loss':>10}")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['path']:12} ERROR {r['error']}")
            continue
        print(f"{r['path']:12} {r['tokens']:7d} {r['vocab']:7d} {r['hidden']:6d} {r['chunk'] or '-'!s:>5} "
              f"{r['time_s']:8.3f} {r['compile_s']:9.1f} {r['temp_bytes'] / gib:8.3f} "
              f"{r['rss_delta_bytes'] / gib:7.2f} {r['loss']:10.5f}")  # fmt: skip
    pairs = (("fused", "chunked"), ("fused", "full"), ("fused", "fused_prepass"), ("logits_fused", "logits_full"),
             ("logits_fused", "torch"), ("logits_full", "torch"))  # fmt: skip
    for new, old in pairs:
        if new in ok and old in ok:
            n, o = ok[new], ok[old]
            work = f"{n['temp_bytes'] / o['temp_bytes']:.1%}" if o["temp_bytes"] else "n/a"
            print(f"{new}/{old}: time {n['time_s'] / o['time_s']:.2f}x, working memory {work}, RSS growth "
                  f"{n['rss_delta_bytes'] / max(o['rss_delta_bytes'], 1):.1%}")  # fmt: skip
            if interleaved and len(n["times_s"]) == len(o["times_s"]) > 0:
                ratios = [a / b for a, b in zip(n["times_s"], o["times_s"], strict=True)]
                print(f"  per-call {new}/{old}: {', '.join(f'{r:.2f}' for r in ratios)}")
    if "full" in ok and "chunked" in ok:
        f, c = ok["full"], ok["chunked"]
        if interleaved and len(f["times_s"]) == len(c["times_s"]) > 0:
            pairs = [ct / ft for ft, ct in zip(f["times_s"], c["times_s"], strict=True)]
            print(f"per-call time ratios chunked/full: {', '.join(f'{r:.2f}' for r in pairs)}")
        print(f"chunked/full: time {c['time_s'] / f['time_s']:.2f}x, working memory "
              f"{c['temp_bytes'] / f['temp_bytes']:.1%}, RSS growth "
              f"{c['rss_delta_bytes'] / max(f['rss_delta_bytes'], 1):.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
