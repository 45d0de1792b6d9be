"""HTTP only: FastAPI app, wire models, routes, error mapping and metrics. No model logic lives here."""

from .app import build_app, create_app

__all__ = ["build_app", "create_app"]
