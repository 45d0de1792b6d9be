"""Wire models of the OpenAI-compatible routes (/v1/chat/completions, /v1/completions, /v1/models).

Request models accept what the OpenAI clients and frameworks send and ignore fields we do not use
(as TGI does), so a LangChain or LlamaIndex client never fails on an extra option. Limits that depend on
the server's settings are checked later, in :mod:`tgi_course.server.validation`.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class OtherPart(_Lenient):
    """Image, audio or file parts: accepted by the schema so the error can say why they are refused."""

    type: str


class ToolCallFunction(_Lenient):
    name: str
    # OpenAI sends JSON text; TGI's spec (FunctionDefinition.arguments) takes any JSON value, and so do we.
    arguments: Any = ""


class ToolCall(_Lenient):
    id: str | None = None
    type: str = "function"
    function: ToolCallFunction


class ChatMessage(_Lenient):
    role: str
    content: Union[str, list[Union[TextPart, OtherPart]], None] = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class _GenerationFields(_Lenient):
    """Fields that chat and text completions share, with OpenAI's names."""

    model: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None  # TGI extension
    logit_bias: dict[str, float] | None = None
    max_tokens: int | None = None
    n: int | None = None
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # vLLM/TGI extension
    ignore_eos: bool = False  # vLLM extension: generate exactly max_tokens (benchmarks)
    user: str | None = None


class ChatCompletionRequest(_GenerationFields):
    messages: list[ChatMessage]
    logprobs: bool | None = None
    top_logprobs: int | None = None
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    tool_prompt: str | None = None  # TGI's: text put before the tool list in the prompt
    response_format: dict[str, Any] | None = None


class CompletionRequest(_GenerationFields):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    logprobs: int | None = None  # here: how many top tokens, as in OpenAI's legacy API
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


# -- responses ---------------------------------------------------------------------------------


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None
    refusal: list[TokenLogprobOut] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    # Every delta names its role and carries a string, even the final empty one: TGI's schema requires
    # both (TextMessage), and OpenAI's clients accept a repeated role.
    role: Literal["assistant"] = "assistant"
    content: str | None = ""
    # Only on tool-call deltas (content null there, as OpenAI sends); left out of every other delta.
    tool_calls: list[dict[str, Any]] | None = Field(default=None, exclude_if=lambda v: v is None)


class ChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)
