"""Evaluation: generation + answer scoring with 95 % intervals, the paper's benchmarks, the testbed problems.

The lm-evaluation-harness bridge lives in `tsdkd_jax.eval.harness` (imported on demand: it needs the `eval`
extra); the MATH scorer imports math-verify on first use. `python -m tsdkd_jax.eval` (cli.py) scores a model
folder on named benchmarks; `during_training` scores `config.eval.benchmarks` while a run trains.
"""

from tsdkd_jax.eval.benchmarks import BENCHMARKS, Benchmark, get_benchmark, load_examples
from tsdkd_jax.eval.code_exec import ExecResult, run_tests
from tsdkd_jax.eval.metrics import accuracy, wilson_interval, write_jsonl
from tsdkd_jax.eval.runner import (
    continuation_logprobs,
    encode_prompts,
    evaluate,
    evaluate_choices,
    generate_texts,
)
from tsdkd_jax.eval.scorers import (
    SCORERS,
    ChoiceScorer,
    CodeScorer,
    MathScorer,
    NumericScorer,
    Verdict,
    get_scorer,
    math_equal,
)
from tsdkd_jax.eval.testbed_problems import ProblemConfig, make_splits, write_splits

__all__ = [
    "BENCHMARKS",
    "SCORERS",
    "Benchmark",
    "ChoiceScorer",
    "CodeScorer",
    "ExecResult",
    "MathScorer",
    "NumericScorer",
    "ProblemConfig",
    "Verdict",
    "accuracy",
    "continuation_logprobs",
    "encode_prompts",
    "evaluate",
    "evaluate_choices",
    "generate_texts",
    "get_benchmark",
    "get_scorer",
    "load_examples",
    "make_splits",
    "math_equal",
    "run_tests",
    "wilson_interval",
    "write_jsonl",
    "write_splits",
]
