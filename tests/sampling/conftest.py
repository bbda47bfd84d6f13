"""Sampler tests reuse the models' tiny transformers builders (tests/models/tiny_hf.py)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
