"""Every request limit, checked in one place before anything reaches the engine (as TGI's validation.rs).

Each check raises a 422 whose message names the field, the limit and the value given, so a learner can
fix the request from the error alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..config import ServerConfig
from ..engine import SamplingParams, encode, render_chat
from ..engine.constraints import CompiledGrammar, GrammarError, Grammars
from ..engine.params import LogitsProcessor
from . import tool_calls
from .errors import ApiError, validation_error
from .protocol.openai import ChatCompletionRequest, ChatMessage, CompletionRequest
from .protocol.tgi import GenerateParameters

ROLES = {"system", "user", "assistant", "tool", "developer"}
SEED_LIMIT = 2**64


@dataclass(frozen=True)
class Prepared:
    """A validated request: the prompt once, and the sampling settings of each choice."""

    prompt_text: str
    prompt_ids: list[int]
    choices: tuple[SamplingParams, ...]
    tools: tool_calls.ToolPlan | None = None  # set when the model's output is a function call (or no_tool text)


# Below this a temperature is greedy decoding, as in vLLM (its _SAMPLING_EPS): dividing logits by 1e-40 would
# overflow them to inf, and the step that samples them would fail.
GREEDY_BELOW = 1e-5
# TGI and vLLM only ask for > 0; past ~2 a penalty garbles text, and past 100 it only tests float limits.
MAX_REPETITION_PENALTY = 100.0
# A tool list is compiled into one grammar; the course's lists have 1-3 tools, OpenAI allows 128.
MAX_TOOLS = 128


def _check_finite(name: str, value: float | None) -> None:
    # JSON parsers here accept NaN and Infinity literals, and pydantic lets them through as floats.
    if value is not None and not math.isfinite(value):
        raise validation_error(f"Input validation error: `{name}` must be a finite number, got {value}")


def _check_positive(name: str, value: float | None) -> None:
    _check_finite(name, value)
    if value is not None and value <= 0:
        raise validation_error(f"Input validation error: `{name}` must be strictly positive, got {value}")


def _check_repetition_penalty(value: float | None) -> None:
    _check_positive("repetition_penalty", value)
    if value is not None and value > MAX_REPETITION_PENALTY:
        raise validation_error(f"Input validation error: `repetition_penalty` must be at most {MAX_REPETITION_PENALTY:g}, got {value}")


def _greedy_if_tiny(temperature: float) -> float:
    return 0.0 if temperature < GREEDY_BELOW else temperature


def _check_range(name: str, value: float | None, low: float, high: float, low_open: bool = False) -> None:
    if value is None:
        return
    _check_finite(name, value)
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise validation_error(f"Input validation error: `{name}` must be in {bracket}{low}, {high}], got {value}")


def _logit_bias_processor(bias: dict[str, float], vocab_size: int) -> LogitsProcessor:
    ids, values = [], []
    for key, value in bias.items():
        try:
            token_id = int(key)
        except ValueError:
            raise validation_error(f"Input validation error: `logit_bias` keys must be token ids, got {key!r}") from None
        if not 0 <= token_id < vocab_size:
            raise validation_error(f"Input validation error: `logit_bias` token id {token_id} is outside the vocabulary (0..{vocab_size - 1})")
        _check_range("logit_bias", value, -100, 100)
        ids.append(token_id)
        values.append(value)
    index, delta = torch.tensor(ids, dtype=torch.long), torch.tensor(values, dtype=torch.float32)

    def apply(_: Sequence[int], row: torch.Tensor) -> torch.Tensor:
        row[index.to(row.device)] += delta.to(row.device)
        return row

    return apply


def _schema_value(field: str, value: Any) -> dict[str, Any]:
    """A schema given as an object or as JSON text (TGI accepts both)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise validation_error(f"Input validation error: `{field}` is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise validation_error(f"Input validation error: `{field}` must be a JSON schema object")
    return value


def constrained(choices: tuple[SamplingParams, ...], grammar: CompiledGrammar | None) -> tuple[SamplingParams, ...]:
    """Give every choice its own grammar matcher (a matcher follows one sequence)."""
    if grammar is None:
        return choices
    return tuple(replace(c, logits_processors=(*c.logits_processors, grammar.processor())) for c in choices)


class Validator:
    """Turns wire requests into prompts and :class:`SamplingParams`, enforcing the server's limits."""

    def __init__(self, config: ServerConfig, tokenizer: Any, grammars: Grammars | None = None) -> None:
        assert config.max_input_tokens is not None and config.max_total_tokens is not None
        self.config = config
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.grammars = grammars

    # -- constrained output ----------------------------------------------------------------------
    def _compile(self, field: str, build: Any) -> CompiledGrammar:
        if self.grammars is None:
            raise validation_error(f"Input validation error: `{field}` needs constrained decoding, which this server has not set up")
        try:
            return build(self.grammars)
        except GrammarError as exc:
            raise validation_error(f"Input validation error: `{field}`: {exc}") from None

    def response_grammar(self, field: str, response_format: dict[str, Any] | None) -> CompiledGrammar | None:
        """OpenAI's ``json_object`` / ``json_schema`` and TGI's ``json`` / ``json_object`` / ``regex`` / ``json_schema``."""
        if not response_format:
            return None
        kind = response_format.get("type", "text")
        value = response_format.get("value")
        if kind == "text":
            return None
        if kind == "regex":
            if not isinstance(value, str):
                raise validation_error(f"Input validation error: `{field}.value` must be a regular expression string")
            return self._compile(field, lambda g: g.regex(value))
        if kind in ("json", "json_object"):
            schema = _schema_value(field, value) if value is not None else {"type": "object"}
        elif kind == "json_schema":
            # OpenAI: {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}; TGI: {"value": {"name", "schema"}}.
            config = response_format.get("json_schema", value)
            if not isinstance(config, dict) or "schema" not in config:
                raise validation_error(f"Input validation error: `{field}.json_schema.schema` is required for type 'json_schema'")
            schema = _schema_value(f"{field}.json_schema.schema", config["schema"])
        else:
            raise validation_error(
                f"Input validation error: `{field}.type` must be one of 'text', 'json_object', 'json_schema', 'json', 'regex'; got {kind!r}"
            )
        return self._compile(field, lambda g: g.for_schema(schema))

    # -- shared pieces -------------------------------------------------------------------------
    def check_prompt(self, prompt_ids: list[int]) -> None:
        limit = self.config.max_input_tokens
        if not prompt_ids:
            raise validation_error("Input validation error: the prompt is empty (0 tokens)")
        if len(prompt_ids) > limit:  # type: ignore[operator]
            raise validation_error(
                f"Input validation error: `inputs` must have less than {limit} tokens (MAX_INPUT_TOKENS). "
                f"Given: {len(prompt_ids)}"
            )

    def max_new_tokens(self, field: str, requested: int | None, prompt_tokens: int) -> int:
        total = self.config.max_total_tokens
        assert total is not None
        if requested is None:
            return total - prompt_tokens  # TGI 3 fills the rest of the context
        if requested <= 0:
            raise validation_error(f"Input validation error: `{field}` must be strictly positive, got {requested}")
        if prompt_tokens + requested > total:
            raise validation_error(
                f"Input validation error: `inputs` tokens + `{field}` must be <= {total} (MAX_TOTAL_TOKENS). "
                f"Given: {prompt_tokens} `inputs` tokens and {requested} `{field}`"
            )
        return requested

    def stop_sequences(self, stop: str | list[str] | None) -> tuple[str, ...]:
        if stop is None:
            return ()
        sequences = (stop,) if isinstance(stop, str) else tuple(stop)
        if len(sequences) > self.config.max_stop_sequences:
            raise validation_error(
                f"Input validation error: `stop` supports up to {self.config.max_stop_sequences} stop sequences "
                f"(MAX_STOP_SEQUENCES). Given: {len(sequences)}"
            )
        return sequences

    def choice_count(self, field: str, n: int | None) -> int:
        count = 1 if n is None else n
        if not 1 <= count <= self.config.max_best_of:
            raise validation_error(f"Input validation error: `{field}` must be between 1 and {self.config.max_best_of} (MAX_BEST_OF), got {count}")
        return count

    def seed(self, seed: int | None) -> int | None:
        if seed is not None and not 0 <= seed < SEED_LIMIT:
            raise validation_error(f"Input validation error: `seed` must be in [0, 2^64), got {seed}")
        return seed

    def openai_sampling(self, request: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
        """Checks and defaults of the sampling fields chat and text completions share."""
        temperature, top_p, top_k = request.temperature, request.top_p, request.top_k
        frequency_penalty, presence_penalty = request.frequency_penalty, request.presence_penalty
        repetition_penalty, logit_bias = request.repetition_penalty, request.logit_bias
        _check_range("temperature", temperature, 0.0, 2.0)
        _check_range("top_p", top_p, 0.0, 1.0, low_open=True)
        _check_range("frequency_penalty", frequency_penalty, -2.0, 2.0)
        _check_range("presence_penalty", presence_penalty, -2.0, 2.0)
        _check_repetition_penalty(repetition_penalty)
        for token, bias in (logit_bias or {}).items():
            _check_finite(f"logit_bias.{token}", bias)
        if top_k is not None and top_k <= 0:
            raise validation_error(f"Input validation error: `top_k` must be strictly positive, got {top_k}")
        processors = (_logit_bias_processor(logit_bias, self.vocab_size),) if logit_bias else ()
        return {
            "temperature": 1.0 if temperature is None else _greedy_if_tiny(temperature),  # OpenAI's default
            "top_p": 1.0 if top_p is None else top_p,
            "top_k": top_k or 0,
            "frequency_penalty": frequency_penalty or 0.0,
            "presence_penalty": presence_penalty or 0.0,
            "repetition_penalty": repetition_penalty or 1.0,
            "logits_processors": processors,
        }

    @staticmethod
    def per_choice(base: SamplingParams, count: int) -> tuple[SamplingParams, ...]:
        """n choices of one request: seeded requests get seed, seed+1, ... so the choices differ yet repeat."""
        if count == 1 or base.seed is None:
            return (base,) * count
        return tuple(replace(base, seed=(base.seed + i) % SEED_LIMIT) for i in range(count))

    # -- chat ----------------------------------------------------------------------------------
    def template_messages(self, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        if not messages:
            raise validation_error("Input validation error: `messages` must contain at least one message")
        rendered: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            if message.role not in ROLES:
                raise validation_error(
                    f"Input validation error: `messages[{i}].role` must be one of {sorted(ROLES)}, got {message.role!r}"
                )
            content = message.content
            if isinstance(content, list):
                texts = []
                for j, part in enumerate(content):
                    if part.type != "text":
                        raise validation_error(
                            f"Input validation error: `messages[{i}].content[{j}].type` is {part.type!r}; "
                            "this model accepts text parts only"
                        )
                    texts.append(part.text)  # type: ignore[union-attr]
                content = "".join(texts)
            entry: dict[str, Any] = {
                # Older chat templates know no 'developer' role; OpenAI defines it as the new name of 'system'.
                "role": "system" if message.role == "developer" else message.role,
                "content": content or "",
            }
            if message.tool_calls:
                entry["tool_calls"] = [call.model_dump() for call in message.tool_calls]
            if message.tool_call_id:
                entry["tool_call_id"] = message.tool_call_id
            if message.name:
                entry["name"] = message.name
            rendered.append(entry)
        return rendered

    def render(self, messages: list[ChatMessage], plan: tool_calls.ToolPlan | None = None, tools: list[dict[str, Any]] | None = None) -> tuple[str, list[int]]:
        entries = self.template_messages(messages)
        extra: dict[str, Any] = {}
        if tool_calls.template_supports_tools(self.tokenizer):
            entries = tool_calls.template_messages(entries)
            if plan is not None:
                extra["tools"] = tools
        elif plan is not None or any(m["role"] == "tool" or m.get("tool_calls") for m in entries):
            entries = tool_calls.fallback_messages(entries, plan)
        text = render_chat(self.tokenizer, entries, **extra)
        return text, encode(self.tokenizer, text)

    def tool_plan(self, request: ChatCompletionRequest) -> tool_calls.ToolPlan | None:
        after_results = bool(request.messages) and request.messages[-1].role == "tool"
        return tool_calls.plan_tools(request.tools, request.tool_choice, after_results, request.tool_prompt)

    def chat_prompt(self, request: ChatCompletionRequest) -> str:
        """The prompt text a chat request becomes, tools included (what ``/chat_tokenize`` shows)."""
        return self.render(request.messages, self.tool_plan(request), request.tools)[0]

    def chat(self, request: ChatCompletionRequest) -> Prepared:
        if request.tools is not None and len(request.tools) > MAX_TOOLS:
            raise validation_error(f"Input validation error: `tools` holds {len(request.tools)} tools; at most {MAX_TOOLS} are accepted")
        plan = self.tool_plan(request)
        has_format = bool(request.response_format) and request.response_format.get("type", "text") != "text"  # type: ignore[union-attr]
        if plan is not None and has_format:
            raise tool_calls.tool_error("`tools` and `response_format` cannot be used together (grammar and tools are mutually exclusive)")
        grammar = (
            self._compile("tools", plan.grammar)
            if plan is not None
            else self.response_grammar("response_format", request.response_format)
        )
        if request.max_tokens is not None and request.max_completion_tokens is not None and request.max_tokens != request.max_completion_tokens:
            raise validation_error("Input validation error: give only one of `max_tokens` and `max_completion_tokens`")
        top_logprobs = request.top_logprobs or 0
        if request.top_logprobs is not None:
            if not request.logprobs:
                raise validation_error("Input validation error: `top_logprobs` requires `logprobs` to be true")
            if not 0 <= top_logprobs <= self.config.max_top_n_tokens:
                raise validation_error(
                    f"Input validation error: `top_logprobs` must be between 0 and {self.config.max_top_n_tokens} "
                    f"(MAX_TOP_N_TOKENS), got {top_logprobs}"
                )
        sampling = self.openai_sampling(request)
        count = self.choice_count("n", request.n)
        stop = self.stop_sequences(request.stop)
        seed = self.seed(request.seed)
        text, ids = self.render(request.messages, plan, request.tools)
        self.check_prompt(ids)
        field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        requested = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        base = SamplingParams(
            max_new_tokens=self.max_new_tokens(field, requested, len(ids)),
            seed=seed,
            stop=stop,
            logprobs=bool(request.logprobs),
            top_logprobs=top_logprobs,
            ignore_eos=request.ignore_eos,
            **sampling,
        )
        return Prepared(text, ids, constrained(self.per_choice(base, count), grammar), plan)

    # -- completions ---------------------------------------------------------------------------
    def completion(self, request: CompletionRequest) -> list[Prepared]:
        if request.suffix:
            raise validation_error("Input validation error: `suffix` (fill-in-the-middle) is not supported by this model")
        logprobs = request.logprobs
        if logprobs is not None and not 0 <= logprobs <= self.config.max_top_n_tokens:
            raise validation_error(
                f"Input validation error: `logprobs` must be between 0 and {self.config.max_top_n_tokens} (MAX_TOP_N_TOKENS), got {logprobs}"
            )
        if request.best_of is not None and request.best_of != (request.n or 1):
            raise validation_error("Input validation error: `best_of` different from `n` is not supported")
        sampling = self.openai_sampling(request)
        count = self.choice_count("n", request.n)
        stop = self.stop_sequences(request.stop)
        seed = self.seed(request.seed)
        raw = request.prompt
        listed = 1 if isinstance(raw, str) or not raw or all(isinstance(p, int) for p in raw) else len(raw)
        if listed > self.config.max_client_batch_size:  # checked before tokenizing any of them
            raise validation_error(
                f"Input validation error: `prompt` holds {listed} prompts; at most {self.config.max_client_batch_size} "
                "are accepted in one request (MAX_CLIENT_BATCH_SIZE)"
            )
        prompts = self._prompts(raw)
        if len(prompts) * count > self.config.max_concurrent_requests:
            raise validation_error(
                f"Input validation error: {len(prompts)} prompts x n={count} exceeds MAX_CONCURRENT_REQUESTS={self.config.max_concurrent_requests}"
            )
        prepared = []
        for text, ids in prompts:
            self.check_prompt(ids)
            base = SamplingParams(
                max_new_tokens=self.max_new_tokens("max_tokens", 16 if request.max_tokens is None else request.max_tokens, len(ids)),
                seed=seed,
                stop=stop,
                logprobs=logprobs is not None,
                top_logprobs=logprobs or 0,
                ignore_eos=request.ignore_eos,
                **sampling,
            )
            prepared.append(Prepared(text, ids, self.per_choice(base, count)))
        return prepared

    def _prompts(self, prompt: Any) -> list[tuple[str, list[int]]]:
        if isinstance(prompt, str):
            return [(prompt, encode(self.tokenizer, prompt, add_special_tokens=True))]
        if not prompt:
            raise validation_error("Input validation error: `prompt` must not be empty")
        if all(isinstance(p, str) for p in prompt):
            return [(p, encode(self.tokenizer, p, add_special_tokens=True)) for p in prompt]
        if all(isinstance(p, int) for p in prompt):
            return [self._from_ids(prompt)]
        return [self._from_ids(p) for p in prompt]

    def _from_ids(self, ids: list[int]) -> tuple[str, list[int]]:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise validation_error(f"Input validation error: `prompt` token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.tokenizer.decode(ids), list(ids)

    # -- TGI generate --------------------------------------------------------------------------
    def generate(self, inputs: str, parameters: GenerateParameters) -> Prepared:
        p = parameters
        _check_positive("temperature", p.temperature)
        _check_range("top_p", p.top_p, 0.0, 1.0, low_open=True)
        if p.top_p is not None and p.top_p == 1.0:
            p = p.model_copy(update={"top_p": None})  # TGI rejects 1.0; it means "off", so we accept it
        _check_range("typical_p", p.typical_p, 0.0, 1.0, low_open=True)
        _check_repetition_penalty(p.repetition_penalty)
        _check_range("frequency_penalty", p.frequency_penalty, -2.0, 2.0)
        if p.top_k is not None and p.top_k <= 0:
            raise validation_error(f"Input validation error: `top_k` must be strictly positive, got {p.top_k}")
        top_n = p.top_n_tokens or 0
        if not 0 <= top_n <= self.config.max_top_n_tokens:
            raise validation_error(
                f"Input validation error: `top_n_tokens` must be between 0 and {self.config.max_top_n_tokens} (MAX_TOP_N_TOKENS), got {top_n}"
            )
        grammar = self.response_grammar("parameters.grammar", p.grammar)
        count = self.choice_count("best_of", p.best_of)
        if count > 1 and not p.do_sample and p.temperature is None and p.top_k is None and p.top_p is None:
            raise validation_error("Input validation error: `best_of` > 1 needs sampling (`do_sample` or a sampling parameter)")
        stop = self.stop_sequences(p.stop)
        seed = self.seed(p.seed)
        ids = encode(self.tokenizer, inputs, add_special_tokens=True)
        if p.truncate is not None:
            if p.truncate <= 0:
                raise validation_error(f"Input validation error: `truncate` must be strictly positive, got {p.truncate}")
            ids = ids[-p.truncate :]
        self.check_prompt(ids)
        # TGI samples when asked to, or as soon as any sampling parameter changes the distribution.
        sampling = p.do_sample or (p.temperature not in (None, 1.0)) or bool(p.top_k) or p.top_p is not None or p.typical_p is not None
        base = SamplingParams(
            max_new_tokens=self.max_new_tokens("max_new_tokens", p.max_new_tokens, len(ids)),
            temperature=_greedy_if_tiny(p.temperature or 1.0) if sampling else 0.0,
            top_p=p.top_p or 1.0,
            top_k=p.top_k or 0,
            seed=seed,
            repetition_penalty=p.repetition_penalty or 1.0,
            frequency_penalty=p.frequency_penalty or 0.0,
            stop=stop,
            logprobs=True,
            top_logprobs=top_n,
        )
        return Prepared(inputs, ids, constrained(self.per_choice(base, count), grammar))
