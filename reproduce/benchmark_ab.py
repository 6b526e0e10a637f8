"""A/B timing of CSWin-UNet's training step: a baseline commit against the working tree, in one process.

    python reproduce/benchmark_ab.py                          # baseline = DEFAULT_BASELINE, 12 rounds
    python reproduce/benchmark_ab.py --baseline HEAD~3 --rounds 20 --threads 2

Both sides build the paper's ``cswin_unet`` (224², 9 classes) and run the SAME weights:
the baseline's ``models`` package is extracted from the commit (``git archive``) into a
temporary folder and imported under the name ``baseline_models``; the working tree's
``models`` is imported as usual, and the baseline state_dict is loaded into it
(strict: the keys are the same). The outputs are compared first (eval logits, and the
gradients of one training step with the same DropPath masks).

Timed steps (seconds per step, batch 2 of 1-channel 224² slices), each for the baseline in
float32 and for ours in float32 and under CPU bf16 autocast (``bf16-mixed``: weights stay
float32; the baseline's bf16 train step too):

* ``train``: ``zero_grad(set_to_none=True)`` → forward → ``0.4·CE + 0.6·Dice``
  (``lightning_modules.losses.CEDiceLoss``, the release's loss) → backward → SGD step
  (lr 0.05, momentum 0.9, weight decay 1e-4, the release's optimiser);
* ``fwdbwd``: forward → backward of ``output.float().mean()``: the model's own cost, without
  the loss and the optimiser (which are the same code on both sides);
* ``infer``: eval mode, ``torch.inference_mode()``, forward only.

Every round runs every variant once, in an order that rotates and reverses from round
to round, so a shared machine's changing load hits both sides alike; the report gives
the median step time of each variant and three ratios per comparison: of the medians, the
median of the per-round ratios (paired within a round) and of the minimums (best round,
the unloaded-machine estimate). Absolute CPU times are only comparable within one run
(other processes share the CPU); the ratios are the result.
Writes ``results/cswin_unet/train_step_ab.{json,md}`` (the Markdown is rendered from the JSON).
"""
import _bootstrap  # noqa: F401, I001  (first: puts the repository root on sys.path)

import argparse
import importlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ablations.framework.provenance import describe_cpu, machine

REPO_ROOT = Path(_bootstrap.REPO_ROOT)
#: The tree before the training-step speed-ups (issue "Scale out and hold up", item 6).
DEFAULT_BASELINE = "508083adac0ecc457817bdae48b6ff48d6524f88"
BATCH, IMG, CLASSES = 2, 224, 9
LOSS = "0.4*CE + 0.6*Dice (lightning_modules.losses.CEDiceLoss)"
OPTIMIZER = ("SGD(lr=0.05, momentum=0.9, weight_decay=1e-4; ours fused=True, as the recipe, the baseline "
             "the per-parameter loop), zero_grad(set_to_none=True)")
#: The baseline's fp32 train step relative to the released code's, measured before this A/B (issue item 6).
BASELINE_VS_RELEASE = (0.84, 0.98)
STEP_KINDS = {
    "train": f"train mode, forward, {LOSS}, backward, {OPTIMIZER}",
    "fwdbwd": "train mode, forward, backward of output.float().mean() (no loss, no optimiser)",
    "infer": "eval mode, torch.inference_mode(), forward only",
}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def extract_models(commit: str, dest: Path) -> None:
    """Write the ``models/`` folder of ``commit`` under ``dest`` (nothing else of the tree is needed)."""
    tar = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit, "models"],
                         check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")


def import_models_as(root: Path, alias: str):
    """Import ``root/models`` as the package ``alias`` without disturbing an imported ``models``.

    The package's own absolute imports (``from models.layers import ...``) resolve while it
    loads; afterwards every ``models.*`` module it created is re-registered as ``alias.*``.
    """
    def ours(name: str) -> bool:
        return name == "models" or name.startswith("models.")

    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    sys.path.insert(0, str(root))
    try:
        importlib.import_module("models")
        loaded = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    finally:
        sys.path.remove(str(root))
        sys.modules.update(saved)
    for name, module in loaded.items():
        sys.modules[alias + name[len("models"):]] = module
    return sys.modules[alias]


def random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic input: ``BATCH`` random 1-channel ``IMG``² slices and random labels of ``CLASSES`` classes."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, 1, IMG, IMG, generator=gen),
            torch.randint(0, CLASSES, (BATCH, IMG, IMG), generator=gen))


def release_loss():
    """The release's training loss, 0.4·CE + 0.6·Dice."""
    from lightning_modules.losses import CEDiceLoss

    return CEDiceLoss(CLASSES, ce_weight=0.4, dice_weight=0.6)


def build_pair(baseline_root: Path, seed: int):
    import_models_as(baseline_root, "baseline_models")
    from models import create_model  # the working tree

    torch.manual_seed(seed)
    baseline = sys.modules["baseline_models.cswin_unet"].cswin_unet(num_classes=CLASSES, img_size=IMG)
    ours = create_model("cswin_unet", num_classes=CLASSES, img_size=IMG)
    ours.load_state_dict(baseline.state_dict(), strict=True)
    n_a = sum(p.numel() for p in baseline.parameters())
    n_b = sum(p.numel() for p in ours.parameters())
    if n_a != n_b:
        raise SystemExit(f"parameter counts differ: baseline {n_a}, ours {n_b}")
    return baseline, ours, n_b


def clone_model(model: torch.nn.Module, factory) -> torch.nn.Module:
    copy = factory()
    copy.load_state_dict(model.state_dict(), strict=True)
    return copy


def agreement(baseline, ours, x, y, loss_fn) -> dict:
    """Max |baseline - ours| of eval logits and of the gradients of one train step (same DropPath masks)."""
    baseline.eval(), ours.eval()
    with torch.no_grad():
        la, lb = baseline(x), ours(x)
    result = {"eval_logits_max_abs_diff": (la - lb).abs().max().item(), "eval_logits_max_abs": la.abs().max().item()}
    grads = []
    for model in (baseline, ours):
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1234)  # the same DropPath masks on both sides
        loss_fn(model(x), y).backward()
        grads.append({name: p.grad.detach().clone() for name, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    diff = max((grads[0][k] - grads[1][k]).abs().max().item() for k in grads[0])
    scale = max(g.abs().max().item() for g in grads[0].values())
    result.update(train_grads_max_abs_diff=diff, train_grads_max_abs=scale)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        lc = ours.eval()(x).float()
    result["ours_bf16_vs_fp32_eval_logits_max_abs_diff"] = (lc - lb).abs().max().item()
    return result


def make_train_step(model, x, y, loss_fn, bf16: bool, kind: str = "train", fused: bool = True):
    """``train``: the full step with the release's loss and optimiser; ``fwdbwd``: forward + backward
    of ``output.float().mean()`` only (no loss, no optimiser: the model's own cost). ``fused``: the
    recipe's one-kernel SGD update (False: the per-parameter loop the release runs on the CPU)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, fused=fused)

    def step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            out = model(x)
            loss = loss_fn(out, y) if kind == "train" else out.float().mean()
        loss.backward()
        if kind == "train":
            optimizer.step()

    return step


def make_infer_step(model, x, bf16: bool):
    def step() -> None:
        model.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            model(x)

    return step


def run_rounds(steps: dict, rounds: int, warmup: int
               ) -> tuple[dict[str, list[float]], list[float], dict[str, list[float]]]:
    """Time every step once per round; returns the seconds per step, the 1-min load average per round
    and the seconds of each warm-up call (a compiled step compiles in its first).

    Steps of the same kind (``train``, ``fwdbwd``, ``infer``) run back to back, so the pairs
    that are compared ran seconds apart; the order inside a kind and the order of the kinds
    rotate from round to round, and every other round runs reversed.
    """
    names = list(steps)
    warm = {name: [] for name in names}
    for w in range(warmup):
        for name in names:
            start = time.perf_counter()
            steps[name]()
            warm[name].append(time.perf_counter() - start)
            print(f"warm-up {w + 1}/{warmup}: {name} {warm[name][-1]:.1f}s", flush=True)
    kinds = list(dict.fromkeys(name.rsplit("/", 1)[1] for name in names))
    groups = {kind: [n for n in names if n.endswith("/" + kind)] for kind in kinds}
    times = {name: [] for name in names}
    loads = []
    for r in range(rounds):
        order = []
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            group = groups[kind]
            order += group[r % len(group):] + group[:r % len(group)]
        if r % 2:
            order.reverse()
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{rounds} (load {loads[-1]:.1f}): "
              + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), flush=True)
    return times, loads, warm


#: (label, numerator = the slower reference, denominator): ratio > 1 means the denominator is faster.
COMPARISONS = [
    ("fp32 train step: ours vs baseline", "baseline/fp32/train", "ours/fp32/train"),
    ("bf16 train step (ours) vs baseline fp32", "baseline/fp32/train", "ours/bf16/train"),
    ("bf16 train step: ours vs baseline bf16", "baseline/bf16/train", "ours/bf16/train"),
    ("fp32 fwd+bwd: ours vs baseline", "baseline/fp32/fwdbwd", "ours/fp32/fwdbwd"),
    ("bf16 fwd+bwd (ours) vs baseline fp32", "baseline/fp32/fwdbwd", "ours/bf16/fwdbwd"),
    ("fp32 train step, compiled: ours vs baseline", "baseline/fp32/train", "ours/fp32-compiled/train"),
    ("bf16 train step, compiled (ours) vs baseline fp32", "baseline/fp32/train", "ours/bf16-compiled/train"),
    ("fp32 inference: ours vs baseline", "baseline/fp32/infer", "ours/fp32/infer"),
    ("bf16 inference (ours) vs baseline fp32", "baseline/fp32/infer", "ours/bf16/infer"),
]


def paired_ratios(ref: str, new: str, times: dict[str, list[float]]) -> dict:
    """``times[ref]`` over ``times[new]`` (paired by round): of the medians, per round, and of the minimums."""
    paired = [a / b for a, b in zip(times[ref], times[new], strict=True)]
    return {"reference": ref, "variant": new,
            "ratio_of_medians": statistics.median(times[ref]) / statistics.median(times[new]),
            "median_of_paired_ratios": statistics.median(paired),
            "paired_ratio_min": min(paired), "paired_ratio_max": max(paired),
            "ratio_of_minimums": min(times[ref]) / min(times[new])}


def summarise(times: dict[str, list[float]]) -> tuple[dict, dict]:
    """Medians per variant, and per comparison the ratios of medians, of minimums and of paired rounds."""
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {label: paired_ratios(ref, new, times) for label, ref, new in COMPARISONS
              if ref in times and new in times}
    return medians, ratios


def ratio_table(ratios: dict[str, dict], minimums: bool = True) -> list[str]:
    """Markdown rows of :func:`summarise`'s ratios (the ratio-of-minimums column when ``minimums``)."""
    last = " ratio of minimums |" if minimums else ""
    rows = ["| comparison | ratio of medians | median of per-round ratios | per-round range |" + last,
            "|---|---|---|---|" + ("---|" if minimums else "")]
    for label, r in ratios.items():
        cell = f" {r['ratio_of_minimums']:.2f}× |" if minimums else ""
        rows.append(f"| {label} | {r['ratio_of_medians']:.2f}× | {r['median_of_paired_ratios']:.2f}× | "
                    f"{r['paired_ratio_min']:.2f}–{r['paired_ratio_max']:.2f}× |" + cell)
    return rows


def cpu_line(doc: dict) -> str:
    """``", AMD EPYC with avx512_bf16, ..."`` for a report with a ``machine`` entry ("" for older JSONs)."""
    return f", {describe_cpu(doc['machine'])}" if "machine" in doc else ""


def render_markdown(doc: dict) -> str:
    s = doc["settings"]
    lines = [
        "# CSWin-UNet training step: A/B against the baseline commit",
        "",
        f"Written by `{doc['command']}` on {doc['date']}. Baseline `{doc['baseline']['commit'][:12]}`, "
        f"ours `{doc['ours']['commit'][:12]}`"
        + (" plus uncommitted changes under models/" if doc["ours"]["models_dirty"] else "") + ".",
        "",
        f"{s['batch']}×1×{s['img']}² synthetic input (random slices and labels, no data set), "
        f"{s['classes']} classes, {s['threads']} PyTorch threads "
        f"({s['cpu_count']} CPUs{cpu_line(doc)}, load average {s['loadavg_start'][0]:.1f} at the start, "
        f"{s['loadavg_end'][0]:.1f} at the end), {s['rounds']} rounds after {s['warmup']} warm-up "
        "round(s), variant order rotated and reversed per round. Steps: "
        + "; ".join(f"`{k}` = {v}" for k, v in s["steps"].items()) + ".",
        "",
        "Absolute times are only comparable within this run (the CPU is shared); the ratios are the result.",
        "",
        "Ratio > 1: the variant is faster than the reference. On a 2-core machine shared with other jobs",
        "a 2-thread step alternates between two regimes: with the cores free it is compute-bound; with",
        "them oversubscribed every parallel region waits for a descheduled thread, and the step time",
        "follows the number of parallel ops instead. The median of the per-round ratios pairs steps that",
        "ran seconds apart; the ratio of the minimums (best of all rounds) is the unloaded-machine estimate.",
        "",
        *ratio_table(doc["ratios"]),
    ]
    lines += ["", "| variant | median s/step | min s/step |", "|---|---|---|"]
    lines += [f"| {name} | {value:.3f} | {min(doc['times_s'][name]):.3f} |" for name, value in doc["medians_s"].items()]
    loads = doc["round_loadavg"]
    lines += ["", f"1-minute load average per round: {', '.join(f'{v:.1f}' for v in loads)}."]
    compiled = {n: w for n, w in doc.get("warmup_s", {}).items() if "compiled" in n}
    if compiled:
        later = "; ".join(f"{n} {', '.join(f'{t:.2f}' for t in w[1:])} s" for n, w in compiled.items() if w[1:])
        lines += ["", "Compiled steps (`nn.Module.compile`, Inductor, default mode) compile in their first call: "
                  + "; ".join(f"{n} {w[0]:.0f} s" for n, w in compiled.items())
                  + (f" (later warm-up calls: {later})" if later else "") + "."]
    a = doc["agreement"]
    lines += [
        "",
        "Same weights on both sides (baseline state_dict loaded strictly into ours, "
        f"{doc['num_params']:,} parameters):",
        "",
        f"- eval logits: max |baseline − ours| = {a['eval_logits_max_abs_diff']:.3g} "
        f"(max |logit| {a['eval_logits_max_abs']:.3g});",
        f"- gradients of one train step (same DropPath masks): max |Δ| = {a['train_grads_max_abs_diff']:.3g} "
        f"(max |grad| {a['train_grads_max_abs']:.3g});",
        f"- ours, bf16 autocast vs float32 eval logits: max |Δ| = "
        f"{a['ours_bf16_vs_fp32_eval_logits_max_abs_diff']:.3g}.",
        "",
        "The released code cannot run here. The baseline's fp32 step was measured earlier at "
        f"{BASELINE_VS_RELEASE[0]}–{BASELINE_VS_RELEASE[1]}× the release's speed, so against the release's fp32 "
        "each of our steps is about that factor times its ratio to the baseline's fp32 above"
        + "".join(f"; {label}: {r * BASELINE_VS_RELEASE[0]:.2f}–{r * BASELINE_VS_RELEASE[1]:.2f}×"
                  for label, r in _release_ratios(doc)) + ".",
        "",
    ]
    if "bf16" not in s.get("precisions", ["fp32", "bf16"]):
        lines += ["bf16 was not timed (`--precisions fp32`).", ""]
    return "\n".join(lines)


#: Our steps estimated against the release's fp32, from the median of their per-round ratios.
RELEASE_ESTIMATES = (("fp32", "fp32 train step: ours vs baseline"),
                     ("bf16", "bf16 train step (ours) vs baseline fp32"),
                     ("fp32 compiled", "fp32 train step, compiled: ours vs baseline"),
                     ("bf16 compiled", "bf16 train step, compiled (ours) vs baseline fp32"))


def _release_ratios(doc: dict) -> list[tuple[str, float]]:
    """``[(label, median of per-round ratios to the baseline's fp32)]`` of the train steps that ran."""
    return [(label, doc["ratios"][key]["median_of_paired_ratios"]) for label, key in RELEASE_ESTIMATES
            if key in doc["ratios"]]


def write_report(doc: dict, out_dir: Path, stem: str, render) -> None:
    """``out_dir/<stem>.json`` from ``doc`` and ``out_dir/<stem>.md`` rendered from it; prints the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path.write_text(render(doc))
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="baseline commit (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=12, help="timed rounds (every variant once per round)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--steps", nargs="+", choices=STEP_KINDS, default=list(STEP_KINDS),
                        help="which steps to time (default: all): " + "; ".join(f"{k}: {v}" for k, v in
                                                                            STEP_KINDS.items()))
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                        help="which of our precisions to time (default: both); bf16 is many times slower than "
                             "fp32 on a CPU without AVX-512 BF16 or AMX")
    parser.add_argument("--no-baseline-bf16", action="store_true", help="skip the baseline's bf16 train step")
    parser.add_argument("--compile", action="store_true",
                        help="also time our train step with the network compiled (nn.Module.compile, the recipes' "
                             "model.compile switch), in fp32 and bf16; compiling takes minutes per precision")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "results" / "cswin_unet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only re-render the Markdown next to an existing train_step_ab.json")
    args = parser.parse_args(argv)
    if args.render is not None:
        md_path = args.render.with_suffix(".md")
        md_path.write_text(render_markdown(json.loads(args.render.read_text())))
        print(f"wrote {md_path}")
        return 0
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(args.threads)
    baseline_commit = git("rev-parse", "--verify", args.baseline + "^{commit}")
    loss_fn = release_loss()
    with tempfile.TemporaryDirectory(prefix="cswin_ab_") as tmp:
        extract_models(baseline_commit, Path(tmp))
        baseline, ours, num_params = build_pair(Path(tmp), args.seed)
        base_factory = sys.modules["baseline_models.cswin_unet"].cswin_unet
        from models import create_model

        x, y = random_batch(args.seed)
        checks = agreement(baseline, ours, x, y, loss_fn)
        print(json.dumps(checks, indent=1), flush=True)
        def ours_copy():
            return clone_model(ours, lambda: create_model("cswin_unet", num_classes=CLASSES, img_size=IMG))

        def baseline_copy():
            return clone_model(baseline, lambda: base_factory(num_classes=CLASSES, img_size=IMG))

        bf16 = "bf16" in args.precisions
        steps = {}
        for kind in args.steps:
            if kind == "infer":
                infer_a, infer_b = baseline_copy(), ours_copy()
                steps.update({
                    "baseline/fp32/infer": make_infer_step(infer_a, x, bf16=False),
                    "ours/fp32/infer": make_infer_step(infer_b, x, bf16=False),
                })
                if bf16:
                    steps["ours/bf16/infer"] = make_infer_step(infer_b, x, bf16=True)
                continue
            steps[f"baseline/fp32/{kind}"] = make_train_step(baseline_copy(), x, y, loss_fn, False, kind, fused=False)
            steps[f"ours/fp32/{kind}"] = make_train_step(ours_copy(), x, y, loss_fn, False, kind)
            if bf16:
                steps[f"ours/bf16/{kind}"] = make_train_step(ours_copy(), x, y, loss_fn, True, kind)
            if bf16 and not args.no_baseline_bf16 and kind == "train":
                steps["baseline/bf16/train"] = make_train_step(baseline_copy(), x, y, loss_fn, True, kind, fused=False)
            if args.compile and kind == "train":
                for precision, bf16_compiled in (("fp32", False), ("bf16", True)):
                    if precision not in args.precisions:
                        continue
                    compiled = ours_copy()
                    compiled.compile()
                    steps[f"ours/{precision}-compiled/train"] = make_train_step(compiled, x, y, loss_fn, bf16_compiled,
                                                                                kind)
        load_start = os.getloadavg()
        times, round_loads, warmup_s = run_rounds(steps, args.rounds, args.warmup)
        load_end = os.getloadavg()
    medians, ratios = summarise(times)
    doc = {
        "command": " ".join(["python reproduce/benchmark_ab.py", *argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "baseline": {"commit": baseline_commit, "source": "git archive <commit> models, imported as baseline_models"},
        "ours": {"commit": git("rev-parse", "HEAD"),
                 "models_dirty": bool(git("status", "--porcelain", "--", "models"))},
        "settings": {"batch": BATCH, "img": IMG, "classes": CLASSES, "seed": args.seed,
                     "threads": torch.get_num_threads(),
                     "rounds": args.rounds, "warmup": args.warmup, "cpu_count": os.cpu_count(),
                     "loadavg_start": load_start, "loadavg_end": load_end,
                     "steps": {k: STEP_KINDS[k] for k in args.steps}, "compiled": args.compile,
                     "precisions": args.precisions,
                     "torch": torch.__version__, "python": platform.python_version(),
                     "mkldnn": torch.backends.mkldnn.is_available()},
        "machine": machine(),
        "num_params": num_params,
        "agreement": checks,
        "note": "absolute CPU times are only comparable within this run; ratio > 1: the variant is faster",
        "ratios": ratios,
        "medians_s": medians,
        "times_s": times,
        "round_loadavg": round_loads,
        "warmup_s": warmup_s,
    }
    write_report(doc, args.out_dir, "train_step_ab", render_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
