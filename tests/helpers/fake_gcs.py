"""A stand-in for Google Cloud Storage (no network here): `gs://bucket/key` maps to `<root>/bucket/key`.

It is registered with fsspec under "gs"/"gcs", where gcsfs would be, so epath, and through it our workdir
code and Orbax's folder handling, take exactly the code path they take on a pod. It keeps the GCS rules our
code must respect: no appends (objects are written whole) and folders that need not be created first.
Orbax's array data goes through tensorstore's own GCS driver, which this does not reach.
"""

from __future__ import annotations

import os

import fsspec
from fsspec.implementations.local import LocalFileSystem


class FakeGCS(LocalFileSystem):
    protocol = ("gs", "gcs")
    root = None  # set by `install`

    def __init__(self, *args, **kwargs):
        kwargs.pop("finalize_on_close", None)  # a gcsfs option epath passes
        super().__init__(auto_mkdir=True)

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                return os.path.join(cls.root, path[len(prefix) :]).rstrip("/")
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError("GCS objects cannot be appended to")
        return super()._open(path, mode=mode, **kwargs)


def install(root) -> None:
    """Route gs:// to folders under `root` for this process."""
    FakeGCS.root = os.fspath(root)
    for name in FakeGCS.protocol:
        fsspec.register_implementation(name, FakeGCS, clobber=True)
