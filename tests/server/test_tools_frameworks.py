"""LangChain and LlamaIndex use the server's function calling and structured outputs exactly as their docs
show, against the real server and the real default model (greedy)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel, Field


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Person(BaseModel):
    """A person named in a text."""

    name: str = Field(description="the person's full name")
    city: str = Field(description="the city where the person works")


PASSAGE = "Maria Lopez runs the harbor lab in Valparaiso. Who is it, and where?"


@pytest.fixture(scope="module")
def chat(server):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=f"{server.url}/v1", api_key="-", model="tgi", temperature=0, max_tokens=60)


def test_langchain_bind_tools_produces_tool_calls(chat):
    from langchain_core.tools import tool

    message = chat.bind_tools([tool(multiply)], tool_choice="required").invoke("What is 12 times 34?")
    (call,) = message.tool_calls
    # 12 and 34 are copied from the question: this holds in float32 and bf16 alike (checked under both DTYPEs).
    assert call["name"] == "multiply" and call["args"] == {"a": 12, "b": 34} and call["id"].startswith("call_")


def test_langchain_streaming_aggregates_the_call(chat):
    from langchain_core.tools import tool

    chunks = list(chat.bind_tools([tool(multiply)], tool_choice="required").stream("What is 12 times 34?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert len(chunks) > 3
    (call,) = merged.tool_calls
    assert call["name"] == "multiply" and call["args"] == {"a": 12, "b": 34}


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output_returns_the_model(chat, method):
    person = chat.with_structured_output(Person, method=method).invoke(PASSAGE)
    # The contract, not the words: which name and city a 135M model copies differs between float32 and bf16
    # (in float32 the city came back as something other than "Valparaiso"); the grammar guarantees the shape.
    assert isinstance(person, Person)
    assert isinstance(person.name, str) and person.name.strip()
    assert isinstance(person.city, str) and person.city.strip()


def test_langchain_agent_uses_the_tool_to_answer(chat):
    from langchain.agents import create_agent

    agent = create_agent(chat, tools=[multiply])
    result = agent.invoke({"messages": [{"role": "user", "content": "What is 12 times 34?"}]})
    kinds = [m.type for m in result["messages"]]
    assert kinds == ["human", "ai", "tool", "ai"]
    assert result["messages"][2].content == "408"
    assert "408" in result["messages"][-1].content


def test_llamaindex_function_agent_uses_the_tool(server):
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool
    from llama_index.llms.openai_like import OpenAILike

    llm = OpenAILike(
        model="tgi", api_base=f"{server.url}/v1", api_key="-", is_chat_model=True, is_function_calling_model=True,
        context_window=4096, max_tokens=60, temperature=0,
    )  # fmt: skip
    calls: list[tuple[int, int]] = []

    def tracked_multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append((a, b))
        return a * b

    agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=tracked_multiply, name="multiply")], llm=llm, streaming=False)
    async def ask() -> object:
        return await agent.run("What is 12 times 34?")  # the workflow needs a running event loop

    response = asyncio.run(ask())
    assert calls == [(12, 34)]
    assert "408" in str(response)
