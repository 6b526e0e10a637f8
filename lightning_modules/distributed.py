"""Exact evaluation on N processes: per-case records gathered, de-duplicated and put in a fixed order.

Under DDP Lightning gives every test DataLoader a ``DistributedSampler`` that pads
the case list by repeating cases, so every rank runs the same number of steps
(and a rank never sits idle when there are fewer cases than processes). A task
module therefore keeps one record per case, keyed by the case id, and at the end
of the epoch calls :func:`gather_cases`: every rank's records are gathered, a case
seen twice (a padding repeat) is kept once — after checking that both copies are
equal — and the result is sorted by case id, so the aggregation runs in the same
order on 1 and on N processes and gives the same numbers. Data-set-pooled
statistics (pixels pooled over a test set, a confusion matrix for mIoU) follow the
same rule: pool per-case counts from the gathered records, never counts summed
per rank, which would count the padding repeats twice.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["gather_cases", "world_size"]


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (np.ndarray, torch.Tensor)) or isinstance(b, (np.ndarray, torch.Tensor)):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    return a == b


def gather_cases(local: Mapping[str, Any]) -> dict[str, Any]:
    """All processes' ``{case_id: record}`` merged into one dict sorted by case id.

    Records must be picklable (numpy arrays, floats, dicts). Every rank must call
    this (it is a collective when distributed) and every rank gets the full result.
    A case present on several ranks must have equal records there (a padding
    repeat evaluates the same case with the same weights); otherwise ``RuntimeError``.
    """
    parts: list[Mapping[str, Any]]
    if world_size() > 1:
        parts = [{} for _ in range(world_size())]
        dist.all_gather_object(parts, dict(local))
    else:
        parts = [local]
    merged: dict[str, Any] = {}
    for rank, part in enumerate(parts):
        for case, record in part.items():
            if case in merged and not _equal(merged[case], record):
                raise RuntimeError(f"case {case!r} was evaluated on two processes with different results "
                                   f"(rank {rank}); evaluation must be deterministic")
            merged.setdefault(case, record)
    return {case: merged[case] for case in sorted(merged)}
