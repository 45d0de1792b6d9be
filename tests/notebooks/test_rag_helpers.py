"""The helpers behind notebooks 05 and 06, with the real corpus server, real embeddings and real Chroma.

The last test asks the real default model, through the real server, the question notebook 05 stores an
answer for; the course promises that the greedy answer states the fact.
"""

from __future__ import annotations

import math
import os
import socket
from urllib.parse import urlparse

import httpx
import pytest

from tgi_course.course import corpus, notebook_env, rag

QUESTION = "What is the Harbor Lab assistant called?"
FACT = "Tidewatch"


@pytest.fixture(scope="module")
def corpus_server():
    with corpus.CorpusServer() as server:
        yield server


@pytest.fixture(scope="module")
def pages(corpus_server):
    return rag.load_pages(corpus_server.page_urls())


@pytest.fixture(scope="module")
def embeddings():
    notebook_env.quiet()
    return rag.embeddings()


@pytest.fixture(scope="module")
def vector_store(pages, embeddings):
    from langchain_chroma import Chroma

    chunks = rag.split_documents(pages)
    store = Chroma(collection_name="test_rag_helpers", embedding_function=embeddings)
    store.add_documents(chunks, ids=[f"chunk-{i}" for i in range(len(chunks))])
    yield store
    store.delete_collection()


# -- corpus server ---------------------------------------------------------------------------------

def test_corpus_server_serves_the_pages_on_loopback_and_stops(corpus_server) -> None:
    url = urlparse(corpus_server.url)
    assert url.hostname == "127.0.0.1" and url.port
    for page_url in corpus_server.page_urls():
        response = httpx.get(page_url, timeout=10)
        assert response.status_code == 200 and "<html" in response.text
    assert httpx.get(corpus_server.url + "corpus/does-not-exist.html", timeout=10).status_code == 404

    with corpus.CorpusServer() as other:
        port = urlparse(other.url).port
        assert port != url.port  # each server takes its own free port
    assert not other.running
    with socket.socket() as probe:  # the port is free again once stopped
        probe.bind(("127.0.0.1", port))
    other.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError):
        _ = other.url


def test_manifest_facts_are_in_the_loaded_pages(pages, corpus_server) -> None:
    all_facts = corpus.facts()
    assert len(all_facts) >= 20
    harbor = corpus.facts("harbor-lab")
    assert harbor and all(f.file.endswith("harbor-lab-case-study.html") for f in harbor)
    assert harbor[0].question == QUESTION and harbor[0].answer == FACT
    text = {page.metadata["source"]: " ".join(page.page_content.split()) for page in pages}
    for fact in all_facts:
        assert fact.answer in text[corpus_server.url + fact.file], fact


def test_data_dir_can_be_overridden(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(corpus.DATA_ENV, str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"documents": []}')
    assert corpus.data_dir() == tmp_path
    assert corpus.page_paths() == []


# -- loading, splitting, embedding -----------------------------------------------------------------

def test_pages_load_with_titles_and_sources(pages, corpus_server) -> None:
    assert len(pages) == len(corpus.page_paths()) >= 6
    for page in pages:
        assert page.metadata["source"].startswith(corpus_server.url)
        assert page.metadata["title"]
        assert len(page.page_content.split()) > 300


def test_chunks_respect_the_size_and_keep_metadata(pages) -> None:
    chunks = rag.split_documents(pages)
    assert len(chunks) > 3 * len(pages)
    assert max(len(c.page_content) for c in chunks) <= rag.CHUNK_SIZE
    assert all(c.metadata["source"] and c.metadata["title"] for c in chunks)


def test_embeddings_are_local_384_dimensional_and_normalized(embeddings) -> None:
    assert os.path.isdir(rag.embedding_model_path())
    vector = embeddings.embed_query("an on-call assistant")
    assert len(vector) == 384
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-4)


# -- retrieval and the chain -----------------------------------------------------------------------

def test_chroma_retrieves_the_chunk_with_the_fact(vector_store, corpus_server) -> None:
    docs = vector_store.as_retriever(search_kwargs={"k": rag.TOP_K}).invoke(QUESTION)
    assert len(docs) == rag.TOP_K
    assert FACT in rag.format_docs(docs)
    assert corpus_server.url + "corpus/harbor-lab-case-study.html" in rag.sources(docs)


def test_prompt_puts_context_in_the_system_message_and_the_bare_question_last() -> None:
    messages = rag.rag_prompt().invoke({"context": "Tidewatch is the assistant.", "question": QUESTION}).to_messages()
    assert [m.type for m in messages] == ["system", "human"]
    assert "Tidewatch is the assistant." in messages[0].content
    assert messages[1].content == QUESTION


def test_format_docs_and_sources() -> None:
    from langchain_core.documents import Document

    docs = [
        Document(page_content="a\n\n  b", metadata={"source": "u1"}),
        Document(page_content="c", metadata={"source": "u2"}),
        Document(page_content="d", metadata={"source": "u1"}),
    ]
    assert rag.format_docs(docs) == "a b\n\nc\n\nd"
    assert rag.sources(docs) == ["u1", "u2"]


def test_chain_returns_answer_with_its_sources_offline(vector_store) -> None:
    """The chain's shape, with a scripted chat model standing in for the server."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    seen = []

    class RecordingModel(GenericFakeChatModel):
        def _generate(self, messages, *args, **kwargs):
            seen.append(messages)
            return super()._generate(messages, *args, **kwargs)

    model = RecordingModel(messages=iter([AIMessage(content="It is called Tidewatch.")]))
    retriever = vector_store.as_retriever(search_kwargs={"k": rag.TOP_K})
    result = rag.build_rag_chain(retriever, model).invoke(QUESTION)
    assert set(result) == {"context", "question", "answer"}
    assert result["question"] == QUESTION and result["answer"] == "It is called Tidewatch."
    assert len(result["context"]) == rag.TOP_K
    system, human = seen[0]
    assert FACT in system.content and human.content == QUESTION


@pytest.mark.slow
def test_the_default_model_answers_with_the_fact(vector_store, server) -> None:
    """Real model, real server, greedy: the answer notebook 05 promises."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="tgi", base_url=server.base_url, api_key="-", temperature=0, max_tokens=48, max_retries=0)
    retriever = vector_store.as_retriever(search_kwargs={"k": rag.TOP_K})
    result = rag.build_rag_chain(retriever, llm).invoke(QUESTION)
    assert FACT.lower() in result["answer"].lower(), result["answer"]
    assert any(url.endswith("harbor-lab-case-study.html") for url in rag.sources(result["context"]))


# -- notebook environment --------------------------------------------------------------------------

def test_quiet_sets_defaults_without_overriding(monkeypatch) -> None:
    for name in notebook_env.QUIET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER_AGENT", "my-agent")
    notebook_env.quiet()
    assert os.environ["TQDM_DISABLE"] == "1"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["USER_AGENT"] == "my-agent"
