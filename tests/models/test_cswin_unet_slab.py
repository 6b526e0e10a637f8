"""CSWin-UNet with SLAB (models/cswin_unet_slab.py): faithful defaults, variants, γ schedule, merging, config layer."""
from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from torch import nn

from lightning_modules.segmentation import SegmentationModule
from lightning_modules.slab_callbacks import ProgressiveNormSchedule, RecalibrateBN
from models import create_model
from models.cswin_unet import CSWinUNet
from models.layers.cswin_attention import CrossShapedWindowAttention
from models.layers.repbn import ProgressiveNorm, RepBN
from models.slab_cswin import CSWinLinearAttention
from models.slab_norm import TokenBatchNorm
from models.slab_reparam import foldable
from tests.training.helpers import CONFIGS, make_cli

SIZE = (1, 64, 64)  # cswin_unet_test: maps 16-8-4-2, width 16, one block per stage


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def blocks(model: CSWinUNet) -> list[tuple[str, int, nn.Module]]:
    """(part, scale index 0 = 1/4 … 3 = 1/32, block) for every CSWin block."""
    out = [("encoder", s, b) for s, stage in enumerate(model.encoder) for b in stage]
    out += [("decoder", 3, b) for b in model.bottleneck]
    out += [("decoder", 2 - j, b) for j, level in enumerate(model.decoder) for b in level.blocks]
    return out


def tiny(**kwargs) -> CSWinUNet:
    return create_model("cswin_unet_test", **kwargs)


@pytest.fixture(scope="module")
def paper_default() -> CSWinUNet:
    torch.manual_seed(0)
    return CSWinUNet()


def test_defaults_build_the_faithful_model_unchanged(paper_default):
    torch.manual_seed(0)
    explicit = CSWinUNet(norm="layernorm", attention="cswin", T=7, schedule="cosine", counting="per_forward",
                         slab_decoder=False)
    assert n_params(paper_default) == n_params(explicit) == 23_568_492
    assert paper_default.slab is None and explicit.slab is None
    a, b = paper_default.state_dict(), explicit.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same modules, same init stream
    assert not any(isinstance(m, RepBN | ProgressiveNorm | CSWinLinearAttention) for m in paper_default.modules())
    # RepBN: each block norm LN(C) → BN(C) + one α (tiny model: 8 blocks × 2 norms)
    assert n_params(tiny(norm="repbn")) - n_params(tiny()) == 16


def test_paper_size_counts_follow_from_the_swapped_layers(paper_default):
    base = paper_default
    assert len(blocks(base)) == 26  # 13 encoder, 1 bottleneck, 12 decoder
    sla = create_model("cswin_unet", norm="prepbn", attention="sla")
    extra = 0
    for (_, s, old), (_, _, new) in zip(blocks(base), blocks(sla), strict=True):
        c = old.attn.dim
        extra += 2 * (2 * c + 1)  # PRepBN = LN(C) + BN(C) + α, twice per block
        if s < 2:  # "LLSS": 2 stripe LePEs (C/2 each) → 1 whole-map LePE (C), same count; + DWC 5×5 and P (N × C)
            hd, side = new.attn.branches[0].head_dim, 224 // 4 // 2**s
            extra += 26 * hd + side * side * c
    assert n_params(sla) - n_params(base) == extra
    assert n_params(sla) == 24_401_440


@pytest.mark.parametrize("attention", ["cswin", "sla"])
@pytest.mark.parametrize("norm", ["bn", "repbn", "prepbn"])
def test_variants_run_forward_and_backward(norm, attention):
    torch.manual_seed(0)
    model = tiny(norm=norm, attention=attention, T=4).train()
    for m in model.modules():
        if isinstance(m, ProgressiveNorm):
            m.set_step(2)  # γ = 0.5: both branches carry gradient
    x = torch.randn(2, *SIZE)
    out = model(x)
    assert out.shape == (2, 9, 64, 64)
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    kinds = {"bn": TokenBatchNorm, "repbn": RepBN, "prepbn": ProgressiveNorm}
    assert all(isinstance(b.norm1, kinds[norm]) and isinstance(b.norm2, kinds[norm]) for _, _, b in blocks(model))
    assert sum(isinstance(m, nn.LayerNorm) for m in model.modules()) == 6 + (16 if norm == "prepbn" else 0)


def test_attention_patterns_and_decoder_scope():
    model = tiny(attention="sla")
    for part, s, block in blocks(model):
        expected = CSWinLinearAttention if s < 2 else CrossShapedWindowAttention
        assert isinstance(block.attn, expected), (part, s)
        assert isinstance(block.norm1, nn.LayerNorm)
    assert [type(b.attn) for _, s, b in blocks(tiny(attention="SLSS")) if s == 1] == [CSWinLinearAttention] * 2
    encoder_only = tiny(norm="repbn", attention="sla", slab_decoder=False)
    for part, s, block in blocks(encoder_only):
        assert isinstance(block.norm1, RepBN) == (part == "encoder")
        assert isinstance(block.attn, CSWinLinearAttention) == (part == "encoder" and s < 2)
    with pytest.raises(ValueError, match="norm must be one of"):
        tiny(norm="groupnorm")
    with pytest.raises(ValueError, match="letters of L/S"):
        tiny(attention="LLS")


class _GammaRecorder(L.Callback):
    def __init__(self) -> None:
        self.gammas: list[set[float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.gammas.append({round(float(m.last_gamma), 6) for m in ProgressiveNormSchedule.norms(pl_module)})


def _loader(n: int = 6) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(*SIZE, generator=g), "label": torch.randint(0, 9, SIZE[1:], generator=g)}
            for _ in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=2)


def test_schedule_callback_drives_every_block_norm_and_recalibration_runs():
    module = SegmentationModule(tiny(norm="prepbn", attention="sla", T=4))
    assert len(ProgressiveNormSchedule.norms(module)) == 16  # 8 blocks × 2
    recorder = _GammaRecorder()
    trainer = L.Trainer(max_steps=3, callbacks=[ProgressiveNormSchedule(), recorder, RecalibrateBN(epochs=1)],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*without set_step.*")
        trainer.fit(module, train_dataloaders=_loader())
    assert recorder.gammas == [{1.0}, {0.75}, {0.5}]  # γ = (T − step)/T in every norm at once
    assert "train/repbn_gamma" in trainer.callback_metrics


def _randomise(model: nn.Module) -> nn.Module:
    """Non-trivial BN affine parameters and α (RepBN starts as BN(1, 0) + 1·x)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, RepBN):
                m.alpha.fill_(0.5 + torch.rand((), generator=g).item())
    return model


@pytest.mark.parametrize(("norm", "attention"), [("prepbn", "sla"), ("repbn", "cswin")])
def test_merged_model_equals_the_unfused_one_in_eval(norm, attention):
    torch.manual_seed(0)
    model = _randomise(tiny(norm=norm, attention=attention, T=4, counting="per_forward")).train()
    with torch.no_grad():
        for _ in range(3):  # running statistics away from (0, 1); γ moving for PRepBN
            model(torch.randn(4, *SIZE))
    model.eval()
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        expected = model(x)
        merged = model.merge()
        torch.testing.assert_close(merged(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().max() > 0.1
    assert not any(foldable(m) for m in merged.modules())
    assert sum(isinstance(m, nn.LayerNorm) for m in merged.modules()) == 6  # stem, 3 merges, encoder/decoder norm
    assert not merged.training and any(foldable(m) for m in model.modules())  # the original is untouched


def test_merge_leaves_the_faithful_model_as_it_is():
    model = tiny().eval()
    x = torch.randn(1, *SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model.merge()(x), model(x))
    assert sum(isinstance(m, nn.LayerNorm) for m in model.merge().modules()) == 6 + 16


def test_slab_config_layer_selects_prepbn_and_sla(tmp_path):
    files = [CONFIGS / "cswin_unet" / "synapse.yaml", CONFIGS / "cswin_unet" / "smoke.yaml",
             CONFIGS / "cswin_unet" / "slab.yaml"]  # last: smoke/quick replace the callback list
    cli = make_cli(tmp_path, files, **{"model.init_args.net.init_args.pretrained": None})
    net = cli.model.net
    assert (net.slab.norm, net.slab.attention, net.slab.T, net.slab.counting) == ("prepbn", "LLSS", 11160,
                                                                                 "global_step")
    assert all(isinstance(b.norm1, ProgressiveNorm) for _, _, b in blocks(net))
    names = {type(c).__name__ for c in cli.trainer.callbacks}
    assert {"ProgressiveNormSchedule", "RecalibrateBN", "SegmentationOverlays"} <= names


def test_imagenet_start_fills_the_layernorm_branch_so_prepbn_starts_as_the_pretrained_net(tmp_path):
    from models.cswin_unet import load_cswin_imagenet_weights, to_official_state_dict

    torch.manual_seed(0)
    plain = tiny()
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, nn.LayerNorm):  # non-trivial affine values, to see them arrive
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    official = {k: v for k, v in to_official_state_dict(plain.state_dict(), prefix="").items()
                if k.startswith(("stage1", "stage2", "stage3", "stage4", "merge", "norm."))}
    torch.save({"state_dict_ema": official}, tmp_path / "cswin_t.pth")
    prepbn = tiny(norm="prepbn", T=4)
    report = load_cswin_imagenet_weights(prepbn, tmp_path / "cswin_t.pth")
    assert "decoder.2.blocks.0.norm2.ln.weight" in report.loaded  # decoder blocks too (stage → stage_up)
    for a, b in zip(plain.encoder, prepbn.encoder, strict=True):
        torch.testing.assert_close(b[0].norm1.ln.weight, a[0].norm1.weight)
        torch.testing.assert_close(b[0].norm2.ln.bias, a[0].norm2.bias)
    torch.testing.assert_close(prepbn.decoder[2].blocks[0].norm1.ln.weight, plain.encoder[0][0].norm1.weight)
    # at γ = 1 (training forward) an encoder block of the PRepBN model is the pretrained block
    x = torch.randn(2, 16, 16, 16)
    for m in prepbn.modules():
        if isinstance(m, ProgressiveNorm):
            m.set_step(0)
    torch.testing.assert_close(prepbn.encoder[0][0].train()(x), plain.encoder[0][0].train()(x))
