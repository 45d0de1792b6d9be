"""Pydantic wire models: :mod:`.openai` for the OpenAI-compatible routes, :mod:`.tgi` for TGI's own."""
