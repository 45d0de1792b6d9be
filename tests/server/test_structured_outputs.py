"""Structured outputs (``response_format``, ``client.chat.completions.parse``, TGI's ``grammar``) with the
official openai client against the real server and the real default model.

The grammar guarantees the shape; the values are the model's. Tests check that every reply parses and
validates against its schema, and the values this model gets right greedily (deterministic at temperature 0).
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

http = httpx.Client(timeout=120)


class Person(BaseModel):
    name: str
    city: str


PASSAGE = "Maria Lopez runs the harbor lab in Valparaiso. Extract the person's name and city as JSON."


def test_parse_with_a_pydantic_model(server):
    client = server.openai()
    completion = client.chat.completions.parse(model="tgi", messages=[{"role": "user", "content": PASSAGE}], response_format=Person, temperature=0, max_tokens=60)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person)
    assert completion.choices[0].finish_reason == "stop"
    assert "Maria" in person.name


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "person", "schema": Person.model_json_schema(), "strict": True}},
        {"type": "json", "value": Person.model_json_schema()},  # TGI's own shape
        {"type": "json_schema", "value": {"name": "person", "schema": Person.model_json_schema()}},  # TGI 3's json_schema
    ],
)
def test_response_format_shapes_all_validate(server, response_format):
    body = {"messages": [{"role": "user", "content": PASSAGE}], "response_format": response_format, "temperature": 0, "max_tokens": 60}
    reply = ChatCompletion.model_validate(http.post(f"{server.url}/v1/chat/completions", json=body).json())
    jsonschema.validate(json.loads(reply.choices[0].message.content), Person.model_json_schema())


def test_json_object_and_regex(server):
    body = {"messages": [{"role": "user", "content": "Describe a cat in JSON."}], "response_format": {"type": "json_object"}, "temperature": 0, "max_tokens": 80}
    reply = http.post(f"{server.url}/v1/chat/completions", json=body).json()
    if reply["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(reply["choices"][0]["message"]["content"]), dict)
    else:  # cut by max_tokens: still the start of an object
        assert reply["choices"][0]["message"]["content"].startswith("{")
    body = {"messages": [{"role": "user", "content": "When was the lab founded?"}], "response_format": {"type": "regex", "value": r"[0-9]{4}"}, "temperature": 0}
    reply = http.post(f"{server.url}/v1/chat/completions", json=body).json()
    assert len(reply["choices"][0]["message"]["content"]) == 4 and reply["choices"][0]["message"]["content"].isdigit()
    generated = http.post(f"{server.url}/generate", json={"inputs": "The year is", "parameters": {"grammar": {"type": "regex", "value": r" [0-9]{4}\."}}}).json()
    assert generated["generated_text"][1:5].isdigit() and generated["generated_text"].endswith(".")


@pytest.mark.parametrize(
    ("response_format", "needle"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}, "invalid JSON schema"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "json_schema.schema"),
        ({"type": "json", "value": "{not json"}, "not valid JSON"),
        ({"type": "regex", "value": "([a-z"}, "invalid regular expression"),
        ({"type": "xml"}, "response_format.type"),
    ],
)
def test_bad_formats_are_422_naming_the_problem(server, response_format, needle):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "response_format": response_format}
    response = http.post(f"{server.url}/v1/chat/completions", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert needle in error["error"] and error["error_type"] == "validation"
    generate = http.post(f"{server.url}/generate", json={"inputs": "Hi", "parameters": {"grammar": response_format, "max_new_tokens": 5}})
    assert generate.status_code == 422 and needle.replace("response_format", "parameters.grammar") in generate.json()["error"]
