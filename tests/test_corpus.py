"""Checks for the course reading corpus in data/corpus and its manifest.

The RAG notebook serves these pages from a local web server and answers the
manifest questions from them, so the pages must be well formed, large enough
to be worth retrieving from, and must contain every manifest answer verbatim.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
CORPUS = DATA / "corpus"
MANIFEST = DATA / "manifest.json"

MIN_DOCUMENTS = 6
MIN_TOTAL_WORDS = 4000
MIN_FACTS_PER_DOCUMENT = 2
WORD_TOLERANCE = 0.05

VOID_ELEMENTS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input",
    "link", "meta", "source", "track", "wbr",
}


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def manifest_documents() -> list[dict]:
    return load_manifest()["documents"]


def parse(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def visible_text(path: Path) -> str:
    """Text of <body> without scripts or styles, whitespace collapsed."""
    body = parse(path).body
    assert body is not None, f"{path.name} has no <body>"
    for tag in body(["script", "style", "template", "noscript"]):
        tag.decompose()
    return " ".join(body.get_text(" ").split())


def word_count(path: Path) -> int:
    return len(visible_text(path).split())


def _doc_id(doc: dict) -> str:
    return doc["file"]


DOCS = manifest_documents() if MANIFEST.exists() else []


class _TagBalance(HTMLParser):
    """Minimal well-formedness check: every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in VOID_ELEMENTS:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
        else:
            self.stack.pop()


# --------------------------------------------------------------------------- manifest


def test_manifest_parses_and_has_metadata():
    manifest = load_manifest()
    assert isinstance(manifest.get("documents"), list)
    assert "CC-BY-4.0" in manifest.get("license", "")
    sources = manifest.get("sources")
    assert isinstance(sources, list) and sources
    assert all(isinstance(s, str) and s.strip() for s in sources)


def test_enough_documents():
    assert len(DOCS) >= MIN_DOCUMENTS


def test_manifest_files_are_unique_and_in_corpus():
    files = [d["file"] for d in DOCS]
    assert len(files) == len(set(files))
    for f in files:
        assert f.startswith("corpus/") and f.endswith(".html"), f
        assert (DATA / f).resolve().parent == CORPUS.resolve()


def test_every_corpus_page_is_in_manifest():
    listed = {Path(d["file"]).name for d in DOCS}
    on_disk = {p.name for p in CORPUS.glob("*.html")} - {"index.html"}
    assert on_disk == listed


def test_total_visible_words():
    total = sum(word_count(DATA / d["file"]) for d in DOCS)
    assert total >= MIN_TOTAL_WORDS, total


# --------------------------------------------------------------------------- pages


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_page_structure(doc):
    path = DATA / doc["file"]
    assert path.is_file(), path
    raw = path.read_text(encoding="utf-8")
    assert raw.lstrip().lower().startswith("<!doctype html>")

    soup = parse(path)
    html = soup.find("html")
    assert html is not None and html.get("lang"), "missing <html lang>"
    assert soup.find("meta", attrs={"charset": re.compile("^utf-8$", re.I)})
    desc = soup.find("meta", attrs={"name": "description"})
    assert desc is not None and desc.get("content", "").strip()

    title = soup.find("title")
    assert title is not None and title.get_text(strip=True)
    assert title.get_text(strip=True) == doc["title"]

    body = soup.body
    assert body is not None
    assert body.find("article") is not None
    h1s = body.find_all("h1")
    assert len(h1s) == 1 and h1s[0].get_text(strip=True)
    assert len(body.find_all("h2")) >= 3
    assert len(body.find_all("p")) >= 5


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_page_is_well_formed(doc):
    checker = _TagBalance()
    checker.feed((DATA / doc["file"]).read_text(encoding="utf-8"))
    checker.close()
    assert not checker.errors, checker.errors
    assert not checker.stack, f"unclosed elements: {checker.stack}"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_word_count_matches_manifest(doc):
    actual = word_count(DATA / doc["file"])
    declared = doc["words"]
    assert isinstance(declared, int) and declared > 0
    assert abs(actual - declared) <= WORD_TOLERANCE * declared, (actual, declared)


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_facts_appear_verbatim(doc):
    facts = doc["facts"]
    assert len(facts) >= MIN_FACTS_PER_DOCUMENT
    text = visible_text(DATA / doc["file"])
    for fact in facts:
        assert fact["question"].strip().endswith("?"), fact
        answer = " ".join(fact["answer"].split())
        assert answer, fact
        assert answer in text, f"{answer!r} not found in {doc['file']}"


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_topics_listed(doc):
    assert isinstance(doc["topics"], list) and doc["topics"]


def test_case_study_is_labelled_fictional():
    case = [d for d in DOCS if "case-study" in d["file"]]
    assert case, "expected a fictional case-study page"
    for doc in case:
        assert "fictional" in visible_text(DATA / doc["file"]).lower()


# --------------------------------------------------------------------------- index


def test_index_links_every_page():
    index = CORPUS / "index.html"
    assert index.is_file()
    soup = parse(index)
    assert soup.find("html").get("lang")
    assert soup.find("title") is not None and soup.find("h1") is not None

    targets = set()
    for a in soup.find_all("a", href=True):
        href = a["href"]
        parsed = urlparse(href)
        assert not parsed.scheme and not parsed.netloc and not href.startswith("/"), (
            f"index link must be relative: {href}"
        )
        target = (CORPUS / parsed.path).resolve()
        assert target.is_file(), f"broken link {href}"
        targets.add(target)

    expected = {(DATA / d["file"]).resolve() for d in DOCS}
    assert expected <= targets, sorted(p.name for p in expected - targets)
