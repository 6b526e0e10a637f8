"""Models of the seven papers, their shared layers and the registry."""
from models.registry import create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "register_model"]
