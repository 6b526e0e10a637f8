"""What ConvFormer's tables share: recipes per data set, metrics, the backbones and their quick sizes."""
from __future__ import annotations

import importlib
import inspect

from ablations.framework.table import GMACS, PARAMS, AblationTable, Metric, Variant

NET = "model.init_args.net."
DICE = Metric("test/dice", "Dice (%)", True)
IOU = Metric("test/iou", "IoU (%)", True)
HD95 = Metric("test/hd95", "HD95 (px)", False)
LAST_DICE = Metric("last/test/dice", "Dice, last ckpt (%)", True)
METRICS = (DICE, IOU, HD95, LAST_DICE, PARAMS, GMACS)

#: data set → (title, recipe, synthetic-data layer, where the release selects the model)
DATASETS = {
    "acdc": ("ACDC", "reproduce/configs/convformer/acdc.yaml", "reproduce/configs/_base_/synthetic_acdc.yaml",
             "best epoch on valofficial (the release's selection)"),
    "isic2018": ("ISIC 2018", "reproduce/configs/convformer/isic2018.yaml",
                 "reproduce/configs/_base_/synthetic_isic.yaml",
                 "best epoch on the TEST split (the release's selection, i.e. selected on test)"),
}
QUICK_RECIPE = "reproduce/configs/convformer/quick.yaml"
ATTENTIONS = ("vanilla", "reattention", "layerscale", "refiner", "convformer")
ATTENTION_TITLES = {"vanilla": "plain", "reattention": "+ Re-attention", "layerscale": "+ LayerScale",
                    "refiner": "+ Refiner", "convformer": "+ ConvFormer"}

#: backbone → (class path or None for the recipe's SETR, its --quick size, description)
BACKBONES = {
    "setr": (None, {}, "SETR as released (models/SETR.py)"),
    "transunet": (
        "models.convformer_transunet.ConvFormerTransUNet",
        {"hidden_size": 64, "depth": 2, "heads": 2, "dim_head": 32, "mlp_dim": 128, "resnet_layers": [1, 1, 1],
         "resnet_channels": [128, 256, 512], "stem_channels": 32, "head_channels": 64,
         "decoder_channels": [32, 16, 16, 8]},
        "TransUNet R50-ViT-B/16, reconstructed from the release's bytecode",
    ),
    "patcher": (
        "models.convformer_patcher.ConvFormerPatcher",
        {"embed_dims": [16, 32, 48, 64], "heads": [1, 2, 2, 4], "depths": [1, 1, 1, 1], "decoder_dim": 32,
         "drop_path_rate": 0.0},
        "Patcher, reconstructed from the release's bytecode",
    ),
}

PAPER_SOURCE = (
    "ConvFormer (MICCAI 2023, arXiv 2309.05674). The available source (shared/seeds/002_*.txt, summarised in "
    "shared/papers/convformer.md §5) gives the tables as images only: every cell is unknown (None). The text "
    "gives average Dice gains with ConvFormer, quoted in the notes."
)


def paper_configuration(class_path: str) -> dict:
    """A host's constructor defaults (its paper configuration), lists for tuples; not the linked arguments.

    jsonargparse keeps the recipe's init_args a new class also accepts (SETR's ``heads``,
    ``mlp_dim`` ...) when a variant swaps the class, so a variant names every argument.
    """
    module, _, name = class_path.rpartition(".")
    signature = inspect.signature(getattr(importlib.import_module(module), name))
    return {k: list(p.default) if isinstance(p.default, tuple) else p.default
            for k, p in signature.parameters.items()
            if k not in ("num_classes", "img_size") and p.default is not inspect.Parameter.empty}


def backbone_variant(backbone: str, attention: str, in_channels: int, **net_args) -> Variant:
    """``<backbone>_<attention>``: the recipe's net swapped for ``backbone`` with ``attention``."""
    class_path, quick_size, description = BACKBONES[backbone]
    args = {"attention": attention, **net_args}
    if class_path is None:
        overrides = {NET + "init_args." + k: v for k, v in args.items()}
        quick: dict = {}
    else:  # another class: every argument explicit, so none of the recipe's SETR values carries over
        full = {**paper_configuration(class_path), "in_channels": in_channels, **args}
        overrides = {NET[:-1]: {"class_path": class_path, "init_args": full}}
        quick = {NET[:-1]: {"class_path": class_path, "init_args": {**full, **quick_size}}}
    return Variant(f"{backbone}_{attention}", overrides, f"{description}, {ATTENTION_TITLES[attention]}",
                   {m.name: None for m in (DICE, IOU, HD95, LAST_DICE)}, quick_overrides=quick)


def convformer_table(number: int, subject: str, title: str, dataset: str, variants: tuple[Variant, ...], *,
                     script: str, notes: tuple[str, ...] = (), plots: dict[str, str] | None = None) -> AblationTable:
    """A ConvFormer table on ``dataset`` ("acdc" or "isic2018"), tested with the best and the last checkpoint."""
    name, recipe, synthetic, selection = DATASETS[dataset]
    return AblationTable(
        paper="convformer", number=number, subject=subject, title=f"{title} ({name})", dataset=dataset,
        recipe=recipe, quick_recipe=QUICK_RECIPE, synthetic_data=synthetic, metrics=METRICS, variants=variants,
        paper_source=PAPER_SOURCE, seeds=(30,), test_checkpoints=("best", "last"), script=script,
        notes=(f"Dice/IoU/HD95: the {selection}; 'Dice, last ckpt': the final epoch's weights.",
               "Metrics: the release's protocol (shared/papers/convformer.md §4.2); HD95 in pixels is ours, "
               "beside the release's row-vector Hausdorff (test/row_hausdorff_l1 in each run).", *notes),
        plots=dict(plots or {}),
    )
