"""Can this model be served offline? Checked before a server process is started, so that an
endpoint for an unavailable model fails in a second with a useful message instead of a long log."""

from __future__ import annotations

from . import spec as specs


def problem_with(model_id: str, task: str | None) -> str | None:
    """A sentence saying why ``model_id`` cannot be served here, or None when it can."""
    if task not in specs.SERVED_TASKS:
        return (
            f"Task {task!r} is not served locally: the local server speaks TGI's text-generation and Messages API only. "
            "Use task='text-generation'."
        )
    # Imported here: tgi_course.models imports torch, which the control plane only needs at this point.
    from ..models.registry import ModelNotAvailable, offline_models, resolve

    try:
        source = resolve(model_id)
    except ModelNotAvailable as exc:
        reason = str(exc)
    else:
        if source.kind != "hub" or _in_hub_cache(model_id):
            return None
        reason = "it is not in the local Hugging Face cache, and the course runs without network"
    offline = offline_models()
    if not offline:
        return f"Model {model_id!r} is not available offline ({reason}), and no model is: install the default model (see the course README)."
    return (
        f"Model {model_id!r} is not available offline ({reason}). "
        f"Models available offline: {', '.join(offline)}. Deploy one of those, e.g. repository={offline[0]!r}."
    )


def _in_hub_cache(repo_id: str) -> bool:
    """True when the Hugging Face cache already holds the repo's config (so it loads without network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id that is not a valid repo name is simply not cached
        return False
