"""lightning_modules.allocator (glibc's mallopt, applied once) and the report of reproduce/benchmark_allocator.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_modules import allocator
from tests.conftest import import_reproduce_script


@pytest.fixture
def fresh_allocator(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    return allocator


@pytest.mark.parametrize("value", [None, "0", "false", "off"])
def test_malloc_is_left_alone_unless_switched_on(fresh_allocator, monkeypatch, value):
    if value is None:
        monkeypatch.delenv(allocator.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(allocator.ENV_VAR, value)
    calls = []
    monkeypatch.setattr(allocator, "_glibc", lambda: calls.append(1))
    assert fresh_allocator.keep_freed_memory() is False
    assert calls == []


def test_without_glibc_nothing_is_changed(fresh_allocator, monkeypatch):
    monkeypatch.setenv(allocator.ENV_VAR, "1")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator._glibc() is None
    assert fresh_allocator.keep_freed_memory() is False


FAULTS_OF_FIVE_40MIB_PASSES = """
import resource, sys, torch
from lightning_modules.allocator import keep_freed_memory
print(keep_freed_memory(), file=sys.stderr)
size = 40 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): by default unmapped on every free
for _ in range(12):  # posix_memalign's padding fragments the heap until the holes have merged
    torch.ones(size // 4).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.ones(size // 4).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc")
def test_freed_activations_are_reused_without_new_page_faults():
    """By default each 40 MiB pass faults in ~10k fresh pages; kept memory is reused without any."""
    import os
    import subprocess

    def faults(switch: str) -> int:
        env = dict(os.environ, REPRO_KEEP_FREED_MEMORY=switch, OMP_NUM_THREADS="1")
        run = subprocess.run([sys.executable, "-c", FAULTS_OF_FIVE_40MIB_PASSES], env=env,
                             cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
        assert run.stderr.strip().splitlines()[-1] == str(switch == "1"), run.stderr
        return int(run.stdout)

    pages_per_pass = (40 << 20) // 4096
    assert faults("0") > 4 * pages_per_pass  # glibc defaults: the pages come back fresh every pass
    assert faults("1") < pages_per_pass // 10


def test_the_cli_applies_it(monkeypatch):
    from lightning_modules import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    with pytest.raises(SystemExit):
        cli.ReproCLI(args=["--help"], run=False)
    assert calls == [1]


def test_report_ratios_are_reference_over_variant_per_round():
    bench = import_reproduce_script("benchmark_allocator")

    def arm(times):
        return [{"median_s": t, "minor_faults_per_step": 10, "system_s_per_step": 0.01, "times_s": [t]}
                for t in times]

    results = {"baseline/fp32/default": arm([1.0, 1.2, 1.1]), "ours/fp32/default": arm([0.8, 0.9, 1.0]),
               "ours/fp32/keep": arm([0.5, 0.6, 0.5]), "ours/bf16/default": arm([0.5, 0.5, 0.5]),
               "ours/bf16/keep": arm([0.5, 0.25, 0.5])}
    ratios = bench.summarise(results)
    keep = ratios["fp32: keep vs default allocator (ours)"]
    assert keep["ratio_of_medians"] == pytest.approx(0.9 / 0.5)
    assert keep["median_of_paired_ratios"] == pytest.approx(1.6)
    assert (keep["paired_ratio_min"], keep["paired_ratio_max"]) == (pytest.approx(1.5), pytest.approx(2.0))
    assert ratios["bf16 ours (keep) vs baseline fp32 (default)"]["ratio_of_medians"] == pytest.approx(2.2)
    doc = {"command": "x", "date": "d", "baseline": "a" * 40, "ours": "b" * 40,
           "settings": {"rounds": 3, "steps": 1, "warmup": 0, "threads": 2}, "ratios": ratios, "results": results}
    md = bench.render_markdown(doc)
    assert "| fp32: keep vs default allocator (ours) | 1.80× | 1.60× | 1.50–2.00× |" in md
