"""Evaluating a RAG pipeline against the corpus's known facts: retrieval hit@k, answer scores, one table.

Notebook 05 and ``bench.quality`` both ask the questions of ``data/manifest.json`` (61 facts, each with the
page it is on) and score the answers; this module is the one place that knows how. Four pieces, each usable alone:

* :func:`retrieve` — the ``max_k`` nearest chunks of every fact's question, once. Top-k lists are nested
  (the 2 nearest are the first 2 of the 4 nearest), so one search serves every ``k`` up to ``max_k``.
  :meth:`Retrieved.fact_hit` asks whether the answer's text is in the first ``k`` chunks (what the model
  needs), :meth:`Retrieved.page_hit` only whether one of them comes from the fact's page.
* :class:`PromptShape` — how context and question become chat messages: :data:`SYSTEM_CONTEXT` (the
  course's prompt, :data:`tgi_course.course.rag.SYSTEM_TEMPLATE`) and :data:`PACKED` (everything in one
  user message, the usual RAG prompt elsewhere).
* :func:`score` — two rules for "is this answer right". :func:`substring_match` (the expected answer
  appears, case and punctuation ignored) is what most quick evaluations use; it is fooled when the fact
  sits inside a longer number ("3 servers" in "13 servers") or comes with a claim the context does not
  make ("842 runbooks, which is 100% of the knowledge base"). The strict rule also asks for the answer as
  whole words and for every name and number of the answer to appear in the question or the retrieved
  context (:func:`unsupported_terms`, a crude faithfulness check). Strict never accepts what the substring
  rule rejects.
* :func:`evaluate` — every (shape, k, fact) question sent concurrently through an ``AsyncOpenAI`` client,
  greedy, ended at the first sentence (:data:`FIRST_SENTENCE`), at most ``concurrency`` in flight; then
  :func:`table` and :func:`plot`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import rag
from .corpus import Fact

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.vectorstores import VectorStore
    from matplotlib.axes import Axes

__all__ = [
    "FIRST_SENTENCE",
    "PACKED",
    "SHAPES",
    "SYSTEM_CONTEXT",
    "Answer",
    "PromptShape",
    "Reply",
    "Retrieved",
    "Run",
    "Score",
    "corpus_pages",
    "corpus_store",
    "disagreements",
    "evaluate",
    "generate",
    "hit_rate",
    "normalise",
    "plot",
    "retrieve",
    "score",
    "strict_match",
    "substring_match",
    "table",
    "unsupported_terms",
]


# -- retrieval -------------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Lower case, punctuation other than ``.``, ``%`` and ``-`` turned into spaces, runs of spaces collapsed.

    Both sides of every comparison go through it, so "1,200 ms" matches "1,200  MS" and "#harbor-oncall"
    matches "harbor-oncall".
    """
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s.%-]", " ", text.lower())).strip()


@dataclass(frozen=True)
class Retrieved:
    """One fact and its nearest chunks, nearest first."""

    fact: Fact
    chunks: tuple[Document, ...]

    def context(self, k: int) -> str:
        """The first ``k`` chunks as the prompt shows them."""
        return rag.format_docs(self.chunks[:k])

    def page_hit(self, k: int) -> bool:
        """Does one of the first ``k`` chunks come from the fact's page? (Sources are URLs or data paths.)"""
        return any(str(doc.metadata.get("source", "")).endswith(self.fact.file) for doc in self.chunks[:k])

    def fact_hit(self, k: int) -> bool:
        """Is the fact's answer text in the first ``k`` chunks? The model cannot state what it is not shown."""
        return normalise(self.fact.answer) in normalise(self.context(k))


def retrieve(store: VectorStore, facts: Sequence[Fact], max_k: int) -> list[Retrieved]:
    """The ``max_k`` nearest chunks of each fact's question (the questions embedded in one batch)."""
    vectors = store.embeddings.embed_documents([fact.question for fact in facts])
    return [Retrieved(fact, tuple(store.similarity_search_by_vector(vector, k=max_k))) for fact, vector in zip(facts, vectors)]


def hit_rate(retrieved: Sequence[Retrieved], k: int, kind: str = "fact") -> float:
    """Share of facts whose first ``k`` chunks hold the answer (``kind="fact"``) or come from its page (``"page"``)."""
    if kind not in ("fact", "page"):
        raise ValueError(f"kind is 'fact' or 'page', not {kind!r}")
    hits = [r.fact_hit(k) if kind == "fact" else r.page_hit(k) for r in retrieved]
    return sum(hits) / len(hits)


def corpus_pages() -> list[Document]:
    """The course corpus's pages read from ``data/`` directly (no HTTP), one Document per page.

    The text is BeautifulSoup's ``get_text()`` of the file, which is what ``WebBaseLoader`` extracts from the
    served page, so the chunks are the notebook's; the sources are the pages' paths (``corpus/x.html``).
    """
    from bs4 import BeautifulSoup
    from langchain_core.documents import Document

    from .corpus import data_dir, load_manifest

    pages = []
    for doc in load_manifest()["documents"]:
        html = (data_dir() / doc["file"]).read_text(encoding="utf-8")
        text = BeautifulSoup(html, "html.parser").get_text()
        pages.append(Document(page_content=text, metadata={"source": doc["file"], "title": doc["title"]}))
    return pages


def corpus_store(pages: Sequence[Document] | None = None, collection_name: str = "rag_eval") -> VectorStore:
    """A Chroma store of ``pages`` (the course corpus by default) chunked and embedded as notebook 05 does."""
    from langchain_chroma import Chroma

    chunks = rag.split_documents(corpus_pages() if pages is None else pages)
    store = Chroma(collection_name=collection_name, embedding_function=rag.embeddings())
    store.add_documents(chunks, ids=[f"chunk-{i}" for i in range(len(chunks))])
    return store


# -- prompts ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptShape:
    """How a context and a question become chat messages: an optional system template and a user template."""

    name: str
    user: str
    system: str | None = None

    def messages(self, context: str, question: str) -> list[dict[str, str]]:
        """OpenAI-style messages (plain ``str.format``: the templates use ``{context}`` and ``{question}``)."""
        values = {"context": context, "question": question}
        out = [{"role": "system", "content": self.system.format(**values)}] if self.system else []
        return out + [{"role": "user", "content": self.user.format(**values)}]


#: The course's prompt: the context in the system message, the bare question as the user turn.
SYSTEM_CONTEXT = PromptShape("context in system", user="{question}", system=rag.SYSTEM_TEMPLATE)
#: The usual shape elsewhere: instructions, context and question in one user message (notebook 05, section 5).
PACKED = PromptShape(
    "packed in user turn",
    user="Use the context to answer the question.\n\nContext: {context}\n\nQuestion: {question}\nAnswer:",
)
SHAPES = (SYSTEM_CONTEXT, PACKED)


# -- scoring ---------------------------------------------------------------------------------------

_LIST_MARKER = re.compile(r"^\s*\d+[.)]\s+", re.M)  # "1. " opening a list item is layout, not a claim
# A number with what is glued to it ("135M", "100%", "1,200", "02:00"), or a word (letters first).
_TOKEN = re.compile(r"\d+(?:[,.:]\d+)*[^\W_]*%?|[^\W\d_][\w-]*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+|\n\s*)[\"'(*`]*$")


def _terms(answer: str) -> list[str]:
    # Numbers; words with a digit, an underscore or a capital inside (UK, MiniLM, HF_MODEL_ID); and capitalised
    # words that do not open a sentence (names). "The" or "This" opening a sentence is not a name.
    text = _LIST_MARKER.sub(" ", answer)
    terms = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        odd = token[0].isdigit() or any(c.isdigit() or c == "_" for c in token) or any(c.isupper() for c in token[1:])
        if odd or (token[0].isupper() and not _SENTENCE_START.search(text[: match.start()])):
            terms.append(token)
    return terms


def substring_match(expected: str, answer: str) -> bool:
    """The expected answer appears somewhere in the answer (case, punctuation and spacing ignored)."""
    return normalise(expected) in normalise(answer)


def _whole_words(expected: str, answer: str) -> bool:
    # Like substring_match, but not inside a longer word or number: "3 servers" is not in "13 servers".
    return re.search(rf"(?<!\w){re.escape(normalise(expected))}(?!\w)", normalise(answer)) is not None


def unsupported_terms(answer: str, context: str, question: str = "", truncated: bool = False) -> list[str]:
    """Names and numbers of the answer that neither the context nor the question contains (as whole words).

    A crude faithfulness check: it sees invented names ("UK") and numbers ("100%"), not invented claims in
    ordinary words, and a number counts as supported wherever the chunks have it, whatever it counts there.
    ``truncated``: the answer was cut by ``max_tokens``, so its last term may be a piece of a word; that one
    is supported when the source has a word starting with it.
    """
    source = f"{context}\n{question}".lower()
    terms = _terms(answer)
    found = []
    for index, term in enumerate(terms):
        end = "" if truncated and index == len(terms) - 1 else r"(?!\w)"
        if not re.search(rf"(?<!\w){re.escape(term.lower())}{end}", source):
            found.append(term)
    return list(dict.fromkeys(found))


def strict_match(expected: str, answer: str, context: str, question: str = "", truncated: bool = False) -> bool:
    """The expected answer as whole words, and no name or number that the context and question lack."""
    return score(expected, answer, context, question, truncated).strict


@dataclass(frozen=True)
class Score:
    """Both verdicts on one answer, and why the strict one differs when it does."""

    substring: bool
    strict: bool
    unsupported: tuple[str, ...]

    @property
    def reason(self) -> str:
        """Why the strict rule rejects an answer the substring rule accepts ("" when they agree)."""
        if self.substring == self.strict:
            return ""
        if self.unsupported:
            return "not in the chunks: " + ", ".join(self.unsupported)
        return "the fact only inside a longer word or number"


def score(expected: str, answer: str, context: str, question: str = "", truncated: bool = False) -> Score:
    """Score one answer by both rules (see the module's docstring)."""
    unsupported = tuple(unsupported_terms(answer, context, question, truncated))
    substring = substring_match(expected, answer)
    strict = substring and _whole_words(expected, answer) and not unsupported
    return Score(substring, strict, unsupported)


# -- generating and evaluating ---------------------------------------------------------------------

#: Stop sequences that end an answer at its first sentence: the prompt asks for one short sentence, and a
#: 135M model that goes on mostly adds claims nobody asked for (and decoding time).
FIRST_SENTENCE = (". ", ".\n")


@dataclass(frozen=True)
class Reply:
    """A generated answer; ``truncated`` when ``max_tokens`` ended it (its last word may be cut)."""

    text: str
    truncated: bool


async def generate(
    client: Any,
    model: str,
    conversations: Sequence[list[dict[str, str]]],
    *,
    max_tokens: int = 32,
    stop: Sequence[str] | None = None,
    concurrency: int = 16,
) -> list[Reply]:
    """Answers to many conversations through an ``openai.AsyncOpenAI`` client: greedy, at most ``concurrency`` at once.

    The server batches the requests in flight, which is what makes 200 short answers take a minute or two
    and not ten. (A batched greedy answer can differ slightly from the same request sent alone, see notebook
    02; the scores are about sets of answers, so that does not matter here.)
    """
    slots = asyncio.Semaphore(concurrency)
    extra = {"stop": list(stop)} if stop else {}

    async def one(messages: list[dict[str, str]]) -> Reply:
        async with slots:  # waits while `concurrency` requests are in flight
            response = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0, **extra)
        choice = response.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason == "length")

    return list(await asyncio.gather(*(one(messages) for messages in conversations)))


@dataclass(frozen=True)
class Answer:
    """One question asked with one prompt shape and ``k`` chunks, its answer and its score."""

    retrieved: Retrieved
    text: str
    truncated: bool
    score: Score


@dataclass(frozen=True)
class Run:
    """Every fact asked with one prompt shape and ``k`` chunks."""

    shape: PromptShape
    k: int
    answers: tuple[Answer, ...]

    @property
    def substring_accuracy(self) -> float:
        return sum(a.score.substring for a in self.answers) / len(self.answers)

    @property
    def strict_accuracy(self) -> float:
        return sum(a.score.strict for a in self.answers) / len(self.answers)


async def evaluate(
    client: Any,
    model: str,
    retrieved: Sequence[Retrieved],
    shapes: Sequence[PromptShape] = SHAPES,
    ks: Sequence[int] = (2, 4),
    *,
    max_tokens: int = 32,
    stop: Sequence[str] | None = FIRST_SENTENCE,
    concurrency: int = 16,
) -> tuple[list[Run], float]:
    """Ask every fact with every shape and every ``k``, all requests in one concurrent pool.

    Returns one :class:`Run` per (shape, k), in that order, and the wall time in seconds.
    """
    if max(ks) > min(len(r.chunks) for r in retrieved):
        raise ValueError(f"k up to {max(ks)} needs that many retrieved chunks per fact; retrieve with max_k={max(ks)}")
    jobs = [(shape, k, r) for shape in shapes for k in ks for r in retrieved]
    started = time.perf_counter()
    replies = await generate(
        client, model, [shape.messages(r.context(k), r.fact.question) for shape, k, r in jobs],
        max_tokens=max_tokens, stop=stop, concurrency=concurrency,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    answers: dict[tuple[str, int], list[Answer]] = {}
    for (shape, k, r), reply in zip(jobs, replies):
        verdict = score(r.fact.answer, reply.text, r.context(k), r.fact.question, reply.truncated)
        answers.setdefault((shape.name, k), []).append(Answer(r, reply.text, reply.truncated, verdict))
    runs = [Run(shape, k, tuple(answers[shape.name, k])) for shape in shapes for k in ks]
    return runs, seconds


def disagreements(run: Run) -> list[Answer]:
    """The answers of a run that the substring rule accepts and the strict rule rejects."""
    return [a for a in run.answers if a.score.substring != a.score.strict]


def _grid(runs: Sequence[Run]) -> tuple[list[str], list[int], dict[tuple[str, int], Run]]:
    """The shape names and values of k in the order the runs have them, and each run by (shape name, k)."""
    shapes = list(dict.fromkeys(run.shape.name for run in runs))
    ks = list(dict.fromkeys(run.k for run in runs))
    return shapes, ks, {(run.shape.name, run.k): run for run in runs}


def table(retrieved: Sequence[Retrieved], runs: Sequence[Run]) -> str:
    """One row per ``k``: retrieval hit rates, then substring and strict accuracy per prompt shape."""
    shapes, ks, by = _grid(runs)
    n = len(retrieved)
    head = f"{'k':>2}  {'page in top k':>13}  {'fact in top k':>13}"
    for name in shapes:
        head += f"  | {name + ': substring':>30}  {'strict':>8}"
    lines = [head, "-" * len(head)]

    def cell(share: float, width: int) -> str:
        return f"{round(share * n):>2}/{n} {share:4.0%}".rjust(width)

    for k in ks:
        line = f"{k:>2}  {cell(hit_rate(retrieved, k, 'page'), 13)}  {cell(hit_rate(retrieved, k, 'fact'), 13)}"
        for name in shapes:
            run = by[name, k]
            line += f"  | {cell(run.substring_accuracy, 30)}  {cell(run.strict_accuracy, 8)}"
        lines.append(line)
    return "\n".join(lines)


def plot(retrieved: Sequence[Retrieved], runs: Sequence[Run], ax: Axes) -> Axes:
    """Grouped bars on ``ax``, one group per ``k``: the fact retrieved, then each shape's substring and strict accuracy."""
    shapes, ks, by = _grid(runs)
    series: list[tuple[str, list[float], str, str]] = [("fact in top k", [hit_rate(retrieved, k) for k in ks], "0.6", "")]
    for name, colour in zip(shapes, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        series.append((f"{name}: substring", [by[name, k].substring_accuracy for k in ks], colour, ""))
        series.append((f"{name}: strict", [by[name, k].strict_accuracy for k in ks], colour, "//"))
    width = 0.8 / len(series)
    for index, (label, values, colour, hatch) in enumerate(series):
        xs = [group + (index - (len(series) - 1) / 2) * width for group in range(len(ks))]
        # Strict bars: the shape's colour, hatched, so each pair reads as "the same answers, scored twice".
        ax.bar(xs, values, width, label=label, color="white" if hatch else colour, hatch=hatch, edgecolor=colour)
    ax.set_xticks(range(len(ks)), [f"k = {k}" for k in ks])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"share of {len(retrieved)} facts")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return ax
