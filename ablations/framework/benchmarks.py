"""Complexity and throughput of registered models: the records behind ``results/benchmarks.{json,md}``.

For each model, built with its registry defaults, at the registry ``input_size``
(:func:`benchmark_model`; a model taking several inputs defines ``example_inputs(batch_size, input_size)``,
the registry tests' convention, and is fed those instead, :func:`model_inputs`):

* **Parameters**, total and trainable (:func:`lightning_modules.complexity.count_parameters`).
* **MACs, two conventions**, per image (counted on a batch of 1): ``macs_conv_linear``
  (Conv/Linear module hooks, the thop-style number that papers label "FLOPs") and
  ``macs_all`` (``FlopCounterMode`` / 2, every matrix product); definitions in
  :mod:`lightning_modules.complexity`.
* **Throughput and peak memory** of the forward step (eval, ``no_grad``) and of the
  training step (forward + backward of ``output.float().mean()``, summed over the tensors of a
  tuple/list/dict output, :func:`lightning_modules.profiling.output_loss`), in float32
  (``"32-true"``) and in bf16 autocast (``"bf16-mixed"``), on the CPU and, where
  ``torch.cuda.is_available()``, on CUDA; the four steps of one model and device are
  timed round-robin, so machine load hits them alike (models are timed one after
  another); details in :mod:`lightning_modules.profiling`.
* **Reference numbers** for the model, if its paper has them (below), compared exactly.

Reference numbers are data: one file per paper, ``ablations/<paper>/benchmark_references.json``,
found by glob (:func:`reference_files`)::

    {
      "paper": "cswin_unet",                       # must be the folder's name
      "description": "optional free text",
      "quantities": {"macs_thop": "what it means"}, # optional: this paper's own quantities
      "models": {
        "cswin_unet": {"source": "where the numbers come from",   # required
                       "input_size": [3, 224, 224],                # required: what they were measured at
                       "params_total": 23568492, "macs_thop": 4723493376, ...}
      }
    }

A model entry may hold the keys of :data:`REFERENCE_LABELS` (compared with our
records) and the file's own ``quantities`` (shown, not compared); integers, or
``null`` where unknown. Anything else raises :class:`BenchmarkReferenceError`
naming the file.

The document written by :func:`write_benchmarks` (schema :data:`SCHEMA_VERSION`)::

    {"schema_version": 2, "commit": ..., "dirty": ..., "created": ..., "environment": {...},  # provenance()
     "command": "python reproduce/benchmark.py ...", "machine": {...},                       # machine()
     "settings": {...}, "mac_conventions": {...},
     "models": [{"model": ..., "params_total": ..., "macs_conv_linear": ..., "macs_all": ...,
                 "input_shapes": [[...], ...],      # only for a model fed its example_inputs (batch 1)
                 "reference": {"file", "source", "input_size", "values", "labels"} | null,
                 "reference_match": {key: bool} | null,
                 "cpu": {"32-true": {"fwd": {...}, "fwd_bwd": {...}, ...}, "bf16-mixed": {...}},
                 "cuda": null | {"32-true": {...}, "bf16-mixed": {...}}}
                | {"model": ..., "input_size": ..., "error": "traceback"}]}

The Markdown is rendered from the document alone by
:func:`ablations.framework.render_benchmarks.render_markdown`.
"""
from __future__ import annotations

import os

# Kineto (the profiler back-end) logs start/stop lines and "no GPU" errors on CPU-only machines.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ablations.framework.provenance import REPO_ROOT, machine, provenance  # noqa: E402
from ablations.framework.render_benchmarks import render_markdown  # noqa: E402
from lightning_modules.complexity import (  # noqa: E402
    MAC_CONVENTIONS,
    count_parameters,
    macs_all_by_op,
    macs_conv_linear,
)
from lightning_modules.profiling import (  # noqa: E402
    MIB,
    PRECISIONS,
    benchmark_cpu_precisions,
    benchmark_cuda_precisions,
    state_bytes,
)
from models import create_model, list_models, model_info  # noqa: E402

__all__ = [
    "SCHEMA_VERSION",
    "REFERENCE_LABELS",
    "REFERENCES_GLOB",
    "BenchmarkReferenceError",
    "reference_files",
    "load_reference_file",
    "load_references",
    "reference_for",
    "select_models",
    "model_inputs",
    "benchmark_model",
    "run_benchmarks",
    "write_benchmarks",
]

SCHEMA_VERSION = 2

#: Reference quantities that our records also compute (compared exactly), and what they mean.
REFERENCE_LABELS: dict[str, str] = {
    "params_total": "parameters",
    "macs_conv_linear": "MACs, Conv + Linear only",
    "macs_all": "MACs, all matrix products",
}

#: Where the per-paper reference files are, relative to the repository root.
REFERENCES_GLOB = "ablations/*/benchmark_references.json"

_FILE_KEYS = {"paper", "description", "quantities", "models"}
_ENTRY_META = {"source", "input_size"}


# ---------------------------------------------------------------------------------------------
# Reference numbers
# ---------------------------------------------------------------------------------------------
class BenchmarkReferenceError(ValueError):
    """A ``benchmark_references.json`` that does not follow the schema (the message names the file)."""


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def reference_files(root: str | Path | None = None) -> list[Path]:
    """Every ``ablations/<paper>/benchmark_references.json`` under ``root`` (default: the repository), sorted."""
    return sorted(Path(root or REPO_ROOT).glob(REFERENCES_GLOB))


def load_reference_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The validated model entries of one reference file, keyed by model name.

    Each entry: ``{"file", "source", "input_size", "values": {key: int | None}, "labels": {key: meaning}}``
    (``labels`` in the order of :data:`REFERENCE_LABELS`, then the file's own ``quantities``).
    """
    path = Path(path)
    where = _display(path)

    def fail(message: str) -> BenchmarkReferenceError:
        return BenchmarkReferenceError(f"{where}: {message}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(f"not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise fail("the top level must be an object")
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise fail(f"unknown top-level key(s) {unknown}; allowed: {sorted(_FILE_KEYS)}")
    paper = data.get("paper")
    if not isinstance(paper, str) or not paper:
        raise fail('"paper" must be a non-empty string')
    if paper != path.parent.name:
        raise fail(f'"paper" is {paper!r} but the file is in the folder {path.parent.name!r}')
    if not isinstance(data.get("description", ""), str):
        raise fail('"description" must be a string')
    quantities = data.get("quantities", {})
    if not isinstance(quantities, dict) or not all(isinstance(v, str) and v for v in quantities.values()):
        raise fail('"quantities" must map each key to a non-empty description string')
    clash = sorted((set(quantities) & set(REFERENCE_LABELS)) | (set(quantities) & _ENTRY_META))
    if clash:
        raise fail(f'"quantities" redefines {clash}, which are defined by the benchmark')
    labels = {**REFERENCE_LABELS, **quantities}
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise fail('"models" must be a non-empty object keyed by model name')

    entries: dict[str, dict[str, Any]] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise fail(f"model {name!r}: the entry must be an object")
        source = entry.get("source")
        if not isinstance(source, str) or not source.strip():
            raise fail(f'model {name!r}: missing "source" (where the numbers come from)')
        size = entry.get("input_size")
        if (not isinstance(size, list) or not size
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            raise fail(f'model {name!r}: "input_size" must be a list of positive integers (without the batch)')
        unknown = sorted(set(entry) - _ENTRY_META - set(labels))
        if unknown:
            raise fail(
                f"model {name!r}: unknown key(s) {unknown}; allowed: {sorted(_ENTRY_META | set(labels))} "
                '(declare a paper-specific quantity under "quantities")'
            )
        values: dict[str, int | None] = {}
        for key in labels:
            if key not in entry:
                continue
            value = entry[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise fail(f"model {name!r}: {key!r} must be a non-negative integer or null, not {value!r}")
            values[key] = value
        entries[name] = {
            "file": where,
            "source": source,
            "input_size": list(size),
            "values": values,
            "labels": {key: labels[key] for key in labels if key in values},
        }
    return entries


def load_references(paths: Iterable[str | Path] | None = None) -> dict[str, dict[str, Any]]:
    """Every model entry of ``paths`` (default: :func:`reference_files`); a model in two files raises."""
    references: dict[str, dict[str, Any]] = {}
    for path in reference_files() if paths is None else paths:
        for name, entry in load_reference_file(path).items():
            if name in references:
                raise BenchmarkReferenceError(
                    f"model {name!r} has reference numbers in both {references[name]['file']} and {entry['file']}"
                )
            references[name] = entry
    return references


def reference_for(name: str, input_size: Sequence[int],
                  references: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any] | None:
    """The reference entry of ``name`` if it was measured at ``input_size`` (else ``None``)."""
    ref = (load_references() if references is None else references).get(name)
    if ref is None or tuple(ref["input_size"]) != tuple(input_size):
        return None
    return json.loads(json.dumps(ref))  # a deep copy


# ---------------------------------------------------------------------------------------------
# One model
# ---------------------------------------------------------------------------------------------
def select_models(pattern: str = "*", *, include_test: bool = False) -> list[str]:
    """Registered names matching the glob ``pattern``; ``ValueError`` (with a hint) when none does."""
    names = list_models(pattern, include_test=include_test)
    if not names:
        hint = "" if include_test else " (add --include-test to include the *_test models)"
        raise ValueError(f"no registered model matches {pattern!r}{hint}; registered: {', '.join(list_models())}")
    return names


def model_inputs(model: nn.Module, input_size: Sequence[int], batch_size: int) -> tuple[Any, ...]:
    """The positional inputs of one benchmark call: ``model.example_inputs(batch_size, input_size)`` where the
    model defines it (tensors, or lists/dicts of them), else one ``torch.randn(batch_size, *input_size)``."""
    if hasattr(model, "example_inputs"):
        inputs = tuple(model.example_inputs(batch_size, tuple(input_size)))
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            raise TypeError(f"{type(model).__name__}.example_inputs must return a tuple starting with a tensor")
        return inputs
    return (torch.randn(batch_size, *input_size),)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    values = obj.values() if isinstance(obj, Mapping) else obj if isinstance(obj, (list, tuple)) else ()
    return [t for value in values for t in _tensors(value)]


def _rebuild(obj: Any, tensors: Iterator[torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return next(tensors)
    if isinstance(obj, Mapping):
        return {key: _rebuild(value, tensors) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(value, tensors) for value in obj)
    return obj


class _BoundInputs(nn.Module):
    """``model(x, *rest)`` as a one-tensor module, for :mod:`lightning_modules.profiling` (which times ``m(x)``).

    ``rest`` (the other example inputs) is held as non-persistent buffers, so it moves with ``.to(device)``.
    """

    def __init__(self, model: nn.Module, rest: tuple[Any, ...]) -> None:
        super().__init__()
        self.model, self._rest = model, rest  # the structure; its tensors are read from the buffers
        self._count = len(_tensors(rest))
        for i, tensor in enumerate(_tensors(rest)):
            self.register_buffer(f"rest_{i}", tensor, persistent=False)

    def forward(self, x: torch.Tensor) -> Any:
        tensors = iter([getattr(self, f"rest_{i}") for i in range(self._count)])
        return self.model(x, *_rebuild(self._rest, tensors))


def benchmark_model(
    name: str,
    *,
    batch_size: int = 1,
    warmup: int = 3,
    iters: int = 20,
    precisions: Sequence[str] = PRECISIONS,
    cuda: bool = True,
    cuda_warmup: int = 10,
    cuda_iters: int = 50,
    references: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
    timing: bool = True,
) -> dict[str, Any]:
    """Everything measured for one registered model, as a JSON-serialisable record (schema in the module doc).

    ``precisions`` are measured on the CPU and, if ``cuda`` and a GPU is present, on CUDA,
    their steps interleaved round-robin (:func:`lightning_modules.profiling.time_steps`);
    ``references`` defaults to :func:`load_references`. ``timing=False``: parameters and MACs only,
    counted on the meta device (shapes, no arithmetic: seconds even for GLARE at 620×420), ``cpu``/``cuda``
    ``None``.
    """
    progress = progress or (lambda stage: None)
    info = model_info(name)
    torch.manual_seed(0)
    built_on = contextlib.nullcontext if timing else lambda: torch.device("meta")  # model and count inputs
    with built_on():
        model = create_model(name)
    params = count_parameters(model)
    record: dict[str, Any] = {
        "model": name,
        "paper": info.paper,
        "task": info.task,
        "input_size": list(info.input_size),
        "batch_size": batch_size,
        "params_total": params.total,
        "params_trainable": params.trainable,
        "weights_mib": round(state_bytes(model) / MIB, 2),
    }
    progress("MACs")
    with built_on():
        one = model_inputs(model, info.input_size, 1)
    if hasattr(model, "example_inputs"):
        record["input_shapes"] = [list(t.shape) for t in _tensors(one)]
    record["macs_conv_linear"] = macs_conv_linear(model, *one)
    by_op = macs_all_by_op(model, *one)
    record["macs_all"] = sum(by_op.values())
    record["macs_all_by_op"] = by_op

    ref = reference_for(name, info.input_size, references)
    record["reference"] = ref
    record["reference_match"] = (
        {key: record[key] == value for key, value in ref["values"].items()
         if key in REFERENCE_LABELS and value is not None}
        if ref
        else None
    )

    record["cpu"] = record["cuda"] = None
    if not timing:
        return record
    x, *rest = model_inputs(model, info.input_size, batch_size)
    timed = _BoundInputs(model, tuple(rest)) if rest else model
    progress("CPU " + " + ".join(precisions))
    record["cpu"] = benchmark_cpu_precisions(timed, x, warmup, iters, precisions)
    record["cuda"] = None
    if cuda and torch.cuda.is_available():
        progress("CUDA " + " + ".join(precisions))
        record["cuda"] = benchmark_cuda_precisions(timed, x, cuda_warmup, cuda_iters, precisions)
    return record


# ---------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------
def run_benchmarks(
    names: Sequence[str],
    *,
    command: str,
    batch_size: int = 1,
    warmup: int = 3,
    iters: int = 20,
    precisions: Sequence[str] = PRECISIONS,
    cuda: bool = True,
    cuda_warmup: int = 10,
    cuda_iters: int = 50,
    threads: int | None = None,
    timing: bool = True,
) -> dict[str, Any]:
    """The ``benchmarks.json`` document of ``names``, with a progress bar over the models.

    ``threads``: ``torch.set_num_threads`` first (default: PyTorch's choice). A model that
    raises is recorded with its traceback (``"error"``) and the others go on. ``timing=False``:
    parameters and MACs only (:func:`benchmark_model`).
    """
    if batch_size < 1 or iters < 1 or warmup < 0 or cuda_iters < 1 or cuda_warmup < 0:
        raise ValueError("batch size and iterations must be >= 1 and warm-up steps >= 0")
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    references = load_references()  # a broken reference file fails before any timing
    if threads:
        torch.set_num_threads(threads)
    # before the run: the date and the load average are the starting ones
    document: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **provenance(), "command": command,
                                "machine": machine()}
    started = time.perf_counter()
    records = []
    bar = tqdm(names, desc="benchmark", unit="model")
    for name in bar:
        bar.set_postfix_str(name)
        try:
            record = benchmark_model(
                name,
                batch_size=batch_size,
                warmup=warmup,
                iters=iters,
                precisions=precisions,
                cuda=cuda,
                cuda_warmup=cuda_warmup,
                cuda_iters=cuda_iters,
                references=references,
                progress=lambda stage, name=name: bar.set_postfix_str(f"{name}: {stage}"),
                timing=timing,
            )
        except Exception:  # one broken model must not lose the other models' numbers
            error = traceback.format_exc()
            tqdm.write(f"{name} failed:\n{error}", file=sys.stderr)
            record = {"model": name, "input_size": list(model_info(name).input_size), "error": error.strip()}
        records.append(record)
    document["settings"] = {
        "batch_size": batch_size,
        "warmup": warmup,
        "iters": iters,
        "precisions": list(precisions),
        "cuda_warmup": cuda_warmup,
        "cuda_iters": cuda_iters,
        "cuda": timing and cuda and torch.cuda.is_available(),
        "timing": timing,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    document["mac_conventions"] = dict(MAC_CONVENTIONS)
    document["models"] = records
    return document


def write_benchmarks(document: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``benchmarks.json`` and its rendering ``benchmarks.md`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "benchmarks.json", out_dir / "benchmarks.md"
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(document), encoding="utf-8")
    return json_path, md_path
