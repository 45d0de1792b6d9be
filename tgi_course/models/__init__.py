"""Where weights come from (:mod:`.registry`) and how they load (:mod:`.loading`)."""

from .loading import LoadedModel, load
from .registry import ModelNotAvailable, ModelSource, resolve

__all__ = ["LoadedModel", "ModelNotAvailable", "ModelSource", "load", "resolve"]
