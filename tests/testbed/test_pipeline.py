"""The offline testbed end to end (configs/testbed.py:smoke): every stage runs, the table, JSON and plot are
written, a rerun skips the finished stages and reproduces the table, and a changed config is refused."""

import importlib.util
import json
import os

import pytest

from tsdkd_jax import testbed

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_config(arg=None):
    spec = importlib.util.spec_from_file_location("cfg_testbed", os.path.join(REPO, "configs", "testbed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_default_and_variants_load():
    c = load_config()
    assert list(c.testbed.methods) == ["tsdkd", "gkd", "seqkd"] and list(c.testbed.seeds) == [0]
    assert (c.base.loss.beta, c.base.loss.lam, c.base.sampling.temperature) == (0.9, 1.0, 1.0)
    assert list(load_config("full").testbed.seeds) == [0, 1, 2]
    assert "distillm" in load_config("more,smoke").testbed.methods
    assert "tsdkd_gate_only" in load_config("ablate").testbed.methods


def test_main_defaults_to_the_testbed():
    from tsdkd_jax import main

    assert main._TESTBED == os.path.join(REPO, "configs", "testbed.py")


def test_smoke_end_to_end_and_resume(tmp_path, capsys):
    config = load_config("smoke")
    workdir = str(tmp_path / "tb")
    results = testbed.run(config, workdir)
    keys = ["teacher", "seed0/student", "seed0/tsdkd", "seed0/gkd", "seed0/seqkd"]
    assert sorted(results) == sorted(keys)
    for key in keys:
        for split in ("heldout", "hard"):
            m = results[key][split]
            assert m["n"] == 16 and 0.0 <= m["accuracy"] <= 1.0
        assert os.path.isfile(os.path.join(results[key]["export"], "config.json"))
    with open(os.path.join(workdir, "results.md")) as f:
        md = f.read()
    for label in ("teacher (SFT)", "initial student", "student + tsdkd", "student + gkd", "student + seqkd"):
        assert label in md
    assert os.path.getsize(os.path.join(workdir, "results.png")) > 0
    with open(os.path.join(workdir, "seed0", "tsdkd", "metrics.jsonl")) as f:
        rows = [json.loads(x) for x in f]
    assert [r["step"] for r in rows if "eval/heldout_accuracy" in r] == [0, 3]
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
    ablations = ["seed0/tsdkd_gate_only", "seed0/tsdkd_no_em", "seed0/tsdkd_no_indirect"]
    assert sorted(testbed.run(load_config("smoke,ablate"), workdir)) == sorted(keys + ablations)
    assert capsys.readouterr().out.count("skipped") == len(keys)
    logged = {}
    for key in ["seed0/tsdkd", *ablations]:
        with open(os.path.join(workdir, key, "metrics.jsonl")) as f:
            logged[key] = {name for row in map(json.loads, f) for name in row if name.startswith("loss/")}
    assert logged == {
        "seed0/tsdkd": {"loss/direct", "loss/em", "loss/indirect"},
        "seed0/tsdkd_no_em": {"loss/direct", "loss/indirect"},
        "seed0/tsdkd_no_indirect": {"loss/direct", "loss/em"},
        "seed0/tsdkd_gate_only": {"loss/direct"},
    }

    config.testbed.teacher.sft_steps += 1  # a finished stage of another config is not silently reused
    with pytest.raises(ValueError, match="different config"):
        testbed.run(config, workdir)
