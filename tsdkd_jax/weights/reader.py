"""Read tensors (or slices of them) from a HF safetensors folder, single-file or sharded, without torch."""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import SafetensorError, safe_open

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointReader:
    """Maps tensor names to files and serves slices through `safe_open(..., framework="numpy")`.

    bf16 tensors come back as ml_dtypes.bfloat16 numpy arrays (safetensors ≥ 0.5).
    """

    def __init__(self, folder: str):
        self.folder = os.fspath(folder)
        self._handles: dict = {}
        index = os.path.join(self.folder, INDEX_FILE)
        if os.path.isfile(index):
            with open(index) as f:
                self.weight_map: dict[str, str] = json.load(f)["weight_map"]
        elif os.path.isfile(os.path.join(self.folder, SINGLE_FILE)):
            names = self._open(SINGLE_FILE).keys()
            self.weight_map = {name: SINGLE_FILE for name in names}
        else:
            raise FileNotFoundError(
                f"No weights in {self.folder}: expected {SINGLE_FILE} or {INDEX_FILE} (sharded checkpoint)"
            )

    def _open(self, filename: str):
        if filename not in self._handles:
            path = os.path.join(self.folder, filename)
            try:
                handle = safe_open(path, framework="numpy")
            except (SafetensorError, OSError) as e:
                raise ValueError(f"Cannot read safetensors file {path} (truncated or corrupt?): {e}") from e
            self._handles[filename] = handle
        return self._handles[filename]

    def file_of(self, name: str) -> str:
        return os.path.join(self.folder, self.weight_map[name])

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._slice(name).get_shape())

    def _slice(self, name: str):
        try:
            return self._open(self.weight_map[name]).get_slice(name)
        except SafetensorError as e:
            raise ValueError(f"Cannot read tensor {name!r} from {self.file_of(name)}: {e}") from e

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """The tensor, or only the rows/columns in `index` (one slice per axis)."""
        try:
            sl = self._slice(name)
            return np.asarray(sl[index] if index is not None else sl[:])
        except SafetensorError as e:
            raise ValueError(f"Cannot read tensor {name!r} from {self.file_of(name)}: {e}") from e
