"""What a finished run leaves in its workdir, read back for the train tests (and the repository root)."""

import json
import os

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def read_metrics(workdir):
    """The rows of <workdir>/metrics.jsonl, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
