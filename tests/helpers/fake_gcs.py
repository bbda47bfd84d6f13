"""A stand-in for Google Cloud Storage (no network here): `gs://bucket/key` maps to `<root>/bucket/key`.

It is registered with fsspec under "gs"/"gcs", where gcsfs would be, so epath, and through it our workdir
code, takes exactly the code path it takes on a pod. It keeps the GCS rules our code must respect: no
appends (objects are written whole); folders are only prefixes (`mkdir` does nothing, a folder exists once an
object is written under it); renaming a folder copies and then deletes object by object (not atomic).
Orbax's array data goes through tensorstore's own GCS driver, and Orbax asks the GCS client about the
bucket: neither is reached by this.
"""

from __future__ import annotations

import os
import shutil

import fsspec
from fsspec.implementations.local import LocalFileSystem


class FakeGCS(LocalFileSystem):
    protocol = ("gs", "gcs")
    root = None  # set by `install`

    def __init__(self, *args, **kwargs):
        kwargs.pop("finalize_on_close", None)  # a gcsfs option epath passes
        super().__init__()

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                return os.path.join(cls.root, path[len(prefix) :]).rstrip("/")
        return super()._strip_protocol(path)

    def mkdir(self, path, create_parents=True, **kwargs):
        pass  # GCS has no folders: a prefix exists once an object is written under it

    def makedirs(self, path, exist_ok=False):
        pass

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        files = self.find(src) if self.isdir(src) else [src]
        for f in files:  # object by object: copy all, then delete all (as gcsfs does)
            target = os.path.join(dst, os.path.relpath(f, src)) if f != src else dst
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(f, target)
        self.rm(src, recursive=True)

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError("GCS objects cannot be appended to")
        if "w" in mode:  # the object's prefix comes into being with it
            os.makedirs(os.path.dirname(self._strip_protocol(path)), exist_ok=True)
        return super()._open(path, mode=mode, **kwargs)


def install(root) -> None:
    """Route gs:// to folders under `root` for this process."""
    FakeGCS.root = os.fspath(root)
    for name in FakeGCS.protocol:
        fsspec.register_implementation(name, FakeGCS, clobber=True)
