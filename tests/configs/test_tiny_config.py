"""Reading configs/tiny.py builds nothing; its assets are built by the explicit step the Trainer runs first."""

import importlib.util
import os

import pytest

from tsdkd_jax.train import assets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _get_config(arg=None):
    spec = importlib.util.spec_from_file_location(
        "tiny_config_unbuilt", os.path.join(REPO, "configs", "tiny.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_get_config_writes_no_file(tmp_path, monkeypatch):
    root = tmp_path / "assets"
    monkeypatch.setenv("TSDKD_TINY_DIR", str(root))
    c = _get_config("gkd,smoke")
    assert not root.exists()
    assert c.student.path.startswith(str(root)) and c.assets.builder == "tiny"
    assert (c.method, c.total_steps) == ("gkd", 4)  # the variants went through the package's parser


def test_unknown_builder_and_variant_name_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("TSDKD_TINY_DIR", str(tmp_path))
    c = _get_config()
    c.assets.builder = "huge"
    with pytest.raises(ValueError, match="assets.builder: unknown builder 'huge'"):
        assets.ensure(c)
    with pytest.raises(ValueError, match="configs/tiny.py: unknown field 'loss.betta'"):
        _get_config("loss.betta=0.5")
