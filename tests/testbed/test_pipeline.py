"""The offline testbed end to end (configs/testbed.py:smoke): every stage runs, the table, JSON and plot are
written, a rerun skips the finished stages and reproduces the table, and a changed config is refused."""

import importlib.util
import json
import os

import pytest

from tsdkd_jax import testbed
from tsdkd_jax.testbed import stages
from tsdkd_jax.train import methods

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_config(arg=None):
    spec = importlib.util.spec_from_file_location("cfg_testbed", os.path.join(REPO, "configs", "testbed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_default_and_variants_load():
    c = load_config()
    assert list(c.testbed.methods) == ["tsdkd", "gkd", "seqkd", "sft"] and list(c.testbed.seeds) == [0]
    assert (c.base.loss.beta, c.base.loss.lam, c.base.sampling.temperature) == (0.9, 1.0, 1.0)
    assert not c.testbed.sweep.lrs and set(c.testbed.lr) >= {"tsdkd", "gkd", "seqkd", "sft"}
    study = load_config("study").testbed
    assert len(study.seeds) >= 5 and study.problems.n_heldout >= 1000
    assert list(study.sweep.lrs) == [3e-5, 1e-4, 3e-4] and set(study.sweep.methods) == set(c.testbed.methods)
    for ablation in ("tsdkd_gate_only", "tsdkd_gate_em", "tsdkd_gate_rank", "tsdkd_em_only", "tsdkd_k2"):
        assert ablation in study.methods and ablation in load_config("ablate").testbed.methods
    more = load_config("more,smoke")
    assert {"supervised_kd", "distillm", "minillm"} <= set(more.testbed.methods)
    for name in ("distillm", "minillm"):  # the added stages' losses accept the shared settings
        stage = stages.stage_config(more, **stages.stage_fields(more.testbed, name))
        assert methods.of(stage).check(stage.loss) is None and methods.loss_config(stage) is not None
    with pytest.raises(ValueError, match="unknown variant"):
        load_config("fulll")


def test_main_defaults_to_the_testbed():
    from tsdkd_jax import main

    assert main._TESTBED == os.path.join(REPO, "configs", "testbed.py")


def test_smoke_end_to_end_and_resume(tmp_path, capsys):
    config = load_config("smoke")
    workdir = str(tmp_path / "tb")
    results = testbed.run(config, workdir)
    keys = ["teacher", "seed0/student", "seed0/tsdkd", "seed0/gkd", "seed0/seqkd", "seed0/sft"]
    assert sorted(results) == sorted(keys)
    for key in keys:
        splits = (("validation", 16),) if key in ("teacher", "seed0/student") else ()  # stages: test splits
        for split, n in (*splits, ("heldout", 16), ("hard", 16)):
            m = results[key][split]
            assert m["n"] == n and 0.0 <= m["accuracy"] <= 1.0 and len(m["per_problem"]) == n
            assert m["correct"] == sum(m["per_problem"])
        assert os.path.isfile(os.path.join(results[key]["export"], "config.json"))
    with open(os.path.join(workdir, "results.md")) as f:
        md = f.read()
    for label in ("teacher (SFT)", "initial student", "student + tsdkd", "student + gkd", "student + sft"):
        assert label in md
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    for model in ("teacher", "initial_student", "tsdkd", "gkd", "seqkd", "sft"):
        assert set(saved["summary"][model]["heldout"]) == {"mean", "ci_low", "ci_high"}
    for method in ("tsdkd", "seqkd", "sft"):
        assert set(saved["summary"][method]) >= {"vs_initial", "vs_gkd"}
    assert saved["summary"]["verdict"]["verdict"] and saved["machine"]["jax"] and saved["machine"]["cpu"]
    assert os.path.getsize(os.path.join(workdir, "results.png")) > 0
    with open(os.path.join(workdir, "seed0", "tsdkd", "metrics.jsonl")) as f:
        rows = [json.loads(x) for x in f]
    assert [r["step"] for r in rows if "eval/validation_accuracy" in r] == [0, 3]
    assert any("loss/direct" in r for r in rows)
    diagnostics = {"answers/distinct", "answers/with_answer", "grad_norm/direct", "grad_norm/em", "clip_frac"}
    assert all(diagnostics <= set(r) for r in rows if "loss" in r)
    assert os.path.getsize(os.path.join(workdir, "seed0", "tsdkd", "selections.html")) > 0
    assert os.path.getsize(os.path.join(workdir, "seed0", "tsdkd", "selections.png")) > 0
    first = capsys.readouterr().out
    assert "| student + seqkd |" in first

    again = testbed.run(config, workdir)  # every stage done: skipped, evaluations read back
    out = capsys.readouterr().out
    assert out.count("skipped") == len(keys)
    assert {k: again[k]["heldout"] for k in keys} == {k: results[k]["heldout"] for k in keys}

    # `:ablate` in the same workdir: the finished stages are reused, only the ablations train, each with
    # exactly its terms switched off.
    ablations = [
        f"seed0/tsdkd_{a}" for a in ("gate_only", "gate_em", "gate_rank", "em_only", "em_w0p1", "k2")
    ]
    assert sorted(testbed.run(load_config("smoke,ablate"), workdir)) == sorted(keys + ablations)
    assert capsys.readouterr().out.count("skipped") == len(keys)
    logged = {}
    for key in ["seed0/tsdkd", *ablations[:4]]:
        with open(os.path.join(workdir, key, "metrics.jsonl")) as f:
            logged[key] = {name for row in map(json.loads, f) for name in row if name.startswith("loss/")}
    assert logged == {
        "seed0/tsdkd": {"loss/direct", "loss/em", "loss/indirect"},
        "seed0/tsdkd_gate_rank": {"loss/direct", "loss/indirect"},
        "seed0/tsdkd_gate_em": {"loss/direct", "loss/em"},
        "seed0/tsdkd_gate_only": {"loss/direct"},
        "seed0/tsdkd_em_only": {"loss/direct", "loss/em"},  # direct logged as a statistic, not trained on
    }

    with open(os.path.join(workdir, "seed0/tsdkd_em_only", "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if "loss" in r]
    assert rows and all(r["loss"] == pytest.approx(r["loss/em"], rel=1e-6) for r in rows)  # EM alone

    config.testbed.teacher.sft_steps += 1  # a finished stage of another config is not silently reused
    with pytest.raises(ValueError, match="different config"):
        testbed.run(config, workdir)


def test_smoke_study_sweep_selects_on_validation_and_reuses_runs(tmp_path):
    """`:smoke,study` with two methods: the lr grid runs on seed 0, each method keeps its best validation lr,
    seed 0 reports the chosen sweep run itself, seed 1 trains at the chosen lr, and the summary pairs seeds."""
    config = load_config("smoke,study")
    tb = config.testbed
    tb.methods = tb.sweep.methods = ("tsdkd", "gkd")
    workdir = str(tmp_path / "study")
    results = testbed.run(config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    for method in ("tsdkd", "gkd"):
        table = saved["sweep"][method]
        accs = {}
        for lr in tb.sweep.lrs:
            with open(os.path.join(workdir, "sweep", method, f"lr{lr:g}", "eval.json")) as f:
                accs[f"{lr:g}"] = json.load(f)["validation"]["accuracy"]
        assert table == accs
        best = max(accs.values())
        chosen = next(float(k) for k, v in accs.items() if v == best)
        assert saved["lrs"][method] == chosen
        assert results[f"seed0/{method}"]["export"] == os.path.join(
            workdir, "sweep", method, f"lr{chosen:g}", "export"
        )
        with open(os.path.join(workdir, "seed1", method, "stage.json")) as f:
            assert json.load(f)["config"]["optim"]["lr"] == chosen
    n = len(results["seed0/tsdkd"]["heldout"]["per_problem"])
    pooled = [results[f"seed{s}/tsdkd"]["heldout"]["per_problem"] for s in (0, 1)]
    assert saved["summary"]["tsdkd"]["heldout"]["mean"] == pytest.approx(sum(map(sum, pooled)) / (2 * n))
