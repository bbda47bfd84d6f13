"""logs.StderrFilter: drops exactly the closed-event-loop tracebacks that tensorstore's threads print after a
failed save, and passes every other byte through in order, however the writes are split."""

import io
import random
import threading
import time

from tsdkd_jax.logs import StderrFilter

NOISE = (
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3.11/asyncio/base_events.py", line 806, in call_soon_threadsafe\n'
    "    self._check_closed()\n"
    '  File "/usr/lib/python3.11/asyncio/base_events.py", line 519, in _check_closed\n'
    "    raise RuntimeError('Event loop is closed')\n"
    "RuntimeError: Event loop is closed\n"
)
# The same error from our own code, and an unrelated traceback: both are real and must be kept.
OURS = NOISE.replace("/usr/lib/python3.11/asyncio/base_events.py", "/x/tsdkd_jax/train/loop.py")
BUG = (
    'Traceback (most recent call last):\n  File "/x/main.py", line 3, in f\n    g()\nValueError: bad value\n'
)
TEXT = [
    "I1129 step 1\n",
    "Traceback is a word here\n",
    BUG,
    "W1129 a warning\n",
    OURS,
    "partial line, no newline",
]


def _filtered(pieces):
    out = io.StringIO()
    stream = StderrFilter(out)
    for piece in pieces:
        stream.write(piece)
    stream.release()
    return out.getvalue(), stream.dropped


def _split_randomly(text, rng):
    cuts = sorted(rng.sample(range(1, len(text)), 40))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def test_noise_dropped_and_the_rest_kept_in_order():
    pieces = [NOISE, TEXT[0], NOISE, NOISE, *TEXT[1:4], NOISE, *TEXT[4:]]
    out, dropped = _filtered(pieces)
    assert out == "".join(TEXT) and dropped == 4


def test_any_split_of_the_writes_gives_the_same_output():
    whole = NOISE + TEXT[0] + NOISE + "".join(TEXT[1:])
    rng = random.Random(0)
    for _ in range(50):
        assert _filtered(_split_randomly(whole, rng)) == ("".join(TEXT), 2)


def test_an_unfinished_traceback_is_written_out_at_exit():
    assert _filtered(["x\n", NOISE[:60]]) == ("x\n" + NOISE[:60], 0)


def test_tracebacks_printed_by_several_threads_at_once_are_followed_per_thread():
    """Two I/O threads print a noise traceback each, piece by piece and interleaved, while the main thread
    writes its own lines: both tracebacks go, the main thread's lines stay whole and in order."""
    out = io.StringIO()
    stream = StderrFilter(out)
    barrier = threading.Barrier(3)

    def printer(lines):
        barrier.wait()
        for line in lines:
            stream.write(line)
            time.sleep(0.001)

    lines = NOISE.splitlines(keepends=True)
    threads = [threading.Thread(target=printer, args=(lines,)) for _ in range(2)]
    threads.append(threading.Thread(target=printer, args=(["a line\n", BUG, "last line\n"],)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stream.release()
    assert (out.getvalue(), stream.dropped) == ("a line\n" + BUG + "last line\n", 2)
