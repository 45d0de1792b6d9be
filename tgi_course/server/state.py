"""What every route needs, built once per app: settings, engine, validator, metrics, admission."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ..config import ServerConfig
from ..engine import Engine
from ..models import LoadedModel
from .admission import Admission, ValidationWorkers
from .metrics import Metrics
from .serving import ModelFacts
from .validation import Validator


@dataclass
class AppState:
    config: ServerConfig
    loaded: LoadedModel
    engine: Engine
    validator: Validator
    metrics: Metrics
    facts: ModelFacts
    admission: Admission
    workers: ValidationWorkers
    draining: bool = False  # set on SIGTERM/SIGINT: health 503, new work refused, running work may finish


def get_state(request: Request) -> AppState:
    return request.app.state.tgi
