"""What GLARE's tables share: the chained recipe, its quick sizes, the metrics, the paper source."""
from __future__ import annotations

from ablations.framework.table import GMACS, PARAMS, SECONDS, Metric

RECIPE = "reproduce/configs/glare/chain_lol.yaml"
QUICK_RECIPE = "reproduce/configs/glare/quick.yaml"
SYNTHETIC = "reproduce/configs/_base_/synthetic_lol.yaml"
MODEL = "model.init_args."
NET = "model.init_args.net.init_args."

PSNR = Metric("test/psnr_gt_mean", "PSNR (dB, GT-mean)", True)
SSIM = Metric("test/ssim_gt_mean", "SSIM (GT-mean)", True, decimals=3)
PLAIN_PSNR = Metric("test/psnr", "PSNR (dB, plain)", True)
PLAIN_SSIM = Metric("test/ssim", "SSIM (plain)", True, decimals=3)
LAST_PSNR = Metric("last/test/psnr_gt_mean", "PSNR, last ckpt (dB, GT-mean)", True)
METRICS = (PSNR, SSIM, PLAIN_PSNR, PLAIN_SSIM, LAST_PSNR)
COMPLEXITY = (PARAMS, GMACS, SECONDS)

#: The chain's --quick size: Stage I 150 steps (trained once per seed, cached), Stage II 150, Stage III 50
#: steps (max_steps = 200), the flow of glare_test (K 2, L 1, width 16), Stage I/III at a larger LR than
#: released (1e-3 / 5e-4: a few hundred steps instead of 500k / 40k), Stage II at the released LRs,
#: MACs at the synthetic images' 48 × 64, CPU denormals flushed, and the MFD trunk starting as a copy of the
#: Stage-I decoder (``mfd_init: vqgan_decoder``, project extension: from PyTorch's initialisation, as released,
#: 50 steps leave the image after the AFT ~4 dB below SimGLARE's; 400 steps at 1e-3 still ~0.5 dB below).
QUICK_CHAIN = {
    MODEL + "stage1_steps": 150, MODEL + "stage1_lr": 1e-3, MODEL + "stage1_loss": {"disc_start": 10**9},
    MODEL + "stage2_steps": 150, MODEL + "stage3_steps": 50, MODEL + "stage3_lr": 5e-4,
    MODEL + "mfd_init": "vqgan_decoder", MODEL + "flush_denormal": True, MODEL + "complexity_size": [48, 64],
    "trainer.max_steps": 200, "trainer.val_check_interval": 50,
    NET + "cond_channels": 16, NET + "hidden_channels": 16, NET + "K": 2, NET + "L": 1, NET + "n_additional": 1,
}

PAPER_SOURCE = (
    "GLARE (ECCV 2024, arXiv 2407.12431). The available source (a summary of the paper; its tables are images, "
    "shared/papers/glare.md §5) gives no absolute numbers: every cell is unknown (None). Relative claims are "
    "quoted in the notes.")

PROTOCOL_NOTE = (
    "Metrics: the release's protocol (lightning_modules/metrics/enhancement.py): PSNR on float images, MATLAB-style "
    "SSIM on uint8, after the GT-mean brightness correction (the paper's convention, issue #9) and plainly; LPIPS "
    "(AlexNet) in each run's test_metrics.json when lpips_weights is given. Evaluation padding: 20 px reflection "
    "bottom and left, as infer_dataset_lol.py.")
SELECTION_NOTE = (
    "Unprefixed columns: the checkpoint with the best val/psnr_gt_mean on eval15, which is the TEST set (the "
    "release's best_psnr selection: faithful, and test-set selection); 'last ckpt': the final weights.")
STAGE1_NOTE = (
    "Stage I: without stage1_checkpoint the chain trains the VQGAN with the PROJECT-DEFINED recipe (the release has "
    "no Stage-I code) on the LOL training set's normal-light images and caches it; with the released vqgan.pkl "
    "(set model.init_args.stage1_checkpoint in chain_lol.yaml) the codebook may have seen the test set (issue #30).")
