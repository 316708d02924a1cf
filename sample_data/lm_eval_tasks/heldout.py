"""Loads heldout.jsonl, the sample task's held-out problems, for relex_sample_addition.yaml.

A `custom_dataset` rather than `dataset_path: json`: the datasets library resolves a relative
`data_files` against the working directory, and this task must load from wherever it is run.
The rows are built in memory, so nothing is downloaded or cached.
"""
import json
from pathlib import Path

import datasets


def load(**_metadata):
    """{"test": the held-out problems as a Dataset with `prompt` and `answer` columns}."""
    lines = (Path(__file__).with_name("heldout.jsonl")).read_text().splitlines()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([json.loads(line) for line in lines])})
