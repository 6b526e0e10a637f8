"""Every recipe instantiates, and every variant of every ablation table builds."""
from __future__ import annotations

import importlib
import pkgutil

import pytest
import yaml

import ablations
from ablations.framework.runner import config_files, run_overrides
from ablations.framework.table import AblationTable
from tests.training.helpers import CONFIGS, make_cli


def _is_recipe(path) -> bool:
    """A paper recipe names its model class; layers (smoke, quick, cswin_unet/slab, ...) only override."""
    return "class_path" in (yaml.safe_load(path.read_text()).get("model") or {})


PAPER_RECIPES = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "_base_"
                       and p.stem not in ("smoke", "quick") and _is_recipe(p))


def _tables() -> list[AblationTable]:
    tables = []
    for info in pkgutil.walk_packages(ablations.__path__, "ablations."):
        if info.name.startswith("ablations.framework"):
            continue
        module = importlib.import_module(info.name)
        if isinstance(getattr(module, "TABLE", None), AblationTable):
            tables.append(module.TABLE)
    return tables


TABLES = _tables()
VARIANTS = [(t, v) for t in TABLES for v in t.variants]
# recipe → its data set's synthetic layer (from the tables)
SYNTHETIC_FOR = {t.recipe: t.synthetic_data for t in TABLES}


def synthetic_layer(recipe) -> str:
    """The synthetic-data layer of a recipe: its table's, else the one its header names
    (a line ``# synthetic data: reproduce/configs/_base_/<layer>.yaml``, for recipes no table runs)."""
    relative = str(recipe.relative_to(CONFIGS.parent.parent))
    if relative in SYNTHETIC_FOR:
        return SYNTHETIC_FOR[relative]
    for line in recipe.read_text().splitlines():
        if line.startswith("# synthetic data:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(f"{relative}: no table runs this recipe and its header names no '# synthetic data:' layer")


def test_tables_are_discovered():
    assert {t.key for t in TABLES} >= {"table5_upsampling", "table6_skip_connections", "table7_block_depths",
                                       "table8_loss_weights"}


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=[f"{p.parent.name}/{p.name}" for p in PAPER_RECIPES])
@pytest.mark.parametrize("layer", [None, "smoke", "quick"])
def test_recipe_instantiates(recipe, layer, tmp_path):
    files = [recipe] + ([recipe.parent / f"{layer}.yaml"] if layer else [])
    overrides = {}
    if layer is None:  # the full recipe needs the real data and weights only when it runs
        files.append(CONFIGS.parent.parent / synthetic_layer(recipe))
        if "pretrained:" in recipe.read_text():
            overrides["model.init_args.net.init_args.pretrained"] = None
    cli = make_cli(tmp_path, files, **overrides)
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None


def test_full_recipe_is_the_released_configuration(tmp_path):
    cli = make_cli(tmp_path, [CONFIGS / "cswin_unet" / "synapse.yaml"],
                   **{"model.init_args.net.init_args.pretrained": None})
    config = cli.config
    net = config.model.init_args.net.init_args
    assert sum(p.numel() for p in cli.model.net.parameters()) == 23_568_492
    assert (net.embed_dim, list(net.depths), net.drop_path_rate) == (64, [1, 2, 9, 1], 0.2)
    assert config.trainer.max_epochs == 150 and config.data.init_args.batch_size == 24
    opt = config.model.init_args.optimizer.init_args
    assert (opt.lr, opt.momentum, opt.weight_decay, opt.fused) == (0.05, 0.9, 1e-4, True)
    assert list(config.model.init_args.loss_weights) == [0.4, 0.6] and config.seed_everything == 1234


@pytest.mark.parametrize("table,variant", VARIANTS, ids=[f"{t.key}-{v.name}" for t, v in VARIANTS])
def test_table_variant_builds(table, variant, tmp_path):
    overrides = run_overrides(table, variant, 1234, tmp_path / "run", None, True, "test")
    overrides.pop("trainer.logger")  # CSV only in tests
    cli = make_cli(tmp_path, config_files(table, quick=True, data_dir=None), **overrides)
    net = cli.model.net
    for key, value in {**variant.overrides, **variant.quick_overrides}.items():
        if key.endswith("+"):  # a list append: the given items end the list
            parsed = list(cli.config[key[:-1]])
            assert len(parsed) > len(value) and _matches(parsed[-len(value):], value), key
        else:
            assert _matches(cli.config[key], value), key
    assert net is not None


def _matches(parsed, given) -> bool:
    """A parsed config value holds what an override gave (a dict: the given keys; lists: as tuples too)."""
    if isinstance(given, dict):
        parsed = parsed.as_dict() if hasattr(parsed, "as_dict") else parsed
        return all(_matches(parsed[k], v) for k, v in given.items())
    if isinstance(given, list):
        parsed = list(parsed)
        return len(parsed) == len(given) and all(_matches(p, g) for p, g in zip(parsed, given, strict=True))
    return parsed == given


def test_results_record_paths_relative_to_the_repository(tmp_path):
    from ablations.framework.runner import REPO_ROOT, display_path

    assert display_path(REPO_ROOT / "runs" / "t" / "v-s1") == "runs/t/v-s1"
    assert display_path(tmp_path) == str(tmp_path.resolve())  # outside the repository: absolute
    assert display_path(None) is None


def test_quick_overrides_apply_in_quick_mode_only(tmp_path):
    from ablations.framework.table import Variant

    table, _ = VARIANTS[0]
    variant = Variant("v", {"model.init_args.a": 1, "model.init_args.b": 2}, quick_overrides={"model.init_args.b": 3})
    quick = run_overrides(table, variant, 1, tmp_path, None, True, "test")
    full = run_overrides(table, variant, 1, tmp_path, "/data", False, "test")
    assert (quick["model.init_args.a"], quick["model.init_args.b"]) == (1, 3)
    assert (full["model.init_args.a"], full["model.init_args.b"]) == (1, 2)


@pytest.mark.parametrize("layer", [None, "quick"])
def test_cswin_unet_recipes_use_the_fused_update(layer, tmp_path):
    """The recipe's optimizer is PyTorch's fused kernel (same rule, one kernel for every parameter)."""
    recipe = CONFIGS / "cswin_unet" / "synapse.yaml"
    layer_file = recipe.parent / f"{layer}.yaml" if layer else CONFIGS.parent.parent / synthetic_layer(recipe)
    files = [recipe, layer_file]
    cli = make_cli(tmp_path, files, **{"model.init_args.net.init_args.pretrained": None})
    assert cli.model.optimizer_factory(cli.model.parameters()).defaults["fused"] is True
