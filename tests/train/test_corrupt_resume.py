"""The trainer skips a corrupted latest checkpoint with a warning, resumes from the previous one, and ends where
the uninterrupted run ended (tests/checkpoint covers every kind of corruption at the Checkpointer level)."""

import logging

import numpy as np
from run_files import read_metrics

from tsdkd_jax import train

SKIP = ("time/", "tokens_per_s", "mfu")


def _losses(workdir):
    return {r["step"]: {k: v for k, v in r.items() if not k.startswith(SKIP)} for r in read_metrics(workdir)}


def test_corrupted_latest_checkpoint_is_skipped_and_the_run_resumes(tiny_config, tmp_path, caplog):
    c = tiny_config(total_steps=4, checkpoint__every=2, checkpoint__keep=3)
    train.run(c, str(tmp_path))
    full = _losses(tmp_path)
    (tmp_path / "checkpoints" / "4" / "commit_success.txt").unlink()  # a save that never finished

    with caplog.at_level(logging.WARNING):
        t = train.Trainer(c, str(tmp_path))
    assert "Skipping partially written checkpoint step 4" in caplog.text
    assert t.start_step == 2
    t.run()
    resumed = _losses(tmp_path)
    assert sorted(resumed) == sorted(full) == [1, 2, 3, 4]
    for step in (3, 4):
        keys = sorted(full[step])
        np.testing.assert_allclose([resumed[step][k] for k in keys], [full[step][k] for k in keys], rtol=1e-6)
    assert any(p.name.startswith("4.partial-") for p in (tmp_path / "checkpoints").iterdir())  # kept aside
