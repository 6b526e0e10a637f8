"""Attention collapse per layer for several attention types of one recipe: a JSON, a plot, a W&B run.

    python reproduce/attention_collapse.py --config reproduce/configs/convformer/acdc.yaml \
        --config reproduce/configs/_base_/synthetic_acdc.yaml --config reproduce/configs/convformer/quick.yaml
    python reproduce/attention_collapse.py --config reproduce/configs/convformer/acdc.yaml \
        --attention vanilla convformer --checkpoint vanilla=runs/a/last.ckpt --checkpoint convformer=runs/b/last.ckpt

For each ``--attention`` type (default: all five) the recipe's network is built with
``model.init_args.net.init_args.attention`` set to it, loaded from its ``--checkpoint``
(a Lightning checkpoint; without one the network keeps its random initialisation,
which shows the architecture's own tendency), and run on the first ``--images`` test
images. The score of a layer is the mean pairwise cosine similarity of its attention
rows (:mod:`lightning_modules.attention_collapse`). Writes
``<out>/attention_collapse.json`` and ``.png`` (layers on the x axis, one line per
attention type) and logs both to a W&B run (offline unless ``WANDB_MODE=online``).
Any other argument goes to the recipe's CLI (``--data.init_args.data_dir ...``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import _bootstrap  # noqa: F401  (the repository root on sys.path)
import torch

from datamodules.errors import exit_on_dataset_error
from lightning_modules.attention_collapse import measure_attention_collapse, plot_collapse
from lightning_modules.cli import build_from_recipe, configure_wandb_defaults
from models.layers.vit_variants import ATTENTION_TYPES


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attention", nargs="+", choices=ATTENTION_TYPES, default=list(ATTENTION_TYPES))
    parser.add_argument("--checkpoint", action="append", default=[], metavar="TYPE=PATH",
                        help="a Lightning checkpoint per attention type")
    parser.add_argument("--images", type=int, default=4, help="test images to measure on (default 4)")
    parser.add_argument("--out", type=Path, default=Path("runs/attention_collapse"))
    parser.add_argument("--wandb-project", default="repro-seg")
    own, rest = parser.parse_known_args(list(argv))
    if not any(a == "--config" or a.startswith("--config=") for a in rest):
        parser.error("give the recipe: --config <recipe.yaml> [--config <more.yaml>]")
    checkpoints = {}
    for item in own.checkpoint:
        kind, sep, path = item.partition("=")
        if not sep or kind not in own.attention:
            parser.error(f"--checkpoint {item!r}: expected TYPE=PATH with TYPE one of {own.attention}")
        checkpoints[kind] = Path(path)
    own.checkpoint = checkpoints
    return own, rest


def _test_images(datamodule, count: int) -> torch.Tensor:
    datamodule.setup("test")
    dataset = datamodule.test_dataloader().dataset
    return torch.stack([torch.as_tensor(dataset[i]["image"]) for i in range(min(count, len(dataset)))])


def measure(attention: str, recipe_args: list[str], checkpoint: Path | None, count: int) -> dict[str, float]:
    override = ["--model.init_args.net.init_args.attention", attention]
    model, datamodule = build_from_recipe([*recipe_args, *override], with_model=True)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    return measure_attention_collapse(model.net, _test_images(datamodule, count))


def main(argv: Sequence[str] | None = None) -> int:
    own, rest = parse_args(sys.argv[1:] if argv is None else argv)
    configure_wandb_defaults()
    scores: dict[str, dict[str, float]] = {}
    with exit_on_dataset_error():
        for attention in own.attention:
            scores[attention] = measure(attention, rest, own.checkpoint.get(attention), own.images)
            print(f"{attention:12s} " + " ".join(f"{v:.3f}" for v in scores[attention].values()))
    own.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = own.out / "attention_collapse.json", own.out / "attention_collapse.png"
    weights = {a: str(own.checkpoint[a]) if a in own.checkpoint else "random init" for a in own.attention}
    json_path.write_text(json.dumps({"weights": weights, "images": own.images, "scores": scores}, indent=2) + "\n")
    fig = plot_collapse({a: list(s.values()) for a, s in scores.items()},
                        f"attention collapse per layer\n(first {own.images} test image(s))")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).print_png(str(png_path))
    import wandb

    run = wandb.init(project=own.wandb_project, job_type="attention-collapse", dir=str(own.out),
                     config={"args": rest, "attention": own.attention, "weights": weights, "images": own.images})
    run.log({"attention_collapse": wandb.Image(str(png_path)),
             **{f"collapse/{a}/layer_{i:02d}": v for a, s in scores.items() for i, v in enumerate(s.values())}})
    run.finish()
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
