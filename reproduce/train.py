"""Train, validate or test any recipe.

    python reproduce/train.py fit  --config reproduce/configs/cswin_unet/synapse.yaml
    python reproduce/train.py test --config reproduce/configs/cswin_unet/synapse.yaml --ckpt_path runs/.../last.ckpt
    python reproduce/train.py fit  --config reproduce/configs/cswin_unet/synapse.yaml \
                                   --config reproduce/configs/cswin_unet/smoke.yaml     # seconds, synthetic data

Every option can be overridden on the command line, e.g.
``--model.init_args.net.init_args.upsampler bilinear`` or ``--data.init_args.data_dir /data/Synapse``.
"""
from __future__ import annotations

import _bootstrap  # noqa: F401  (the repository root on sys.path)

from datamodules.errors import exit_on_dataset_error
from lightning_modules.cli import ReproCLI


def main() -> None:
    """Bad data stops with one message naming the file (no traceback; ``REPRO_TRACEBACK=1`` shows it)."""
    with exit_on_dataset_error():
        ReproCLI()


if __name__ == "__main__":
    main()
