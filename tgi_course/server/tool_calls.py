"""Function calling on the Messages API: which calls a request allows, how the prompt describes them, and how
the model's constrained output becomes OpenAI ``tool_calls`` (whole, or as streamed deltas).

The model writes one JSON object, ``{"name": <function>, "arguments": {...}}``, under a grammar built from
the tools' parameter schemas, so the call always parses and matches its schema. With ``tool_choice: auto``
one more choice is offered, TGI's ``no_tool`` with ``{"content": <text>}``: picking it means "answer in
text", and the client receives ordinary content. The reply carries ``function.arguments`` as a JSON
*string* and ``finish_reason: "tool_calls"``, as OpenAI does (and TGI since 3.2; before, it sent an object).

Chat templates without tool support (the course model's) get a documented fallback: the tool list goes into
the system message, earlier calls are written back as the same JSON the model produces, and tool results
become user turns that name the function.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..engine.constraints import CompiledGrammar, Grammars
from .errors import ApiError

NO_TOOL = "no_tool"  # TGI's name for "answer in text"; reserved, and read back as text if a model writes it

# The model's output starts with this prefix once the function is chosen; whitespace-tolerant, although the
# grammar makes the JSON compact.
_PREFIX = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


def tool_error(message: str) -> ApiError:
    return ApiError(422, "tool_error", f"Tool error: {message}")


@dataclass(frozen=True)
class ToolPlan:
    """What the model may emit for one request: a call of one of ``names``, or text when ``allow_text``."""

    functions: tuple[dict[str, Any], ...]  # OpenAI function definitions of the callable tools
    allow_text: bool
    after_results: bool = False  # the conversation ends with tool results
    prompt: str | None = None  # TGI's `tool_prompt`: replaces the lead-in of the tool list (fallback rendering)

    def grammar(self, grammars: Grammars) -> CompiledGrammar:
        """The grammar of the model's whole output.

        ``required`` / named: one call object. ``auto`` answering a user message: one object that names a
        function or ``no_tool`` with ``{"content": <words>}`` (TGI's approach: the choice is the model's, made
        on the name, which lets small models call tools at all). ``auto`` right after tool results: free
        words, and a call only if the model starts one (vLLM's approach with xgrammar's triggered tags),
        which lets small models answer from the results instead of repeating the call they were shown.
        """
        if not self.allow_text or not self.after_results:
            options = [_call_schema(f["name"], _parameters(f)) for f in self.functions]
            if self.allow_text:
                options.append(_call_schema(NO_TOOL, {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]}))
            return grammars.for_schema(options[0] if len(options) == 1 else {"anyOf": options})
        tags = [
            {"type": "tag", "begin": f'{trigger}"{f["name"]}"{comma}"arguments"{colon}',
             "content": {"type": "json_schema", "json_schema": _parameters(f), "max_whitespace_cnt": 1}, "end": "}"}
            for trigger, comma, colon in _TRIGGERS
            for f in self.functions
        ]  # fmt: skip
        triggered = {"type": "triggered_tags", "triggers": [_CALL_START], "tags": tags, "stop_after_first": True}
        return grammars.for_structural_tag({"type": "structural_tag", "format": triggered})


# A call starts with '{"name": ' (the spacing the prompt shows) or, compact, '{"name":'; one trigger covers both.
_CALL_START = '{"name":'
_TRIGGERS = (('{"name": ', ", ", ": "), ('{"name":', ",", ":"))


def _parameters(function: dict[str, Any]) -> dict[str, Any]:
    # TGI's own FunctionDefinition calls the schema "arguments"; OpenAI calls it "parameters".
    return function.get("parameters") or function.get("arguments") or {"type": "object", "properties": {}}


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def plan_tools(
    tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None, after_results: bool = False, tool_prompt: str | None = None
) -> ToolPlan | None:
    """Check ``tools`` and ``tool_choice`` (OpenAI's shapes); None when the model must answer in plain text."""
    if tool_choice is not None and not tools:
        if tool_choice == "none":
            return None
        raise tool_error("`tool_choice` is set but `tools` is empty")
    if not tools:
        return None
    functions = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise tool_error(f"`tools[{i}]` must be {{\"type\": \"function\", \"function\": {{...}}}}")
        name = function.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise tool_error(f"`tools[{i}].function.name` must be 1-64 letters, digits, '_' or '-', got {name!r}")
        if name == NO_TOOL:
            raise tool_error(f"`tools[{i}].function.name` {NO_TOOL!r} is reserved for answering in text")
        parameters = function.get("parameters", function.get("arguments"))
        if parameters is not None and not isinstance(parameters, dict):
            raise tool_error(f"`tools[{i}].function.parameters` must be a JSON schema object")
        functions.append(function)
    choice = "auto" if tool_choice is None else tool_choice
    if choice == "none":
        return None
    if choice == "auto":
        return ToolPlan(tuple(functions), allow_text=True, after_results=after_results, prompt=tool_prompt)
    if choice == "required":
        return ToolPlan(tuple(functions), allow_text=False, prompt=tool_prompt)
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [f for f in functions if f["name"] == name]
        if not chosen:
            raise tool_error(f"`tool_choice` names function {name!r}, which is not in `tools` ({', '.join(f['name'] for f in functions)})")
        return ToolPlan((chosen[0],), allow_text=False, prompt=tool_prompt)
    raise tool_error(f"`tool_choice` must be 'none', 'auto', 'required' or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {choice!r}")


# -- prompt --------------------------------------------------------------------------------------


def template_supports_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return isinstance(template, str) and "tools" in template


def describe_tools(plan: ToolPlan) -> str:
    """System-message text for templates that know no tools: the contract the grammar enforces, in words."""
    lines = [plan.prompt or "You have these functions:"]
    for f in plan.functions:
        lines.append(json.dumps({k: f[k] for k in ("name", "description", "parameters") if k in f}))
    lines.append(
        "When a function can answer the question, call it: reply with only a JSON object, "
        '{"name": "<function name>", "arguments": {<arguments>}}.'
    )
    if plan.allow_text and plan.after_results:
        lines.append("When a function has already returned what you need, answer in words.")
    elif plan.allow_text:
        lines.append(f'When no function fits, call "{NO_TOOL}" with your answer to the user in "content".')
    return "\n".join(lines)


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template that knows tools: call arguments as objects, not JSON text.

    OpenAI's wire format carries ``arguments`` as a string; Hugging Face chat templates expect a dict
    (most write ``arguments | tojson``, which would print a string as a quoted, escaped blob), so they are
    parsed back here, as vLLM does. Arguments that are not JSON are left as they are.
    """
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                function = dict(call.get("function") or {})
                if isinstance(function.get("arguments"), str):
                    try:
                        function["arguments"] = json.loads(function["arguments"])
                    except json.JSONDecodeError:
                        pass
                calls.append({**call, "function": function})
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


_ANSWER_FROM_RESULTS = "\nUse this to answer."


def fallback_messages(messages: list[dict[str, Any]], plan: ToolPlan | None) -> list[dict[str, Any]]:
    """Messages a tool-less template can render.

    A finished exchange (the assistant's calls and the tools' results) is folded into the user turn before
    it, as text naming each function and its result: small models shown their own JSON call in an assistant
    turn copy it again instead of answering (measured on SmolLM2-135M: 4 of 4 follow-ups repeated the call;
    folded, they answered from the result).
    """
    names_by_id: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                function = call.get("function") or {}
                names_by_id[call.get("id") or ""] = function.get("name", "")
            if m.get("content"):
                out.append({"role": "assistant", "content": m["content"]})
        elif m["role"] == "tool":
            name = m.get("name") or names_by_id.get(m.get("tool_call_id") or "", "")
            result = f"The function {name or 'you called'} returned: {m.get('content') or ''}"
            if out and out[-1]["role"] == "user":
                previous = out[-1]["content"].removesuffix(_ANSWER_FROM_RESULTS)
                out[-1] = {"role": "user", "content": f"{previous}\n{result}{_ANSWER_FROM_RESULTS}"}
            else:
                out.append({"role": "user", "content": f"{result}{_ANSWER_FROM_RESULTS}"})
        else:
            out.append({k: v for k, v in m.items() if k in ("role", "content")})
    if plan is not None:
        description = describe_tools(plan)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{description}".strip()}
        else:
            out.insert(0, {"role": "system", "content": description})
    return out


# -- output --------------------------------------------------------------------------------------


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ModelReply:
    """The model's constrained output, read back: text content, or one function call."""

    content: str | None
    name: str | None = None
    arguments: str | None = None  # JSON text, exactly as generated

    @property
    def is_call(self) -> bool:
        return self.name is not None


def _call_start(text: str) -> int:
    """Where a call object starts in ``text`` (-1 if none): the first '{"name":' (spacing aside)."""
    match = re.search(r'\{\s*"name"\s*:', text)
    return -1 if match is None else match.start()


def split_call(text: str) -> tuple[str, str] | None:
    """(function name, arguments JSON text) of ``{"name": ..., "arguments": ...}``; None before the name is complete."""
    match = _PREFIX.match(text)
    if match is None:
        return None
    name = json.loads(f'"{match.group(1)}"')
    rest = text[match.end() :].rstrip()
    return name, rest[:-1].rstrip() if rest.endswith("}") else rest  # drop the outer object's closing brace


def read_reply(text: str) -> ModelReply:
    """Whole output -> reply: words, a call, or words then a call. A sequence cut by ``max_tokens`` keeps
    the arguments generated so far."""
    start = _call_start(text)
    parts = split_call(text[start:]) if start >= 0 else None
    if parts is None:
        return ModelReply(content=text)
    name, arguments = parts
    before = text[:start].strip() or None
    if name == NO_TOOL:
        try:
            return ModelReply(content=str(json.loads(arguments).get("content", "")))
        except (json.JSONDecodeError, AttributeError):
            return ModelReply(content=arguments)
    return ModelReply(content=before, name=name, arguments=arguments)


def tool_call_dict(reply: ModelReply) -> dict[str, Any]:
    return {"id": call_id(), "type": "function", "function": {"name": reply.name, "arguments": reply.arguments}}


@dataclass
class CallStreamer:
    """Turns the growing output of one choice into OpenAI stream deltas.

    Words stream as content, except a tail that could still become '{"name":' (held back until it can't).
    A call streams as it is generated: one delta with ``index``, ``id``, ``type`` and ``name`` (arguments
    ""), then argument fragments; the last character is always held back, since it may be the call
    object's closing brace.
    """

    text: str = ""
    sent_content: int = 0
    call_at: int = -1  # where the call object starts in ``text``
    name: str | None = None
    sent_arguments: int = 0
    _announced: bool = False

    def feed(self, piece: str) -> list[dict[str, Any]]:
        self.text += piece
        deltas: list[dict[str, Any]] = []
        if self.call_at < 0:
            self.call_at = _call_start(self.text)
            safe = self.call_at if self.call_at >= 0 else _safe_content_end(self.text)
            if safe > self.sent_content:
                deltas.append({"content": self.text[self.sent_content : safe]})
                self.sent_content = safe
        if self.call_at < 0:
            return deltas
        call_text = self.text[self.call_at :]
        if self.name is None:
            parts = split_call(call_text)
            if parts is None:
                return deltas
            self.name = parts[0]
        if self.name == NO_TOOL:
            return deltas  # words inside JSON: sent whole, unescaped, by finish()
        if not self._announced:
            self._announced = True
            deltas.append(_opening_delta(self.name))
        match = _PREFIX.match(call_text)
        assert match is not None
        available = call_text[match.end() :]
        ready = len(available) - 1  # hold the last character back
        if ready > self.sent_arguments:
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": available[self.sent_arguments : ready]}}]})
            self.sent_arguments = ready
        return deltas

    def finish(self) -> tuple[list[dict[str, Any]], bool]:
        """Deltas still owed at the end, and whether the choice was a call."""
        reply = read_reply(self.text)
        if not reply.is_call:
            rest = (reply.content or "") if self.name == NO_TOOL else self.text[self.sent_content :]
            return ([{"content": rest}] if rest else []), False
        deltas: list[dict[str, Any]] = []
        if not self._announced:
            if self.call_at > self.sent_content:
                deltas.append({"content": self.text[self.sent_content : self.call_at].rstrip()})
            deltas.append(_opening_delta(reply.name))
        rest = (reply.arguments or "")[self.sent_arguments :]
        if rest:
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": rest}}]})
        return deltas, True


def _opening_delta(name: str | None) -> dict[str, Any]:
    """The first delta of a streamed call: index, a fresh id, type and name, arguments still empty."""
    return {"tool_calls": [{"index": 0, "id": call_id(), "type": "function", "function": {"name": name, "arguments": ""}}]}


def _safe_content_end(text: str) -> int:
    """Length of ``text`` that can be sent as words: all but a tail that may start '{"name":'."""
    brace = text.rfind("{")
    if brace < 0:
        return len(text)
    tail = re.sub(r"\s+", "", text[brace:])
    return brace if _CALL_START.startswith(tail) else len(text)
