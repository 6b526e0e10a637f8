"""Pretrained (ImageNet) initialisation happens only when a fit starts from scratch."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from lightning_modules.pretrained import load_pretrained_weights
from models import create_model
from models.cswin_unet import official_key

FROM_SCRATCH = SimpleNamespace(ckpt_path=None)
RESUMING = SimpleNamespace(ckpt_path="run/last.ckpt")


def _write_cswin_t_checkpoint(net: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A small CSWin-T ImageNet-style file: encoder keys in the official layout, under state_dict_ema."""
    encoder = {official_key(k): torch.randn_like(v) for k, v in net.state_dict().items()
               if not k.startswith(("bottleneck", "decoder", "final_upsample", "head"))}
    encoder["head.weight"] = torch.randn(1000, net.encoder_norm.weight.numel())  # the classifier: ignored
    torch.save({"state_dict_ema": encoder}, path)
    return encoder


def test_constructing_never_reads_the_pretrained_file(tmp_path):
    missing = tmp_path / "missing" / "cswin_tiny_224.pth"
    net = create_model("cswin_unet_test", pretrained=str(missing))
    assert net.pretrained == str(missing) and not missing.exists()


@pytest.mark.parametrize("stage", ["test", "validate", "predict"])
def test_no_load_outside_fit(tmp_path, stage):
    net = create_model("cswin_unet_test", pretrained=str(tmp_path / "missing.pth"))
    assert load_pretrained_weights(net, RESUMING, stage) is False
    assert load_pretrained_weights(net, FROM_SCRATCH, stage) is False


def test_no_load_when_fit_resumes_from_a_checkpoint(tmp_path):
    net = create_model("cswin_unet_test", pretrained=str(tmp_path / "missing.pth"))
    assert load_pretrained_weights(net, RESUMING, "fit") is False


def test_fit_from_scratch_with_missing_file_raises_a_clear_error(tmp_path):
    missing = tmp_path / "cswin_tiny_224.pth"
    net = create_model("cswin_unet_test", pretrained=str(missing))
    with pytest.raises(FileNotFoundError) as info:
        load_pretrained_weights(net, FROM_SCRATCH, "fit")
    message = str(info.value)
    assert str(missing) in message
    assert "--model.init_args.net.init_args.pretrained null" in message
    with pytest.raises(FileNotFoundError, match="--model.init_args.net.init_args.pretrained null"):
        load_pretrained_weights(net, None, "fit")  # no trainer counts as from scratch


def test_fit_from_scratch_loads_a_real_file(tmp_path):
    path = tmp_path / "cswin_tiny_224.pth"
    reference = create_model("cswin_unet_test", depths=(1, 2, 2, 1))
    ckpt = _write_cswin_t_checkpoint(reference, path)
    net = create_model("cswin_unet_test", depths=(1, 2, 2, 1), pretrained=str(path))
    head_before = net.head.weight.clone()
    assert load_pretrained_weights(net, FROM_SCRATCH, "fit") is True
    sd = net.state_dict()
    torch.testing.assert_close(sd["stem.conv.weight"], ckpt["stage1_conv_embed.0.weight"])
    torch.testing.assert_close(sd["encoder.2.1.attn.qkv.weight"], ckpt["stage3.1.qkv.weight"])
    torch.testing.assert_close(sd["decoder.0.blocks.1.attn.qkv.weight"], ckpt["stage3.1.qkv.weight"])  # stage_up
    torch.testing.assert_close(sd["bottleneck.0.mlp.fc1.weight"], ckpt["stage4.0.mlp.fc1.weight"])
    torch.testing.assert_close(net.head.weight, head_before)


def test_nets_without_pretrained_support_or_path_are_left_alone():
    assert load_pretrained_weights(nn.Linear(2, 2), FROM_SCRATCH, "fit") is False
    assert load_pretrained_weights(create_model("cswin_unet_test"), FROM_SCRATCH, "fit") is False


class _CountingNet(nn.Module):
    """Stand-in net: counts load_pretrained() calls; its file never exists."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.pretrained = "does/not/exist.pth"
        self.loads = 0

    def load_pretrained(self) -> None:
        self.loads += 1


class _Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = _CountingNet()
        self.ckpt_path_in_setup = "unset"

    def setup(self, stage: str) -> None:
        self.ckpt_path_in_setup = self.trainer.ckpt_path

    def on_fit_start(self) -> None:
        load_pretrained_weights(self.net, self.trainer, "fit")

    def training_step(self, batch, batch_idx):
        return self.net.layer(batch[0]).pow(2).mean()

    def test_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_resume_and_test(tmp_path):
    """On resume, ckpt_path is still None in setup() but set in on_fit_start(): call the helper from there."""
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    kwargs = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=tmp_path, accelerator="cpu")
    scratch = _Module()
    trainer = L.Trainer(max_epochs=1, **kwargs)
    trainer.fit(scratch, data)
    assert scratch.net.loads == 1
    ckpt = tmp_path / "one.ckpt"
    trainer.save_checkpoint(ckpt)

    resumed = _Module()
    L.Trainer(max_epochs=2, **kwargs).fit(resumed, data, ckpt_path=ckpt)
    assert resumed.net.loads == 0
    assert resumed.ckpt_path_in_setup is None  # why setup() cannot decide

    tested = _Module()
    L.Trainer(**kwargs).test(tested, data, ckpt_path=ckpt, verbose=False)
    assert tested.net.loads == 0
