"""Model runners: how a step runs on the model, behind :class:`ModelRunner`."""

from .base import ModelRunner
from .transformers import PaddedBatch, TransformersRunner

__all__ = ["ModelRunner", "PaddedBatch", "TransformersRunner"]
