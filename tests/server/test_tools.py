"""Function calling with the official openai client against the real server and model.

The model is SmolLM2-135M: the grammar makes every call valid JSON for its schema; which function it picks
and what it answers are the model's. Tests check shapes and validity, and the follow-up answers that this
model gets right greedily (measured, deterministic at temperature 0).
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from openai.types.chat import ChatCompletionChunk

MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK = [{"role": "user", "content": "What is 12 times 34?"}]
http = httpx.Client(timeout=120)


def _schema(tool: dict) -> dict:
    return tool["function"]["parameters"]


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_call_is_openai_shaped_and_valid_for_its_schema(server, tool_choice):
    client = server.openai()
    reply = client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER], tool_choice=tool_choice,
        temperature=0, max_tokens=60,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_")
    assert isinstance(call.function.arguments, str)  # a JSON string, as OpenAI sends; TGI sends an object
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, _schema(WEATHER))
    assert arguments["city"] == "Paris"


def test_round_trip_with_a_tool_result(server):
    """auto: the model calls multiply, gets 408 back through a `tool` message, and answers with it."""
    client = server.openai()
    first = client.chat.completions.create(model="tgi", messages=ASK, tools=[MULTIPLY, WEATHER], temperature=0, max_tokens=60)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = message.tool_calls
    assert call.function.name == "multiply" and json.loads(call.function.arguments) == {"a": 12, "b": 34}
    history = [*ASK, message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "408"}]
    second = client.chat.completions.create(model="tgi", messages=history, tools=[MULTIPLY, WEATHER], temperature=0, max_tokens=40)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert "408" in second.choices[0].message.content


def test_ids_of_calls_are_unique(server):
    client = server.openai()
    ids = {
        client.chat.completions.create(model="tgi", messages=ASK, tools=[MULTIPLY], tool_choice="required", temperature=0, max_tokens=30)
        .choices[0].message.tool_calls[0].id
        for _ in range(3)
    }
    assert len(ids) == 3


def test_streamed_call_arrives_as_openai_deltas(server):
    body = {"model": "tgi", "messages": ASK, "tools": [MULTIPLY], "tool_choice": "required", "temperature": 0, "max_tokens": 40, "stream": True}
    with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        payloads = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    assert payloads[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads[:-1]]
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    head, fragments = deltas[0].tool_calls[0], [d.tool_calls[0] for d in deltas[1:]]
    assert head.index == 0 and head.id.startswith("call_") and head.type == "function" and head.function.name == "multiply"
    assert head.function.arguments == ""
    assert len(fragments) > 1, "arguments arrive in pieces as they are generated"
    assert all(f.index == 0 and f.id is None and f.function.name is None for f in fragments)
    assert json.loads("".join(f.function.arguments for f in fragments)) == {"a": 12, "b": 34}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_stream_helper_accumulates_the_call(server):
    client = server.openai()
    with client.chat.completions.stream(model="tgi", messages=ASK, tools=[MULTIPLY], tool_choice="required", temperature=0, max_tokens=40) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert call.function.name == "multiply" and json.loads(call.function.arguments) == {"a": 12, "b": 34}
    assert final.choices[0].finish_reason == "tool_calls"


def test_streamed_text_answer_under_auto_is_plain_content(server):
    body = {"messages": [{"role": "user", "content": "Say hello."}], "tools": [MULTIPLY], "temperature": 0, "max_tokens": 30, "stream": True}
    with http.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
        payloads = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    chunks = [ChatCompletionChunk.model_validate_json(p) for p in payloads[:-1]]
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and "{" not in text  # no JSON of the no_tool wrapper reaches the client
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("body", "needle", "kind"),
    [
        ({"tools": [MULTIPLY], "response_format": {"type": "json_object"}}, "mutually exclusive", "tool_error"),
        ({"tools": [MULTIPLY], "tool_choice": {"type": "function", "function": {"name": "divide"}}}, "'divide'", "tool_error"),
        ({"tool_choice": "required"}, "`tools` is empty", "tool_error"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "tool_error"),
    ],
)
def test_bad_tools_are_422_naming_the_problem(server, body, needle, kind):
    response = http.post(f"{server.url}/v1/chat/completions", json={"messages": ASK, "max_tokens": 5, **body})
    assert response.status_code == 422, response.text
    error = response.json()
    assert needle in error["error"] and error["error_type"] == kind
    assert http.get(f"{server.url}/health").status_code == 200


def test_chat_tokenize_shows_tools_and_tgi_tool_prompt(server):
    """TGI's /chat_tokenize renders the tools as generation does; TGI's `tool_prompt` leads the tool list."""
    body = {"messages": ASK, "tools": [MULTIPLY], "tool_prompt": "Pick a function from this list, as JSON."}
    text = http.post(f"{server.url}/chat_tokenize", json=body).json()["templated_text"]
    assert "Pick a function from this list, as JSON.\n{\"name\": \"multiply\"" in text
    assert "What is 12 times 34?" in text
    reply = server.openai().chat.completions.create(
        model="tgi", messages=ASK, tools=[MULTIPLY], tool_choice="required", temperature=0, max_tokens=30, extra_body={"tool_prompt": body["tool_prompt"]}
    )  # fmt: skip
    assert json.loads(reply.choices[0].message.tool_calls[0].function.arguments).keys() == {"a", "b"}


# A chat template that knows tools, in the common shape (tool list in the system turn, calls and results in
# tags), written for this test: the course model's own template has no tool support.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nYou may call these tools:\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'tool' %}<tool_response>{{ m['content'] }}</tool_response>"
    "{% elif m.get('tool_calls') %}{% for c in m['tool_calls'] %}<tool_call>{{ {'name': c['function']['name'], 'arguments': c['function']['arguments']} | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tool_template_server(start_server, loaded_model):
    import copy

    model = copy.copy(loaded_model)
    model.tokenizer = copy.deepcopy(loaded_model.tokenizer)
    model.tokenizer.chat_template = TOOL_TEMPLATE
    return start_server(loaded=model)


def test_a_template_with_tool_support_renders_tools_calls_and_results(tool_template_server):
    server = tool_template_server
    client = server.openai()
    first = client.chat.completions.create(model="tgi", messages=ASK, tools=[MULTIPLY], tool_choice="required", temperature=0, max_tokens=40)
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and set(json.loads(call.function.arguments)) == {"a", "b"}
    history = [*ASK, first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "408"}]
    text = http.post(f"{server.url}/chat_tokenize", json={"messages": history, "tools": [MULTIPLY]}).json()["templated_text"]
    assert 'You may call these tools:\n{"type": "function", "function": {"name": "multiply", "description": "Multiply two integers"' in text
    # Arguments reach the template as an object (as Hugging Face templates expect), not as a quoted string.
    assert f"<tool_call>{json.dumps({'name': 'multiply', 'arguments': json.loads(call.function.arguments)})}</tool_call>" in text
    assert "<tool_response>408</tool_response>" in text
    second = client.chat.completions.create(model="tgi", messages=history, tools=[MULTIPLY], temperature=0, max_tokens=30)
    assert second.choices[0].finish_reason in ("stop", "tool_calls", "length")
