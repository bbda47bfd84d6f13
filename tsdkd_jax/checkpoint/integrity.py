"""Which step directories under a checkpoint folder are complete, and moving incomplete ones aside.

How Orbax 0.12.8 finalises a step (both atomicity modes write the marker): items are written into
`<step>.orbax-checkpoint-tmp/` (local/POSIX; `AtomicRenameTemporaryPath`), then `commit_success.txt` is
written into it and the folder is renamed to `<step>/`. On GCS (`CommitFileTemporaryPath`) the folder is
`<step>/` from the start and `commit_success.txt` is the last thing written. So a crashed async save leaves
either a `*.orbax-checkpoint-tmp*` folder (Orbax itself ignores it) or a `<step>/` folder without the marker.
A step is "complete" here only if it is a plain-integer folder holding the step marker, the step metadata
and each item's own files (below); anything else named like a step is partial.

Partial folders of either kind are renamed (never deleted) to `<step>.partial-<unix time>`: Orbax then
neither counts them as the latest step nor collides with them (or removes a stale tmp folder) when the same
step number is saved again.
"""

from __future__ import annotations

import logging
import re
import time

from etils.epath import Path  # local or gs:// (see workdir.py)

log = logging.getLogger(__name__)

STATE, META = "state", "meta"  # the two Orbax items of every step
COMMIT_MARKER = "commit_success.txt"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
PARTIAL_SUFFIX = ".partial-"
# Files every complete step holds, relative to the step folder: the step marker and step metadata, the
# PyTree item's tree metadata and OCDBT root manifest, the JSON item's file.
REQUIRED_FILES = (
    COMMIT_MARKER,
    "_CHECKPOINT_METADATA",
    f"{STATE}/_METADATA",
    f"{STATE}/manifest.ocdbt",
    f"{META}/metadata",
)
_STEP_RE = re.compile(r"^(0|[1-9]\d*)$")


def missing_files(step_dir: Path) -> list[str]:
    """Required files absent from `step_dir` (empty list: the step is complete)."""
    return [name for name in REQUIRED_FILES if not (step_dir / name).is_file()]


def scan(directory: Path) -> tuple[list[int], dict[Path, str]]:
    """(sorted complete steps, {partial step folder: why}) for the step folders under `directory`."""
    complete, partial = [], {}
    if not directory.is_dir():
        return complete, partial
    for child in sorted(directory.iterdir()):
        if not child.is_dir():
            continue
        if TMP_SUFFIX in child.name:
            if _STEP_RE.match(child.name.split(TMP_SUFFIX)[0]):
                partial[child] = "unfinalized temporary folder"
            continue
        if not _STEP_RE.match(child.name):
            continue
        missing = missing_files(child)
        if missing:
            partial[child] = f"lacks {', '.join(missing)}"
        else:
            complete.append(int(child.name))
    return sorted(complete), partial


def quarantine(folder: Path) -> Path:
    """Rename a partial step folder to `<step>.partial-<unix time>` (never deleted); returns the new path."""
    step = folder.name.split(TMP_SUFFIX)[0]
    dst = folder.with_name(f"{step}{PARTIAL_SUFFIX}{int(time.time())}")
    while dst.exists():
        dst = dst.with_name(dst.name + "_")
    folder.rename(dst)
    return dst


def sweep(directory: Path) -> list[int]:
    """Warn about and quarantine every partial step folder; returns the complete steps.

    Call on one process only (it renames folders), then synchronise the others.
    """
    complete, partial = scan(directory)
    latest = complete[-1] if complete else None
    for folder, why in partial.items():
        moved = quarantine(folder)
        log.warning(
            "Skipping partially written checkpoint step %s in %s (%s: %s); moved aside to %s; latest "
            "finalized step is %s",
            moved.name.split(PARTIAL_SUFFIX)[0],
            directory,
            folder.name,
            why,
            moved.name,
            latest,
        )
    return complete
