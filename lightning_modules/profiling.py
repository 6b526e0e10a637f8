"""Timing and peak memory of one model's forward and forward+backward steps (CPU and CUDA).

* Two steps (:func:`make_steps`): ``fwd`` (eval mode, ``torch.no_grad()``) and
  ``fwd_bwd``, the training step without the optimiser (train mode, forward,
  backward of :func:`output_loss`).
* Two precisions (:data:`PRECISIONS`, Lightning's names): ``"32-true"`` (float32)
  and ``"bf16-mixed"`` (the step under ``torch.autocast(device, dtype=torch.bfloat16)``:
  weights stay float32, autocast casts them inside every step, as in mixed-precision
  training).
* Throughput: ``warmup`` untimed steps, then ``iters`` timed ones; the median step
  time gives images/s = batch / median. The ``*_precisions`` functions time every
  step of every precision round-robin (:func:`time_steps`), so the load of a shared
  machine does not favour the precision that happened to run in a quiet minute.
* CPU peak memory: one extra, untimed step under
  ``torch.profiler.profile(profile_memory=True)``; the running sum of the recorded
  allocations and frees, in time order, is the tensor memory the step allocated on
  top of what existed before it, and its maximum is reported (the CPU analogue of
  ``torch.cuda.max_memory_allocated()`` minus the memory allocated before the step).
  Memory that bypasses PyTorch's allocator (oneDNN/BLAS scratch, Python objects) is
  not seen, so it is a deterministic lower bound on the process's RSS growth.
* CUDA: synchronised around each step, ``cudnn.benchmark = True``; the float32
  record says whether TF32 was allowed (it changes float32 throughput).
"""
from __future__ import annotations

import os

# Kineto (the profiler back-end) logs start/stop lines and "no GPU" errors on CPU-only machines.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

__all__ = [
    "PRECISIONS", "autocast_for", "output_loss", "make_steps", "time_step", "time_steps", "summarize_times",
    "cpu_peak_memory",
    "benchmark_cpu", "benchmark_cpu_precisions", "benchmark_cuda", "benchmark_cuda_precisions", "state_bytes",
]

MIB = 2**20

#: The measured precisions, named as Lightning's ``Trainer(precision=...)``.
PRECISIONS = ("32-true", "bf16-mixed")


def autocast_for(device_type: str, precision: str) -> Callable[[], Any] | None:
    """A factory of the autocast context of ``precision`` on ``device_type`` (``None`` for float32)."""
    if precision == "32-true":
        return None
    if precision == "bf16-mixed":
        return lambda: torch.autocast(device_type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")


def _iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _iter_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _iter_tensors(value)


def output_loss(output: Any) -> torch.Tensor:
    """``output.float().mean()``, summed over every floating-point tensor of a tuple/list/dict output."""
    tensors = [t for t in _iter_tensors(output) if t.is_floating_point()]
    if not tensors:
        raise TypeError(f"model output has no floating-point tensor: {type(output).__name__}")
    return sum(t.float().mean() for t in tensors)


def make_steps(model: nn.Module, x: torch.Tensor, autocast: Any = None) -> dict[str, Callable[[], None]]:
    """The two measured steps: ``fwd`` (eval, no_grad) and ``fwd_bwd`` (train, backward of :func:`output_loss`)."""

    def ctx():
        return autocast() if autocast is not None else nullcontext()

    def fwd() -> None:
        model.eval()
        with torch.no_grad(), ctx():
            model(x)

    def fwd_bwd() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        with ctx():
            loss = output_loss(model(x))
        loss.backward()

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def time_step(step: Callable[[], None], warmup: int, iters: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds per call of ``step`` for ``iters`` timed calls after ``warmup`` untimed ones."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def cpu_peak_memory(step: Callable[[], None]) -> int | None:
    """Peak bytes allocated by ``step`` through PyTorch's CPU allocator, above the state before it.

    Runs ``step`` once under ``torch.profiler.profile(profile_memory=True)``, orders the
    recorded allocation events (positive sizes) and frees (negative sizes) by time and
    returns the maximum of their running sum (0 if the step never allocates more than it
    frees). Returns ``None`` if this PyTorch build does not expose the allocation events.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        roots = prof.profiler.kineto_results.experimental_event_tree()
    except AttributeError:  # pragma: no cover - depends on the PyTorch build
        return None
    events: list[tuple[int, int]] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        fields = node.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == "cpu":
            events.append((node.start_time_ns, int(fields.alloc_size)))
        stack.extend(node.children)
    events.sort()
    current = peak = 0
    for _, size in events:
        current += size
        peak = max(peak, current)
    return peak


def summarize_times(times: list[float], batch: int) -> dict[str, Any]:
    """``{"median_ms", "min_ms", "img_per_s" (batch / median), "times_ms"}`` of step times in seconds."""
    median = statistics.median(times)
    return {
        "median_ms": round(median * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "img_per_s": round(batch / median, 3),
        "times_ms": [round(t * 1e3, 3) for t in times],
    }


def state_bytes(model: nn.Module) -> int:
    """Bytes held by the parameters and buffers of ``model``."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def time_steps(steps: Mapping[Any, Callable[[], None]], warmup: int, iters: int,
               sync: Callable[[], None] | None = None) -> dict[Any, list[float]]:
    """:func:`time_step` for several steps at once, interleaved round-robin.

    Each warm-up and timed round runs every step once, in order, so a busy phase of a
    shared machine slows all of them alike and their ratios survive it (timing them
    one after another would charge it to whichever step ran then).
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync()
    times: dict[Any, list[float]] = {key: [] for key in steps}
    for _ in range(iters):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            sync()
            times[key].append(time.perf_counter() - start)
    return times


def _precision_steps(model: nn.Module, x: torch.Tensor, device_type: str,
                     precisions: Sequence[str]) -> dict[tuple[str, str], Callable[[], None]]:
    if not precisions or len(set(precisions)) != len(precisions):
        raise ValueError(f"precisions must be distinct and not empty, got {list(precisions)}")
    return {(precision, key): step for precision in precisions
            for key, step in make_steps(model, x, autocast=autocast_for(device_type, precision)).items()}


def benchmark_cpu_precisions(model: nn.Module, x: torch.Tensor, warmup: int, iters: int,
                             precisions: Sequence[str] = PRECISIONS) -> dict[str, dict[str, Any]]:
    """Throughput and peak memory of both steps on the CPU in each of ``precisions``, keyed by precision.

    All steps of all precisions are timed together, round-robin (:func:`time_steps`).
    """
    steps = _precision_steps(model, x, "cpu", precisions)
    times = time_steps(steps, warmup, iters)
    threads = torch.get_num_threads()
    results: dict[str, dict[str, Any]] = {
        precision: {"precision": precision, "threads": threads, "interleaved_with": list(precisions)}
        for precision in precisions
    }
    for (precision, key), step in steps.items():
        model.zero_grad(set_to_none=True)  # so the step frees nothing that was allocated before profiling
        peak = cpu_peak_memory(step)
        results[precision][key] = summarize_times(times[precision, key], x.shape[0])
        results[precision][key]["peak_mem_mib"] = None if peak is None else round(peak / MIB, 2)
    model.zero_grad(set_to_none=True)
    return results


def benchmark_cpu(model: nn.Module, x: torch.Tensor, warmup: int, iters: int,
                  precision: str = "32-true") -> dict[str, Any]:
    """Throughput and peak memory of both steps on the CPU in one ``precision`` (see :data:`PRECISIONS`)."""
    return benchmark_cpu_precisions(model, x, warmup, iters, (precision,))[precision]


def benchmark_cuda_precisions(model: nn.Module, x: torch.Tensor, warmup: int, iters: int,
                              precisions: Sequence[str] = PRECISIONS) -> dict[str, dict[str, Any]]:
    """:func:`benchmark_cpu_precisions` on the current CUDA device (model and x are moved there and back)."""
    device = torch.device("cuda", torch.cuda.current_device())
    model = model.to(device)
    x = x.to(device)
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        steps = _precision_steps(model, x, "cuda", precisions)
        times = time_steps(steps, warmup, iters, sync=torch.cuda.synchronize)
        results: dict[str, dict[str, Any]] = {}
        for precision in precisions:
            results[precision] = {
                "precision": precision,
                "device": torch.cuda.get_device_name(device),
                "cudnn_benchmark": True,
                "interleaved_with": list(precisions),
            }
            if precision == "32-true":  # TF32 changes float32 throughput; "highest" = no TF32 in matmuls
                results[precision]["float32_matmul_precision"] = torch.get_float32_matmul_precision()
                results[precision]["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        for (precision, key), step in steps.items():
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated(device)
            results[precision][key] = summarize_times(times[precision, key], x.shape[0])
            results[precision][key]["peak_mem_mib"] = round((peak - before) / MIB, 2)
            results[precision][key]["peak_mem_abs_mib"] = round(peak / MIB, 2)
        model.zero_grad(set_to_none=True)
    finally:
        torch.backends.cudnn.benchmark = previous_benchmark
        model.to("cpu")
        torch.cuda.empty_cache()
    return results


def benchmark_cuda(model: nn.Module, x: torch.Tensor, warmup: int, iters: int,
                   precision: str = "bf16-mixed") -> dict[str, Any]:
    """Throughput and peak memory of both steps on the current CUDA device in one ``precision``."""
    return benchmark_cuda_precisions(model, x, warmup, iters, (precision,))[precision]
