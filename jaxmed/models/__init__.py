"""Model zoo: `create_model(config.model, num_classes)` builds any registered architecture."""

from jaxmed.models.registry import ARCHITECTURES, create_model, param_stage

__all__ = ["ARCHITECTURES", "create_model", "param_stage"]
