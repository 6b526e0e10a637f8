"""Models of the seven papers, their shared layers and the registry.

Importing this package imports every paper file, so all entry points are registered.
"""
from models import cswin_unet  # noqa: F401  (registers cswin_unet, cswin_unet_test)
from models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
