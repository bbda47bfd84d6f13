"""Local lm-eval tasks for the eval tests: rows as a JSON-lines file and a task YAML that reads it."""

import json
from pathlib import Path

MC_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: choices
doc_to_target: gold
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


def write_jsonl(path, rows) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def write_mc_task(folder, task: str, rows) -> None:
    """Multiple-choice task `task` (accuracy) over rows {"prompt", "choices", "gold"}: folder/<task>.jsonl and
    folder/<task>.yaml, for a TaskManager(include_path=folder)."""
    data = Path(folder) / f"{task}.jsonl"
    write_jsonl(data, rows)
    (Path(folder) / f"{task}.yaml").write_text(MC_YAML.format(task=task, data=data))
