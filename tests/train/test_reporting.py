"""W&B (offline, no network) and benchmark accuracy during training, on one tiny run that crashes after its
step-2 checkpoint and is resumed: the W&B files hold the metrics.jsonl rows, the resumed run keeps the W&B id,
and the eval/<benchmark>/* rows are logged at the held-out KL's steps with the accuracy the golds imply."""

import json

import pytest
import wandb_records
from bench_files import gsm8k_file
from run_files import read_metrics
from scipy.stats import binomtest

from tsdkd_jax.train import Trainer, validate


class Crash(RuntimeError):
    pass


def _crash_at(step):
    def hook(s, params):
        if s == step:
            raise Crash(f"simulated crash at step {s}")

    return hook


@pytest.fixture(scope="module")
def crashed_and_resumed(tiny_config, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reporting")
    c0 = tiny_config()
    gsm8k, expected = gsm8k_file(str(tmp), c0.student.path, c0.data.path)
    config = tiny_config(
        "smoke", eval_at_ends=True, checkpoint__every=2, eval__benchmarks="gsm8k", eval__files=f"gsm8k={gsm8k}",
        eval__size=0, eval__max_new_tokens=16, logging__wandb__mode="offline",
        logging__wandb__dir=str(tmp / "wandb"),
    )  # fmt: skip
    workdir = str(tmp / "run")
    with pytest.raises(Crash):
        Trainer(config, workdir).run(_crash_at(3))  # after the step-2 checkpoint
    first_rows = read_metrics(workdir)
    Trainer(config, workdir).run()
    return {"workdir": workdir, "wandb": str(tmp / "wandb"), "expected": expected, "first_rows": first_rows}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-12, nan_ok=True), k


def test_wandb_offline_rows_and_resumed_id(crashed_and_resumed):
    r = crashed_and_resumed
    runs = [wandb_records.read_run(d) for d in wandb_records.offline_runs(r["wandb"])]
    assert len(runs) == 2
    with open(f"{r['workdir']}/wandb_run_id") as f:
        run_id = f.read().strip()
    assert runs[0]["id"] == runs[1]["id"] == run_id  # the resumed run continues the same W&B run
    before, after = runs[0]["rows"], runs[1]["rows"]
    assert len(before) == len(r["first_rows"])  # everything the first process logged up to the crash
    for got, want in zip(before, r["first_rows"]):
        _same(got, want)
    final = read_metrics(r["workdir"])  # truncated to the checkpoint (step 2), then continued
    resumed = [row for row in final if row["step"] > 2]
    assert [row["step"] for row in after] == [row["step"] for row in resumed] and resumed
    for got, want in zip(after, resumed):
        _same(got, want)


def test_benchmark_rows_at_eval_steps(crashed_and_resumed):
    r = crashed_and_resumed
    rows = [row for row in read_metrics(r["workdir"]) if "eval/gsm8k/accuracy" in row]
    assert [row["step"] for row in rows] == [0, 4]  # eval_at_ends: steps 0 and total_steps
    start = rows[0]  # the untrained student, whose own outputs made the golds
    assert start["eval/gsm8k/accuracy"] == pytest.approx(r["expected"]) and start["eval/gsm8k/n"] == 8
    for row in rows:
        ci = binomtest(round(row["eval/gsm8k/accuracy"] * 8), 8).proportion_ci(method="wilson")
        assert (row["eval/gsm8k/ci95_low"], row["eval/gsm8k/ci95_high"]) == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"eval__benchmarks": "gsm8k,gsm9k"}, "eval.benchmarks: unknown benchmark 'gsm9k'"),
        ({"eval__benchmarks": "ifeval"}, r"eval.benchmarks: \['ifeval'\] run through lm-eval"),
        ({"eval__benchmarks": "gsm8k", "eval__files": "gsm8k=/nope.jsonl"}, "eval.files: gsm8k=/nope.jsonl"),
        ({"eval__benchmarks": "gsm8k", "eval__data_dir": "/nope"}, "eval.data_dir=/nope: no such folder"),
        ({"eval__benchmarks": "gsm8k", "eval__size": -1}, "eval.size: must be >= 0"),
        ({"eval__benchmarks": "gsm8k", "eval_every": 0}, "eval.benchmarks: set eval_every"),
        ({"logging__wandb__mode": "cloud"}, "logging.wandb.mode: must be one of"),
    ],
)
def test_validation_names_the_field(tiny_config, overrides, match):
    c = tiny_config(**{"eval_every": 2, **overrides})  # the fixture's configs turn eval_at_ends off
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        validate(c)


def test_defaults_are_off(tiny_config):
    c = tiny_config()
    assert c.eval.benchmarks == "" and c.logging.wandb.mode == "disabled"
    json.dumps(c.to_dict())  # the recorded config.json stays serialisable


def test_wandb_that_cannot_start_names_the_field(tiny_config, tmp_path, monkeypatch):
    """Online mode without an API key (and no network): the run stops at start-up naming logging.wandb."""
    from tsdkd_jax.train import wandb_log

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("HOME", "WANDB_CONFIG_DIR", "WANDB_DIR"):  # no ~/.netrc or saved login is found
        monkeypatch.setenv(var, str(tmp_path))
    c = tiny_config(logging__wandb__mode="online")
    with pytest.raises(ValueError, match=r"logging.wandb \(mode='online'\): could not start the W&B run"):
        wandb_log.WandbSink.open(c, str(tmp_path / "run"))
