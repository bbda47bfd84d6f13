"""Test-only entry point: `tsdkd_jax.main` with a slow loop, for the tests that signal or kill a run mid-way.

    TSDKD_TEST_STEP_SLEEP=1.0 python tests/helpers/slow_main.py --config=configs/tiny.py --workdir=DIR ...

Every train step of the run sleeps $TSDKD_TEST_STEP_SLEEP seconds after its dispatch (a wrapper of the built
run's compiled step, installed by `install`); everything else is the real command line's entry point. Nothing
of this is in the package.
"""

import dataclasses
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = "TSDKD_TEST_STEP_SLEEP"


def install(seconds: float) -> None:
    """Make every run built from now on (train.builder.build) sleep `seconds` after each step's dispatch."""
    from tsdkd_jax.train import builder

    real_build = builder.build

    def slow_build(config, workdir):
        run = real_build(config, workdir)
        real_step = run.step_fn

        def step_fn(state, teacher_params, batch):
            out = real_step(state, teacher_params, batch)
            time.sleep(seconds)
            return out

        return dataclasses.replace(run, step_fn=step_fn)

    builder.build = slow_build


def command(*args) -> list[str]:
    """The argv of this entry point with the main command's flags `args` (set $TSDKD_TEST_STEP_SLEEP too)."""
    return [sys.executable, os.path.abspath(__file__), *args]


def env(base: dict, seconds: float | None) -> dict:
    """`base` with $TSDKD_TEST_STEP_SLEEP set to `seconds` (removed when None)."""
    out = {k: v for k, v in base.items() if k != ENV}
    return out if seconds is None else {**out, ENV: str(seconds)}


if __name__ == "__main__":
    sys.path.insert(0, REPO)  # as `python -m tsdkd_jax.main` from the checkout: this checkout's package
    install(float(os.environ[ENV]))
    from tsdkd_jax import main

    main._run()
