"""The inference engine: continuous batching over a transformers model. Knows nothing about HTTP."""

from .chat import TemplateError, encode, render_chat
from .params import ErrorEvent, Event, FinishEvent, GenerationRequest, SamplingParams, TokenEvent, TopLogprob
from .scheduler import BatchLimits, Engine

__all__ = [
    "BatchLimits",
    "Engine",
    "ErrorEvent",
    "Event",
    "FinishEvent",
    "GenerationRequest",
    "SamplingParams",
    "TemplateError",
    "TokenEvent",
    "TopLogprob",
    "encode",
    "render_chat",
]
