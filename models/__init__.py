"""Models of the seven papers, their shared layers and the registry.

Importing this package imports every paper file (each module ``models/<paper>.py``;
``registry`` and the ``layers`` / ``official`` packages aside), which registers its
entry points. A new paper adds its file; nothing here is edited.
"""
import importlib
import pkgutil

from models.registry import create_model, input_size_for, list_models, model_info, register_model

_NOT_PAPERS = {"registry", "layers", "official"}
for _info in pkgutil.iter_modules(__path__):
    if _info.name not in _NOT_PAPERS and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["create_model", "input_size_for", "list_models", "model_info", "register_model"]
