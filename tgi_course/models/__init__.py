"""Where weights come from (:mod:`.registry`) and how they load (:mod:`.loading`).

``loading`` imports torch; it is imported only when a model is loaded, so that light users (the
endpoints control plane checking what is available offline) stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import ModelNotAvailable, ModelSource, resolve

if TYPE_CHECKING:
    from .loading import LoadedModel, load

__all__ = ["LoadedModel", "ModelNotAvailable", "ModelSource", "load", "resolve"]


def __getattr__(name: str) -> Any:
    if name in {"LoadedModel", "load"}:
        from . import loading

        return getattr(loading, name)
    raise AttributeError(name)
