"""The inference engine: continuous batching over a model runner. Knows nothing about HTTP.

- :mod:`.scheduler`: what runs next (admission by token budgets), pure policy;
- :mod:`.runners`: how the model runs a step (transformers today), behind :class:`ModelRunner`;
- :mod:`.output`: what the tokens mean to a client (text, stop sequences, finish reasons);
- :mod:`.engine`: the loop thread and the bridges, tracking every request to its final event;
- :mod:`.steps`: the record of the steps the loop ran (which requests, when).
"""

from .chat import TemplateError, encode, render_chat
from .engine import Engine, EngineClosed, EngineStats, Handle
from .params import ErrorEvent, Event, FinishEvent, GenerationRequest, SamplingParams, TokenEvent, TopLogprob
from .runners import ModelRunner, TransformersRunner
from .scheduler import BatchLimits, Scheduler
from .steps import StepLog, StepRecord, StepWindow

__all__ = [
    "BatchLimits",
    "Engine",
    "EngineClosed",
    "EngineStats",
    "ErrorEvent",
    "Event",
    "FinishEvent",
    "GenerationRequest",
    "Handle",
    "ModelRunner",
    "SamplingParams",
    "Scheduler",
    "StepLog",
    "StepRecord",
    "StepWindow",
    "TemplateError",
    "TokenEvent",
    "TopLogprob",
    "TransformersRunner",
    "encode",
    "render_chat",
]
