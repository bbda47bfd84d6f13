"""The run folder (workdir): a local path or a `gs://` URL, reached through etils.epath as Orbax reaches it.

A pod run keeps its workdir on GCS: every worker writes its checkpoint shards there, and a re-created
(preempted) slice starts with empty disks. Everything the trainer writes there — checkpoints, metrics.jsonl,
TensorBoard events, the export, DONE — goes through `path()`. GCS has no appends and no atomic folder
renames, so `write_text` replaces whole objects, and a folder is put in place file by file
(train/export.py orders that so a reader can tell a finished export from a partial one). epath reaches gs:// through gcsfs (the `gcs` extra) or TensorFlow; `check` says
so before the run starts instead of at the first save.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from etils import epath

SCHEMES = ("gs",)  # remote schemes we support (Orbax's tensorstore reaches their arrays natively)


def is_remote(workdir) -> bool:
    return "://" in os.fspath(workdir)


def path(workdir) -> epath.Path:
    """The workdir as an epath.Path; a local one absolute, with ~ expanded."""
    workdir = os.fspath(workdir)
    if is_remote(workdir):
        return epath.Path(workdir)
    return epath.Path(os.path.abspath(os.path.expanduser(workdir)))


def check(workdir) -> None:
    """Raise now, naming the fix, if the workdir's scheme cannot be written from this machine."""
    workdir = os.fspath(workdir)
    if not is_remote(workdir):
        return
    scheme = workdir.split("://", 1)[0]
    if scheme not in SCHEMES:
        raise ValueError(f"workdir {workdir!r}: expected a local path or gs://..., got scheme {scheme}://")
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as e:
        try:
            import tensorflow  # noqa: F401 (epath's other gs:// backend)
        except ImportError:
            raise ImportError(
                f"workdir {workdir!r} is on GCS, which needs gcsfs: pip install 'tsdkd_jax[gcs]' ({e})"
            ) from None


def write_text(target: epath.Path, text: str) -> None:
    """Replace the file `target` with `text` whole: locally through a temporary file and a rename (a reader
    never sees half a file), remotely as one object write (GCS objects are replaced atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_remote(target):
        target.write_text(text)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=os.fspath(target.parent))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, os.fspath(target))


def upload_file(local_file: str, target: epath.Path) -> None:
    """Copy one local file to `target` (local or gs://), streamed: safetensors shards are up to 5 GiB."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(local_file, "rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 64 * 1024**2)
