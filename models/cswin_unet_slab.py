"""SLAB on CSWin-UNet: progressive re-parameterised BN and simplified linear attention in its blocks.

A project extension, beyond both papers (neither the CSWin-UNet nor the SLAB release builds
it). It combines CSWin-UNet (arXiv 2407.18070, :mod:`models.cswin_unet`) with SLAB (Guo et al.,
ICML 2024, arXiv 2405.11582; ``shared/papers/slab.md``), the way the SLAB release's
``slab_cswin.py`` mixes them into CSWin (here :mod:`models.slab_cswin`):

* ``norm``: the two pre-norms of every CSWin block (``norm1``, ``norm2``) become
  ``"bn"`` (BatchNorm over batch × tokens), ``"repbn"`` (``BN(x) + α·x``) or ``"prepbn"``
  (``γ·LN + (1 − γ)·RepBN``, γ 1 → 0 over ``T`` steps, ``schedule`` linear as released or the
  project-defined cosine/step, driven by the trainer's global step through
  :class:`lightning_modules.slab_callbacks.ProgressiveNormSchedule`, or ``counting="per_forward"``);
* ``attention``: ``"sla"`` = SLAB-CSWin's ``"LLSS"``: the blocks of the two high-resolution
  scales (1/4, 1/8) use :class:`models.slab_cswin.CSWinLinearAttention` (SLA over the whole map
  + depthwise 5×5 conv on V + LePE), the 1/16 and 1/32 scales keep cross-shaped stripe softmax
  attention; any 4 letters of ``L``/``S`` choose per scale (``"cswin"`` = ``"SSSS"``).
* ``slab_decoder``: the bottleneck and decoder blocks mirror their encoder scale (a decoder level
  at 1/4 gets the 1/4 choice); ``False`` changes the encoder blocks only. The release initialises
  the decoder blocks from the same ImageNet CSWin blocks as the encoder, so they are treated alike.

What stays LayerNorm (by choice, documented): the stem and the three merge norms (conv → LN),
``encoder_norm`` (its output starts the bottleneck's residual stream) and ``decoder_norm`` (it feeds
CARAFE): six LayerNorms, none inside a block. :func:`merge_cswin_unet` folds every block's
RepBN into the following ``qkv`` / ``fc1`` Linear (:func:`models.slab_reparam.reparameterize`),
exact in eval mode; the six LayerNorms are not foldable and stay.

Deviations and choices (project-defined, no reference to follow):

* SLA's positional term ``P`` is sized by each scale's map at ``img_size`` (as SLAB-CSWin's), so
  an SLA model runs at its construction size only. The FLatten leftover ``scale`` parameter of
  SLAB-CSWin (counted, unused there) is not created (``released_scale=False``).
* ``T`` defaults to SLAB-CSWin's 120,000 forwards; a Synapse run (13,950 steps) must set it below
  its length (the SLAB maintainers: ≈ 0.8 × the run; ``reproduce/configs/cswin_unet/slab.yaml``).
* With an ImageNet CSWin-T start (``pretrained=``), a PRepBN's LayerNorm branch loads the
  checkpoint's LayerNorm (so at γ = 1 a ``norm="prepbn", attention="cswin"`` model computes the
  pretrained network); BN / RepBN and SLA's extra tensors (``dwc``, ``positional_encoding``, the
  whole-map ``lepe``) keep their init; ``qkv``, ``proj`` and the MLPs load as usual.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from models.layers import CSWinBlock
from models.slab_cswin import CSWinLinearAttention
from models.slab_norm import make_slab_norm
from models.slab_reparam import reparameterize
from models.slab_swin import resolve_pattern

__all__ = ["CSWIN_UNET_NORMS", "SLABOptions", "merge_cswin_unet"]

#: ``norm=`` values of :class:`models.cswin_unet.CSWinUNet` (``"layernorm"`` = the faithful model).
CSWIN_UNET_NORMS = ("layernorm", "bn", "repbn", "prepbn")
_SLAB_KIND = {"layernorm": "ln", "bn": "bn", "repbn": "repbn", "prepbn": "prepbn"}


@dataclass(frozen=True)
class SLABOptions:
    """The SLAB choices of one CSWin-UNet; :meth:`convert` applies them to a block of a scale.

    ``attention``: ``"cswin"`` (all stripe softmax), ``"sla"`` (``"LLSS"``) or 4 letters of ``L``/``S``,
    one per scale from 1/4 to 1/32.
    """

    norm: str = "layernorm"
    attention: str = "cswin"
    T: int = 120_000
    schedule: str = "linear"
    counting: str = "global_step"
    decoder: bool = True
    kernel_size: int = 5

    def __post_init__(self) -> None:
        if self.norm not in CSWIN_UNET_NORMS:
            raise ValueError(f"norm must be one of {CSWIN_UNET_NORMS}, got {self.norm!r}")
        object.__setattr__(self, "attention", self.pattern)  # validated, stored as letters

    @property
    def pattern(self) -> str:
        """The attention letters per scale (1/4 … 1/32), e.g. ``"LLSS"``."""
        return resolve_pattern({"cswin": "softmax"}.get(self.attention, self.attention), "LLSS", 4)

    @property
    def is_faithful(self) -> bool:
        """True when nothing is changed (LayerNorm, stripe attention everywhere)."""
        return self.norm == "layernorm" and self.pattern == "SSSS"

    def make_norm(self, dim: int) -> nn.Module:
        """One block norm over ``dim`` channels (takes ``(B, H, W, C)`` maps)."""
        return make_slab_norm(dim, _SLAB_KIND[self.norm], T=self.T, schedule=self.schedule, counting=self.counting,
                              ln_eps=1e-5)

    def convert(self, block: CSWinBlock, stage: int, resolution: int, *, decoder: bool) -> CSWinBlock:
        """Swap ``block``'s norms (and, on an ``L`` scale, its attention) in place; returns it.

        ``stage``: the scale index (0 = 1/4 … 3 = 1/32); ``resolution``: the side of its map at
        ``img_size``; ``decoder``: the block is in the bottleneck or a decoder level.
        """
        if decoder and not self.decoder:
            return block
        if self.norm != "layernorm":
            block.norm1, block.norm2 = self.make_norm(block.attn.dim), self.make_norm(block.attn.dim)
        if self.pattern[stage] == "L":
            old = block.attn
            block.attn = CSWinLinearAttention(
                old.dim, _num_heads(old), (resolution, resolution), qkv_bias=old.qkv.bias is not None,
                proj_drop=old.proj_drop.p, kernel_size=self.kernel_size, released_scale=False)
        return block


def _num_heads(attn: nn.Module) -> int:
    return sum(branch.num_heads for branch in attn.branches)


def merge_cswin_unet(model: nn.Module, release_formula: bool = False) -> nn.Module:
    """An eval-mode copy of a CSWin-UNet with every block RepBN / BN folded into ``qkv`` and ``fc1``.

    ``model`` is not changed; LayerNorms (all of them in the faithful model) stay.
    ``release_formula`` only matters for conv → norm folds, which CSWin-UNet does not have.
    """
    return reparameterize(model, release_formula)
