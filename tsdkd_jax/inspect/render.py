"""The per-token view as self-contained HTML (hover a token for its numbers) and as a matplotlib PNG."""

from __future__ import annotations

import html

import numpy as np

LEGEND = (
    "Background: the entropy gate σ((H_S − H_T)/τ) (white 0 → red 1). <u>Underlined</u>: opener (the ranking "
    "term's positions). <b>Boxed bold</b>: EM set (the entropy-minimisation term's tokens). Hover a token for "
    "H_S, H_T (nats), gate, the teacher's rank of the sampled token (1 = its top choice) and the teacher's "
    "mass on the student's top-k."
)
CSS = """
body { font-family: sans-serif; max-width: 70em; margin: 1em auto; }
.resp { font-family: monospace; white-space: pre-wrap; line-height: 1.9; border: 1px solid #ccc; padding: .5em; }
.tok.op { border-bottom: 3px solid #1f77b4; }
.tok.em { outline: 1px solid #000; font-weight: bold; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
"""


def _token(row, j: int) -> str:
    g = row["gate"][j]
    classes = "tok" + (" op" if row["opener"][j] else "") + (" em" if row["em_set"][j] else "")
    title = (
        f"H_S {row['h_s'][j]:.3f}  H_T {row['h_t'][j]:.3f}  gate {g:.3f}  teacher rank {row['teacher_rank'][j]}"
        f"  teacher mass on student top-k {row['teacher_topk_mass'][j]:.3f}"
    )
    return (
        f'<span class="{classes}" style="background: rgba(214,39,40,{g:.3f})" title="{html.escape(title)}" '
        f'data-gate="{g:.6f}" data-opener="{int(row["opener"][j])}" data-em="{int(row["em_set"][j])}">'
        f"{html.escape(row['tokens'][j])}</span>"
    )


def _stat(row, key: str, fn) -> float:
    return float(fn(row[key])) if len(row[key]) else float("nan")


def _summary(rows) -> str:
    head = "<tr><th>#</th><th>tokens</th><th>opener</th><th>EM set</th><th>mean gate</th><th>mean H_S</th>"
    head += "<th>mean H_T</th><th>median teacher rank</th><th>mean teacher mass on top-k</th></tr>"
    body = []
    for i, r in enumerate(rows):
        means = [_stat(r, k, np.mean) for k in ("gate", "h_s", "h_t")]
        cells = [len(r["tokens"]), int(sum(r["opener"])), int(sum(r["em_set"]))]
        cells += [f"{v:.3f}" for v in means]
        cells += [f"{_stat(r, 'teacher_rank', np.median):g}", f"{_stat(r, 'teacher_topk_mass', np.mean):.3f}"]
        body.append(f"<tr><td>{i}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def to_html(view: dict, title: str) -> str:
    """The page of `tokens.collect`'s output."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h2>{html.escape(title)}</h2><p>{LEGEND}</p>",
             _summary(view["rows"])]  # fmt: skip
    for i, row in enumerate(view["rows"]):
        toks = "".join(_token(row, j) for j in range(len(row["tokens"])))
        parts.append(f"<h4>#{i}: {html.escape(row['prompt'])}</h4><div class='resp'>{toks}</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def to_png(view: dict, path: str, title: str) -> None:
    """Gate per response token (one row per response), opener positions dotted, EM set crossed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = view["rows"]
    width = max([len(r["tokens"]) for r in rows] + [1])
    gate = np.full((max(len(rows), 1), width), np.nan)
    for i, r in enumerate(rows):
        gate[i, : len(r["gate"])] = r["gate"]
    fig, ax = plt.subplots(figsize=(min(2 + 0.12 * width, 24), 1.2 + 0.5 * len(rows)))
    im = ax.imshow(gate, aspect="auto", cmap="Reds", vmin=0.0, vmax=1.0, interpolation="nearest")
    for key, marker, label in (("opener", "o", "opener"), ("em_set", "x", "EM set")):
        pts = [(j, i) for i, r in enumerate(rows) for j, v in enumerate(r[key]) if v]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, s=14, c="#1f77b4", label=label)
    ax.set_yticks(range(len(rows)))
    ax.set_xlabel("response token")
    ax.set_ylabel("response")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="gate")
    if any(any(r["opener"]) or any(r["em_set"]) for r in rows):
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
