"""Model stage: configs and presets (light), the torch network (imported on use)."""
from ..core.config import PRESETS, ModelConfig, PostprocessConfig, get_preset

__all__ = ["PRESETS", "ModelConfig", "PostprocessConfig", "get_preset"]
