"""Runs validated requests on the engine and shapes the results as OpenAI and TGI objects.

Routes call these functions and only deal with HTTP; these functions never see a Request object.
"""

from __future__ import annotations

import json
import time
from contextlib import aclosing
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..engine import ErrorEvent, FinishEvent, GenerationRequest, TokenEvent
from ..engine.engine import EventStream
from .errors import ApiError, generation_error, unavailable_error
from .metrics import Metrics
from . import tool_calls
from .protocol import openai as oa
from .validation import Prepared

OPENAI_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}


@dataclass
class ChoiceResult:
    """Everything one finished choice produced."""

    tokens: list[TokenEvent] = field(default_factory=list)
    finish: FinishEvent | None = None


@dataclass(frozen=True)
class ModelFacts:
    name: str
    fingerprint: str


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def request_id_for(response_id: str, choice: int, choices: int) -> str:
    """The engine's id for one choice of a response: the response's own ``id`` (what the client sees), with
    ``#<choice index>`` after it when the response has several choices. The step record (GET /engine/steps)
    lists these ids, so a client can find its own requests in it."""
    return response_id if choices == 1 else f"{response_id}#{choice}"


def requests_for(prepared: list[Prepared], response_id: str | None = None) -> list[GenerationRequest]:
    """One engine request per choice of every prompt, in the order the responses number them.

    With ``response_id`` the requests are named after the response (:func:`request_id_for`); without one
    (TGI's generate routes, whose responses carry no id) the engine numbers them itself.
    """
    params = [params for p in prepared for params in p.choices]
    prompts = [p.prompt_ids for p in prepared for _ in p.choices]
    if response_id is None:
        return [GenerationRequest(ids, choice) for ids, choice in zip(prompts, params)]
    return [
        GenerationRequest(ids, choice, request_id=request_id_for(response_id, index, len(params)))
        for index, (ids, choice) in enumerate(zip(prompts, params))
    ]


def sequences_of(prepared: list[Prepared]) -> int:
    return sum(len(p.choices) for p in prepared)


def error_of(event: ErrorEvent) -> ApiError:
    """The HTTP error an engine error event stands for: 503 when the server is stopping, else TGI's 424."""
    if event.kind == "shutdown":
        error = unavailable_error()
        error.message = f"{event.message}; retry on another replica or later"
        return error
    return generation_error(event.message)


def _stream_error(event: ErrorEvent, metrics: Metrics, route: str) -> ApiError:
    error = error_of(event)
    metrics.failure(route, error.error_type)
    return error


async def run_to_end(events: EventStream, metrics: Metrics, route: str) -> list[ChoiceResult]:
    """Collect every choice's tokens; raise the request's error if the engine ended any choice with one."""
    results = [ChoiceResult() for _ in range(len(events))]
    started = time.perf_counter()
    async with aclosing(events):
        async for index, event in events:
            if isinstance(event, TokenEvent):
                results[index].tokens.append(event)
            elif isinstance(event, FinishEvent):
                results[index].finish = event
            elif isinstance(event, ErrorEvent):
                raise error_of(event)
    metrics.success(route, time.perf_counter() - started, [r.finish for r in results if r.finish])
    return results


# -- chat completions -------------------------------------------------------------------------


def _logprob_entry(event: TokenEvent) -> oa.TokenLogprobOut:
    return oa.TokenLogprobOut(
        token=event.token_text,
        logprob=float(event.logprob if event.logprob is not None else 0.0),
        bytes=list(event.token_text.encode("utf-8")),
        top_logprobs=[
            oa.TopLogprobOut(token=t.text, logprob=t.logprob, bytes=list(t.text.encode("utf-8"))) for t in event.top_logprobs
        ],
    )


def chat_completion(facts: ModelFacts, prepared: Prepared, results: list[ChoiceResult], response_id: str) -> oa.ChatCompletion:
    choices = []
    for index, result in enumerate(results):
        assert result.finish is not None
        logprobs = None
        if prepared.choices[index].logprobs:
            logprobs = oa.ChoiceLogprobs(content=[_logprob_entry(t) for t in result.tokens])
        message, finish_reason = oa.AssistantMessage(content=result.finish.text), OPENAI_FINISH[result.finish.reason]
        if prepared.tools is not None:
            reply = tool_calls.read_reply(result.finish.text)
            message = oa.AssistantMessage(content=reply.content, tool_calls=[tool_calls.tool_call_dict(reply)] if reply.is_call else None)
            if reply.is_call and finish_reason != "length":
                finish_reason = "tool_calls"
        choices.append(oa.ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=finish_reason))
    completion_tokens = sum(r.finish.generated_tokens for r in results if r.finish)
    return oa.ChatCompletion(
        id=response_id,
        created=int(time.time()),
        model=facts.name,
        system_fingerprint=facts.fingerprint,
        choices=choices,
        usage=oa.Usage(
            prompt_tokens=len(prepared.prompt_ids),
            completion_tokens=completion_tokens,
            total_tokens=len(prepared.prompt_ids) + completion_tokens,
        ),
    )


def _sse(payload: Any) -> str:
    return payload.model_dump_json() if hasattr(payload, "model_dump_json") else json.dumps(payload)


async def stream_chat(
    events: EventStream, metrics: Metrics, facts: ModelFacts, prepared: Prepared, include_usage: bool, response_id: str
) -> AsyncIterator[str]:
    """SSE data strings of a streamed chat completion, OpenAI's shape, ending with ``[DONE]``."""
    chunk_id, created = response_id, int(time.time())

    def chunk(choices: list[oa.ChunkChoice], usage: oa.Usage | None = None) -> str:
        body = oa.ChatCompletionChunk(
            id=chunk_id, created=created, model=facts.name, system_fingerprint=facts.fingerprint, choices=choices, usage=usage
        )
        # OpenAI sends "usage": null on every chunk when include_usage is set, and no key otherwise.
        return body.model_dump_json(exclude_none=False) if include_usage else body.model_dump_json(exclude={"usage"})

    for index in range(len(prepared.choices)):
        yield chunk([oa.ChunkChoice(index=index, delta=oa.ChatDelta())])
    started = time.perf_counter()
    finishes: list[FinishEvent] = []
    streamers = [tool_calls.CallStreamer() for _ in prepared.choices] if prepared.tools is not None else None
    async with aclosing(events):
        async for index, event in events:
            if streamers is not None and not isinstance(event, ErrorEvent):
                # Function calling: the output is JSON the client never sees as such; it becomes tool-call deltas.
                if isinstance(event, TokenEvent):
                    deltas = streamers[index].feed(event.text)
                    reason = None
                else:
                    finishes.append(event)
                    deltas, was_call = streamers[index].finish()
                    reason = OPENAI_FINISH[event.reason]
                    reason = "tool_calls" if was_call and reason != "length" else reason
                for delta in deltas:
                    yield chunk([oa.ChunkChoice(index=index, delta=oa.ChatDelta(**delta) if "content" in delta else oa.ChatDelta(content=None, **delta))])
                if reason is not None:
                    yield chunk([oa.ChunkChoice(index=index, delta=oa.ChatDelta(), finish_reason=reason)])
                continue
            if isinstance(event, TokenEvent):
                wants_logprobs = prepared.choices[index].logprobs
                if not event.text and not wants_logprobs:
                    continue
                logprobs = oa.ChoiceLogprobs(content=[_logprob_entry(event)]) if wants_logprobs else None
                yield chunk([oa.ChunkChoice(index=index, delta=oa.ChatDelta(content=event.text), logprobs=logprobs)])
            elif isinstance(event, FinishEvent):
                finishes.append(event)
                yield chunk([oa.ChunkChoice(index=index, delta=oa.ChatDelta(), finish_reason=OPENAI_FINISH[event.reason])])
            else:
                error = _stream_error(event, metrics, "chat_completions")
                yield json.dumps({"error": {"message": error.message, "type": error.error_type, "http_status_code": error.status}})
                yield "[DONE]"
                return
    metrics.success("chat_completions", time.perf_counter() - started, finishes)
    if include_usage:
        completion_tokens = sum(f.generated_tokens for f in finishes)
        prompt_tokens = len(prepared.prompt_ids)
        yield chunk(
            [],
            oa.Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )
    yield "[DONE]"


# -- completions ------------------------------------------------------------------------------


def _completion_logprobs(tokens: list[TokenEvent], start_offset: int) -> oa.CompletionLogprobs:
    offsets, position = [], start_offset
    for t in tokens:
        offsets.append(position)
        position += len(t.token_text)
    return oa.CompletionLogprobs(
        tokens=[t.token_text for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[{top.text: top.logprob for top in t.top_logprobs} for t in tokens],
        text_offset=offsets,
    )


def completion(facts: ModelFacts, prepared: list[Prepared], results: list[ChoiceResult], echo: bool, response_id: str) -> oa.Completion:
    choices, cursor, prompt_tokens = [], 0, 0
    for p in prepared:
        prompt_tokens += len(p.prompt_ids)
        for params in p.choices:
            result = results[cursor]
            assert result.finish is not None
            prefix = p.prompt_text if echo else ""
            choices.append(
                oa.CompletionChoice(
                    index=cursor,
                    text=prefix + result.finish.text,
                    logprobs=_completion_logprobs(result.tokens, len(prefix)) if params.logprobs else None,
                    finish_reason=OPENAI_FINISH[result.finish.reason],
                )
            )
            cursor += 1
    completion_tokens = sum(r.finish.generated_tokens for r in results if r.finish)
    return oa.Completion(
        id=response_id,
        created=int(time.time()),
        model=facts.name,
        system_fingerprint=facts.fingerprint,
        choices=choices,
        usage=oa.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens),
    )


async def stream_completion(
    events: EventStream, metrics: Metrics, facts: ModelFacts, prepared: list[Prepared], echo: bool, include_usage: bool, response_id: str
) -> AsyncIterator[str]:
    chunk_id, created = response_id, int(time.time())
    flat = [(p, params) for p in prepared for params in p.choices]

    def chunk(index: int, text: str, finish: str | None, logprobs: oa.CompletionLogprobs | None = None) -> str:
        body = oa.Completion(
            id=chunk_id,
            created=created,
            model=facts.name,
            system_fingerprint=facts.fingerprint,
            choices=[oa.CompletionChoice(index=index, text=text, finish_reason=finish, logprobs=logprobs)],
        )
        return body.model_dump_json(exclude={"usage"} if not include_usage else set())

    if echo:
        for index, (p, _) in enumerate(flat):
            yield chunk(index, p.prompt_text, None)
    started = time.perf_counter()
    finishes: list[FinishEvent] = []
    async with aclosing(events):
        async for index, event in events:
            if isinstance(event, TokenEvent):
                params = flat[index][1]
                if event.text or params.logprobs:
                    yield chunk(index, event.text, None, _completion_logprobs([event], 0) if params.logprobs else None)
            elif isinstance(event, FinishEvent):
                finishes.append(event)
                yield chunk(index, "", OPENAI_FINISH[event.reason])
            else:
                error = _stream_error(event, metrics, "completions")
                yield json.dumps({"error": {"message": error.message, "type": error.error_type, "http_status_code": error.status}})
                yield "[DONE]"
                return
    metrics.success("completions", time.perf_counter() - started, finishes)
    if include_usage:
        prompt_tokens = sum(len(p.prompt_ids) for p in prepared)
        completion_tokens = sum(f.generated_tokens for f in finishes)
        usage = oa.Completion(
            id=chunk_id,
            created=created,
            model=facts.name,
            system_fingerprint=facts.fingerprint,
            choices=[],
            usage=oa.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens),
        )
        yield usage.model_dump_json()
    yield "[DONE]"


# -- TGI generate -----------------------------------------------------------------------------


def _token(event: TokenEvent) -> dict[str, Any]:
    return {"id": event.token_id, "text": event.token_text, "logprob": event.logprob, "special": event.special}


def _top_tokens(event: TokenEvent) -> list[dict[str, Any]]:
    return [{"id": t.token_id, "text": t.text, "logprob": t.logprob, "special": False} for t in event.top_logprobs]


def generate_response(
    prepared: Prepared, results: list[ChoiceResult], details: bool, decoder_input_details: bool, return_full_text: bool, tokenizer: Any
) -> dict[str, Any]:
    """TGI's GenerateResponse; with best_of > 1 the choice with the highest total logprob wins, as in TGI."""

    def score(result: ChoiceResult) -> float:
        return sum(t.logprob or 0.0 for t in result.tokens)

    order = sorted(range(len(results)), key=lambda i: score(results[i]), reverse=True)
    best = results[order[0]]
    assert best.finish is not None
    prefix = prepared.prompt_text if return_full_text else ""
    # TGI keeps the matched stop sequence in generated_text (its OpenAI routes, like OpenAI, drop it).
    body: dict[str, Any] = {"generated_text": prefix + best.finish.text_with_stop}
    if details:
        prefill = []
        if decoder_input_details:
            prefill = [{"id": i, "text": tokenizer.decode([i]), "logprob": None} for i in prepared.prompt_ids]

        def sequence(result: ChoiceResult) -> dict[str, Any]:
            assert result.finish is not None
            entry: dict[str, Any] = {
                "finish_reason": result.finish.reason,
                "generated_tokens": result.finish.generated_tokens,
                "seed": result.finish.seed,
                "prefill": prefill,
                "tokens": [_token(t) for t in result.tokens],
            }
            if prepared.choices[0].top_logprobs:
                entry["top_tokens"] = [_top_tokens(t) for t in result.tokens]
            return entry

        body["details"] = sequence(best)
        if len(results) > 1:
            body["details"]["best_of_sequences"] = [
                {"generated_text": prefix + results[i].finish.text_with_stop, **sequence(results[i])}  # type: ignore[union-attr]
                for i in order[1:]
            ]
    return body


async def stream_generate(
    events: EventStream, metrics: Metrics, prepared: Prepared, details: bool, return_full_text: bool
) -> AsyncIterator[str]:
    """TGI's StreamResponse events; the last one carries ``generated_text`` (and ``details`` when asked)."""
    started = time.perf_counter()
    previous: TokenEvent | None = None
    async with aclosing(events):
        async for _, event in events:
            if isinstance(event, TokenEvent):
                if previous is not None:
                    yield json.dumps(_stream_token(previous, prepared))
                previous = event
            elif isinstance(event, FinishEvent):
                metrics.success("generate_stream", time.perf_counter() - started, [event])
                assert previous is not None  # every finished sequence generated at least one token
                last = _stream_token(previous, prepared)
                last["generated_text"] = (prepared.prompt_text if return_full_text else "") + event.text_with_stop
                if details:
                    last["details"] = {
                        "finish_reason": event.reason,
                        "generated_tokens": event.generated_tokens,
                        "input_length": len(prepared.prompt_ids),
                        "seed": event.seed,
                    }
                yield json.dumps(last)
            else:
                error = _stream_error(event, metrics, "generate_stream")
                yield json.dumps(error.body())


def _stream_token(event: TokenEvent, prepared: Prepared) -> dict[str, Any]:
    body: dict[str, Any] = {"index": event.index + 1, "token": _token(event)}  # TGI numbers streamed tokens from 1
    if prepared.choices[0].top_logprobs:
        body["top_tokens"] = _top_tokens(event)  # TGI leaves the key out when empty
    body["generated_text"] = None
    body["details"] = None
    return body
