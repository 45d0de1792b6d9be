"""Chat messages to prompt text and token ids, through the model's own chat template."""

from __future__ import annotations

from typing import Any


class TemplateError(ValueError):
    """The chat template refused the messages (TGI's ``template_error``); the message is the template's reason."""


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **extra: Any) -> str:
    """Render messages with the model's template. ``extra`` reaches the template as variables (``tools``...)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("this model has no chat template; use /generate or /v1/completions with a raw prompt")
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
        )
    except Exception as exc:  # jinja2 TemplateError, raise_exception(), or a TypeError inside the template
        reason = str(exc) or exc.__class__.__name__
        raise TemplateError(reason) from None


def encode(tokenizer: Any, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of ``text``. Templated chat text already holds its special tokens, so none are added by default."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def tokenize_with_offsets(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[dict[str, Any]]:
    """TGI's ``/tokenize`` shape: id, text and character offsets of every token."""
    encoded = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    return [
        {"id": int(token_id), "text": text[start:stop], "start": int(start), "stop": int(stop)}
        for token_id, (start, stop) in zip(encoded["input_ids"], encoded["offset_mapping"])
    ]
