"""The whole-set data check as a datamodule method, written once for every datamodule.

A datamodule inherits :class:`CheckedDataModule` and provides ``resolve_root()`` (the data
root), ``data_files(stage, root)`` (the :class:`~datamodules.checks.DataFile` list a stage
reads), ``data_check`` (``"full"`` / ``"fast"`` / ``"off"``), ``num_classes`` and
``synthetic`` (``None`` or an object with ``cache_dir``). Optionally
``cross_file_problems(stage, root, report)``: the problems between files that no
single file shows (a missing partner, two images of a pair that differ in size),
given the per-file report; they go into the same one error.
"""
from __future__ import annotations

import sys

from .checks import CheckReport, check_files, is_rank_zero
from .synthetic import default_cache_dir

__all__ = ["CheckedDataModule", "check_loader_arguments"]


def check_loader_arguments(*, positive: dict[str, int | None], non_negative: dict[str, int], data_dir: object,
                           synthetic: object, data_check: str) -> None:
    """The constructor checks every datamodule shares; raises ``ValueError`` naming the argument.

    ``positive``: sizes that must be >= 1 (``None`` = not set, allowed); ``non_negative``: counts
    and seeds that must be >= 0; ``data_dir`` and ``synthetic`` exclude each other; ``data_check``
    is ``off`` | ``fast`` | ``full``.
    """
    for name, value in positive.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    for name, value in non_negative.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if synthetic is not None and data_dir is not None:
        raise ValueError("give either data_dir (the real data) or synthetic (a generated stand-in), not both")
    if data_check not in ("off", "fast", "full"):
        raise ValueError(f"data_check must be 'off', 'fast' or 'full', got {data_check!r}")


class CheckedDataModule:
    """Mixin: :meth:`check_data`, which ``setup()`` calls before anything is read."""

    def check_data(
        self, stage: str | None = None, level: str | None = None, *, progress: bool | None = None,
        workers: int | None = None, use_cache: bool = True, print_summary: bool | None = None,
    ) -> CheckReport:
        """Check every file ``stage`` reads (``None``: all) at ``level`` (default ``data_check``, else ``"full"``).

        Raises one :class:`~datamodules.checks.DataCheckError` listing every broken file.
        The progress bar (stderr) shows on rank 0 only, and not when the attached
        trainer has no progress bar; results are cached under the cache folder
        (``$REPRO_CACHE_DIR``, or the synthetic set's ``cache_dir``) so unchanged files
        are not read again. The one-line summary goes to stderr when ``print_summary``
        (default: when the progress bar shows).
        """
        root = self.resolve_root()
        level = level or (self.data_check if self.data_check != "off" else "full")
        trainer = getattr(self, "trainer", None)
        if progress is None and trainer is not None:
            progress = bool(trainer.is_global_zero and trainer.progress_bar_callback is not None)
        elif progress is None:
            progress = is_rank_zero()
        cache_dir = self.synthetic.cache_dir if self.synthetic is not None and self.synthetic.cache_dir else None
        files = self.data_files(stage, root)
        report = check_files(files, level=level, num_classes=self.num_classes, root=root,
                             cache_dir=cache_dir or default_cache_dir(), use_cache=use_cache, progress=progress,
                             workers=workers, raise_on_error=False)
        across = getattr(self, "cross_file_problems", None)  # optional: problems between files (pairs)
        if across is not None:
            report.problems.extend(across(stage, root, report))
        report.raise_if_broken()
        if (progress if print_summary is None else print_summary) and files:
            print(report.summary(), file=sys.stderr, flush=True)
        return report
