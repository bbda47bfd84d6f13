"""Tiny-run fixtures: the configs/tiny.py assets built once per session, and config/run helpers."""

import importlib.util
import os

import pytest
from run_files import REPO

from tsdkd_jax.train import assets

TINY = os.path.join(REPO, "configs", "tiny.py")


@pytest.fixture(scope="session")
def tiny_dir():
    """Assets shared by every train test (and the subprocess runs): built once, reused across sessions."""
    path = os.environ.setdefault("TSDKD_TINY_DIR", os.path.join("/tmp", "tsdkd_tiny_assets"))
    return path


@pytest.fixture(scope="session")
def tiny_config(tiny_dir):
    """tiny_config(arg=None, **overrides) -> a fresh ConfigDict of configs/tiny.py (eval and export off)."""
    spec = importlib.util.spec_from_file_location("tiny_config_module", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def make(arg=None, **overrides):
        c = module.get_config(arg)
        assets.ensure(c)  # building the tiny models and data is an explicit step
        c.eval_at_ends = False
        c.checkpoint.export = False
        c.checkpoint.async_save = False
        for key, value in overrides.items():
            section, _, field = key.replace("__", ".").rpartition(".")
            (c[section] if section else c)[field] = value
        return c

    return make
