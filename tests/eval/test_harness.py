"""lm-eval bridge, offline: local generate-until and multiple-choice tasks give the native scorers' accuracy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from lm_eval_tasks import write_jsonl, write_mc_task

from tsdkd_jax import data, models
from tsdkd_jax.eval import Verdict, evaluate, evaluate_choices, make_splits
from tsdkd_jax.eval.answers import gsm8k_flexible
from tsdkd_jax.eval.harness import TsdkdLM

GEN_YAML = """task: tiny_numeric
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{gold}}}}"
generation_kwargs:
  until: ["\\n\\n", "Question:"]
  do_sample: false
  max_gen_toks: 24
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
filter_list:
  - name: flexible-extract
    filter:
      - function: regex
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: take_first
  - name: whole
    filter:
      - function: take_first
metadata:
  version: 1.0
"""

STOP = ("\n\n", "Question:")


@pytest.fixture(scope="module")
def bridge_run(tiny_folder, tmp_path_factory):
    """Native outputs first; golds built from them (half right, half wrong); then the same data via lm-eval."""
    tmp = tmp_path_factory.mktemp("lm_eval_tasks")
    tok, model = data.load_tokenizer(tiny_folder), models.from_pretrained(tiny_folder)
    eos = data.eos_token_ids(tiny_folder, tok)
    problems = make_splits(5, 1, 10, 1)["heldout"]
    gen_kw = {
        "batch_size": 4,
        "max_new_tokens": 24,
        "eos_token_ids": eos,
        "pad_token_id": tok.pad_token_id,
        "chat": False,
    }
    _, first = evaluate(model, problems, tok, scorer=lambda o, e: Verdict(o, False), stop=STOP, **gen_kw)
    outputs = [r["output"] for r in first]
    # even rows: the gold is the number the flexible extractor reads (right), odd rows: a wrong number
    numeric = [
        {"prompt": p["prompt"], "gold": (gsm8k_flexible(o) or "777") if i % 2 == 0 else "98765"}
        for i, (p, o) in enumerate(zip(problems, outputs))
    ]
    choice = [
        {"prompt": p["prompt"], "choices": ["12", "7", "30", "4"][: 2 + i % 3], "gold": i % 2}
        for i, p in enumerate(problems)
    ]
    write_jsonl(tmp / "numeric.jsonl", numeric)
    (tmp / "numeric.yaml").write_text(GEN_YAML.format(data=tmp / "numeric.jsonl"))
    write_mc_task(tmp, "tiny_choice", choice)
    res = lm_eval.simple_evaluate(
        model="tsdkd_jax",
        model_args=f"path={tiny_folder},max_gen_toks=24",
        tasks=["tiny_numeric", "tiny_choice"],
        task_manager=TaskManager(include_path=str(tmp)),
        batch_size=4,
        log_samples=True,
    )
    native_num, _ = evaluate(model, numeric, tok, scorer="gsm8k_flexible", stop=STOP, **gen_kw)
    native_mc, mc_rows = evaluate_choices(model, choice, tok, pad_token_id=tok.pad_token_id, batch_size=4)
    return {
        "res": res,
        "outputs": outputs,
        "numeric": numeric,
        "native_num": native_num,
        "native_mc": native_mc,
        "mc_rows": mc_rows,
        "tmp": tmp,
    }


def test_generate_until_same_generations(bridge_run):
    samples = sorted(bridge_run["res"]["samples"]["tiny_numeric"], key=lambda s: s["doc_id"])
    resps = [s["resps"][0][0] for s in samples if s["filter"] == "whole"]
    assert resps == bridge_run["outputs"]
    assert any(o.strip() for o in resps)


def test_generate_until_accuracy_equals_native(bridge_run):
    r = bridge_run["res"]["results"]["tiny_numeric"]
    native = bridge_run["native_num"]["accuracy"]
    assert 0.0 < native < 1.0  # the comparison is informative: some right, some wrong
    assert r["exact_match,flexible-extract"] == pytest.approx(native)


def test_multiple_choice_accuracy_equals_native(bridge_run):
    r = bridge_run["res"]["results"]["tiny_choice"]
    native = bridge_run["native_mc"]
    assert r["acc,none"] == pytest.approx(native["accuracy"])
    samples = sorted(bridge_run["res"]["samples"]["tiny_choice"], key=lambda s: s["doc_id"])
    for s, row in zip(samples, bridge_run["mc_rows"]):
        got = [float(x[0]) for x in s["filtered_resps"]]
        assert got == pytest.approx(row["loglikelihoods"], rel=1e-5, abs=1e-4)


def test_loglikelihood_rolling_matches_torch(tiny_folder):
    ref = transformers.AutoModelForCausalLM.from_pretrained(tiny_folder, attn_implementation="eager").eval()
    text = "Mia has 7 apples. Mia buys 5 more. How many apples does Mia have now?"
    for max_length in (512, 8):  # one window, then several disjoint windows
        lm = TsdkdLM(path=tiny_folder, max_length=max_length, batch_size=2)
        ids = lm.tok_encode(text, add_special_tokens=False)
        got = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])[0]
        want = 0.0
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        for ctx, cont in map(
            make_disjoint_window, get_rolling_token_windows(ids, lm.eot_token_id, max_length, 1)
        ):
            seq = torch.tensor([(ctx + cont)[-(max_length + 1) :]])
            with torch.no_grad():
                logp = torch.log_softmax(ref(input_ids=seq).logits.double(), -1)[0]
            n = seq.shape[1] - len(cont)
            want += sum(float(logp[n - 1 + j, t]) for j, t in enumerate(cont))
        assert got == pytest.approx(want, rel=1e-4)
    # with one window, rolling = loglikelihood of the text after the prefix token
    lm = TsdkdLM(path=tiny_folder)
    ll = lm.loglikelihood([Instance("loglikelihood", {}, ("", text), 0)])[0][0]
    assert lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])[0] == pytest.approx(
        ll, rel=1e-5
    )


@pytest.mark.slow
def test_command_line(bridge_run, tiny_folder, tmp_path):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable, "-m", "tsdkd_jax.eval.harness", "run", "--model", "tsdkd_jax",
        "--model_args", f"path={tiny_folder},max_gen_toks=24", "--tasks", "tiny_numeric",
        "--include_path", str(bridge_run["tmp"]), "--batch_size", "4", "--output_path", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs if f.startswith("results")]
    acc = json.loads(Path(results[0]).read_text())["results"]["tiny_numeric"]["exact_match,flexible-extract"]
    assert acc == pytest.approx(bridge_run["native_num"]["accuracy"])
