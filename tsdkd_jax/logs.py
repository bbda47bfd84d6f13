"""Logging defaults for the command line: the trainer's own INFO lines, other libraries' warnings only.

Orbax logs a multi-kilobyte `CheckpointManagerOptions(...)` line at INFO for every checkpoint manager, and
JAX/absl add more; by default only tsdkd_jax's loggers speak at INFO. absl's `--verbosity` flag, when given,
applies to every logger as usual: `--verbosity=0` shows everyone's INFO lines, `--verbosity=1` debug.

Orbax also logs every failed background save at ERROR with a traceback per thread (a full disk gave ~330
lines); the same error reaches the trainer as an exception, which main.py reports in one line (or with its
traceback when it is a bug), so by default Orbax's records below CRITICAL are dropped.
"""

from __future__ import annotations

import atexit
import errno
import io
import logging
import sys
import threading

from absl import flags
from absl import logging as absl_logging


class _DropOrbax(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL or "/orbax/" not in record.pathname.replace("\\", "/")


_TRACEBACK = "Traceback (most recent call last):"
_CLOSED_LOOP = "RuntimeError: Event loop is closed"


def is_closed_loop_noise(block: str) -> bool:
    """A whole printed traceback whose frames are all asyncio's own and whose error is the closed loop."""
    lines = block.rstrip("\n").splitlines()
    frames = [line for line in lines if line.startswith("  File ")]
    return (
        len(lines) >= 2 and lines[0] == _TRACEBACK and lines[-1] == _CLOSED_LOOP
        and all("/asyncio/" in line.replace("\\", "/") for line in frames)
    )  # fmt: skip


class StderrFilter(io.TextIOBase):
    """Passes text through to `stream`, except whole tracebacks for which `is_closed_loop_noise` holds.

    Each thread's text is followed on its own (several I/O threads print at once, a piece at a time): a
    traceback is held from its `Traceback (most recent call last):` line to its first complete line that is
    not indented (the exception line), then written out or dropped; everything else goes straight through.
    """

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.dropped = 0
        self._held: dict[int, str] = {}  # per thread: the traceback being collected
        self._pending: dict[int, str] = {}  # per thread: a line that may be the start of a header
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._write(threading.get_ident(), text)
        return len(text)

    def _write(self, thread: int, text: str) -> None:
        text = self._pending.pop(thread, "") + text
        while text:
            if thread not in self._held:
                start = text.find(_TRACEBACK)
                if start < 0 or (start > 0 and text[start - 1] != "\n"):
                    tail = text[text.rfind("\n") + 1 :]  # a header may arrive in pieces: keep its start
                    if tail and _TRACEBACK.startswith(tail):
                        text, self._pending[thread] = text[: -len(tail)], tail
                    self.stream.write(text)
                    return
                self.stream.write(text[:start])
                self._held[thread], text = "", text[start:]
            held = self._held[thread]
            end = self._block_end(held, text)
            if end is None:
                self._held[thread] = held + text
                return
            block, text = held + text[:end], text[end:]
            del self._held[thread]
            if is_closed_loop_noise(block):
                self.dropped += 1
            else:
                self.stream.write(block)

    @staticmethod
    def _block_end(held: str, text: str) -> int | None:
        """Where in `text` the held traceback's exception line ends (past its newline), if it has."""
        pos = 0
        for line in (held + text).splitlines(keepends=True):
            pos += len(line)
            if not line.endswith("\n"):
                return None
            if not (line.startswith(_TRACEBACK) or line[:1] in (" ", "\t")):
                return pos - len(held) if pos > len(held) else None
        return None

    def release(self) -> None:
        """Write out unfinished held text (at exit nothing real may be lost)."""
        with self._lock:
            for parts in (self._held, self._pending):
                self.stream.write("".join(parts.values()))
                parts.clear()
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self):
        return self.stream.encoding


def _thread_excepthook(args) -> None:
    """A background thread dying of a full disk: one warning line (main reports the disk full itself)."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno == errno.ENOSPC:
        name = args.thread.name if args.thread is not None else "?"
        logging.getLogger("tsdkd_jax").warning("background thread %s stopped: %s", name, args.exc_value)
        return
    threading.__excepthook__(args)


def configure() -> None:
    """Call after flags are parsed (inside `app.run`'s main)."""
    if flags.FLAGS["verbosity"].present:
        return  # absl has applied the requested level to the root logger
    absl_logging.set_verbosity(absl_logging.WARNING)
    absl_logging.get_absl_handler().addFilter(_DropOrbax())
    logging.getLogger("tsdkd_jax").setLevel(logging.INFO)
    if not isinstance(sys.stderr, StderrFilter):
        sys.stderr = StderrFilter(sys.stderr)
        atexit.register(sys.stderr.release)
    threading.excepthook = _thread_excepthook
