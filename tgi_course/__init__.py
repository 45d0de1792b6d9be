"""tgi_course: a local Messages API server and the helpers the course notebooks use.

Importing the package is cheap: torch and transformers load only when a server or engine is created.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

__all__ = ["Connection", "LocalServer", "ServerConfig", "__version__", "connect", "use_local_endpoints", "use_real_endpoints"]

if TYPE_CHECKING:
    from .config import ServerConfig
    from .course.connect import Connection, connect
    from .course.local_server import LocalServer
    from .endpoints import use_local_endpoints, use_real_endpoints

_LAZY = {
    "ServerConfig": ("tgi_course.config", "ServerConfig"),
    "Connection": ("tgi_course.course.connect", "Connection"),
    "connect": ("tgi_course.course.connect", "connect"),
    "LocalServer": ("tgi_course.course.local_server", "LocalServer"),
    "use_local_endpoints": ("tgi_course.endpoints", "use_local_endpoints"),
    "use_real_endpoints": ("tgi_course.endpoints", "use_real_endpoints"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'tgi_course' has no attribute {name!r}")
