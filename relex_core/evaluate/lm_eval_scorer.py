"""lm-evaluation-harness as a scorer, through its Python API (`lm_eval.simple_evaluate`).

    LmEvalScorer(tasks=("gsm8k",), model_args="dtype=bfloat16,batch_size=16", limit=200)

Every metric of every task (and group) becomes a row, named `task/metric` (`task/metric/filter` for
a filter other than lm-eval's "none"), with lm-eval's stderr where it gives one. lm_eval is the
optional `eval` extra: it is imported here, when a scorer is checked or used, never by relex itself.
"""

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import RelexError
from .scorer import Metric, Scorer

BACKENDS = ("hf", "vllm")
_INSTALL_HINT = "install the eval extra: pip install 'relex[eval]'"


@dataclass(frozen=True)
class LmEvalScorer(Scorer):
    """tasks: lm-eval task (or group) names; model_args: extra K=V,... for the backend, as lm-eval's
    --model_args (the folder is passed as pretrained=); include: a folder of task YAMLs (lm-eval's
    include path); limit: examples per task; backend: 'hf' or 'vllm'; device: e.g. 'cpu', 'cuda'
    (default: cuda where there is one, else cpu)."""
    tasks: tuple
    model_args: str = ""
    include: str | None = None
    limit: int | None = None
    backend: str = "hf"
    device: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or not all(isinstance(task, str) and task for task in self.tasks):
            raise RelexError(f"lm-eval tasks must be task names, got {self.tasks!r}")
        if self.backend not in BACKENDS:
            raise RelexError(f"lm-eval backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.limit is not None and self.limit < 1:
            raise RelexError(f"limit must be a positive number of examples, not {self.limit}")
        for item in filter(None, self.model_args.split(",")):
            key = item.partition("=")[0].strip()
            if "=" not in item or not key:
                raise RelexError(f"lm-eval model arguments must be K=V,...: {item!r} in {self.model_args!r}")
            if key == "pretrained":
                raise RelexError("lm-eval model arguments must not set pretrained: relex passes each folder")
        if self.include is not None:
            include = Path(self.include).expanduser().absolute()
            if not include.is_dir():
                raise RelexError("lm-eval include path is not a folder", path=include)
            object.__setattr__(self, "include", str(include))

    @property
    def name(self) -> str:
        parts = ["lm-eval", ",".join(self.tasks), f"backend={self.backend}"]
        for label, value in (("limit", self.limit), ("args", self.model_args or None), ("include", self.include),
                             ("device", self.device)):
            if value is not None:
                parts.append(f"{label}={value}")
        return " ".join(parts)

    def check(self) -> None:
        if importlib.util.find_spec("lm_eval") is None:
            raise RelexError(f"--lm-eval needs lm-evaluation-harness: {_INSTALL_HINT}")
        if self.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise RelexError("the vllm backend needs vLLM installed (pip install vllm)")
        known = _task_manager(self.include, self.tasks).all_tasks
        unknown = [task for task in self.tasks if task not in known]
        if unknown:
            where = f" or in {self.include}" if self.include else " (local tasks: --lm-eval-include FOLDER)"
            raise RelexError(f"unknown lm-eval task(s) {', '.join(unknown)}: not among lm-eval's tasks{where}")

    def score(self, folder, cancel=None) -> list[Metric]:
        import lm_eval
        from lm_eval.utils import simple_parse_args_string

        # lm-eval's own parsing of K=V,... (numbers, booleans); the folder goes in as is, commas and all.
        model_args = {**simple_parse_args_string(self.model_args), "pretrained": str(folder)}
        manager = _task_manager(self.include, self.tasks)
        try:
            results = lm_eval.simple_evaluate(model=self.backend, model_args=model_args, tasks=list(self.tasks),
                                              limit=self.limit, device=self.device or _default_device(),
                                              task_manager=manager, log_samples=False)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as error:  # a folder the backend cannot load, a task that fails on it
            message = str(error).strip().splitlines()[-1] if str(error).strip() else ""
            raise RelexError(f"lm-eval failed ({type(error).__name__}: {message})", path=folder) from None
        return metrics_of(results["results"])


@functools.lru_cache(maxsize=4)
def _task_manager(include: str | None, tasks: tuple):
    """lm-eval's TaskManager, built once per process and setting: it indexes every task YAML lm-eval
    ships, which takes seconds, so an include folder that has every task is used alone."""
    from lm_eval.tasks import TaskManager

    if include is not None:
        manager = TaskManager(include_path=include, include_defaults=False)
        if all(task in manager.all_tasks for task in tasks):
            return manager
    return TaskManager(include_path=include)


def _default_device() -> str:
    """cuda where there is one, else cpu (lm-eval's hf backend would insist on cuda)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def metrics_of(results: dict) -> list[Metric]:
    """lm-eval's results[task] = {"exact_match,none": 0.5, "exact_match_stderr,none": 0.1, "alias": ...}
    as Metric rows; stderr None where lm-eval has none ("N/A")."""
    metrics = []
    for task, values in results.items():
        for key, value in values.items():
            name, comma, filter_name = key.partition(",")
            if not comma or name.endswith("_stderr") or not _is_number(value):
                continue
            stderr = values.get(f"{name}_stderr,{filter_name}")
            label = f"{task}/{name}" if filter_name == "none" else f"{task}/{name}/{filter_name}"
            metrics.append(Metric(label, float(value), float(stderr) if _is_number(stderr) else None))
    return metrics


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
