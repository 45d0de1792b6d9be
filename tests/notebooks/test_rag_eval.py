"""The RAG evaluation behind notebook 05's section 7 and ``bench.quality``: scoring rules on hand-written
answers, retrieval hit@k with the real embeddings in real Chroma, and one small concurrent evaluation
through the real server (its model text is never compared, only the shape and the bounds of the scores).
"""

from __future__ import annotations

import asyncio

import pytest

from tgi_course.course import corpus, notebook_env, rag, rag_eval

RUNBOOKS = "The Tidewatch knowledge base contains 842 runbooks. Runbooks are written by the on-call engineers."


@pytest.fixture(scope="module")
def store():
    notebook_env.quiet()
    store = rag_eval.corpus_store(collection_name="test_rag_eval")
    yield store
    store.delete_collection()


@pytest.fixture(scope="module")
def retrieved(store):
    return rag_eval.retrieve(store, corpus.facts(), max_k=5)


# -- scoring rules ---------------------------------------------------------------------------------

def test_the_842_runbooks_answer_fools_the_substring_rule_and_not_the_strict_one() -> None:
    answer = "The Tidewatch knowledge base contains 842 runbooks, which is 100% of the knowledge base."
    question = "How many runbooks does the Tidewatch knowledge base contain?"
    verdict = rag_eval.score("842 runbooks", answer, RUNBOOKS, question)
    assert verdict.substring and not verdict.strict
    assert verdict.unsupported == ("100%",)  # no chunk says 100%: the claim is the model's own
    assert verdict.reason == "not in the chunks: 100%"
    plain = rag_eval.score("842 runbooks", "The Tidewatch knowledge base contains 842 runbooks.", RUNBOOKS, question)
    assert plain.substring and plain.strict and plain.reason == ""


def test_a_fact_inside_a_longer_number_is_only_a_substring_match() -> None:
    context = "The monthly budget is 2,400 euros. The first year cost 12,400 euros in total."
    verdict = rag_eval.score("2,400 euros", "The monthly budget is 12,400 euros.", context)
    assert verdict.substring and not verdict.strict
    assert verdict.unsupported == () and verdict.reason == "the fact only inside a longer word or number"
    assert rag_eval.score("2,400 euros", "It is 2,400 euros per month.", context).strict
    assert not rag_eval.strict_match("3 servers", "Tidewatch runs on 13 servers.", "It runs on 3 servers or 13 servers.")


def test_invented_names_are_unsupported_and_words_of_the_question_are_not() -> None:
    context = "Harbor Lab is a fictional platform engineering team based in Port Elsmere."
    question = "Where is Harbor Lab based?"
    answer = "The team is based in Port Elsmere, a port city in the UK."
    assert rag_eval.unsupported_terms(answer, context, question) == ["UK"]
    assert rag_eval.substring_match("Port Elsmere", answer) and not rag_eval.strict_match("Port Elsmere", answer, context, question)
    assert rag_eval.unsupported_terms("Harbor Lab is in Port Elsmere.", "It is in Port Elsmere.", question) == []


def test_both_rules_reject_a_right_number_without_its_unit() -> None:
    verdict = rag_eval.score("11 engineers", "The Harbor Lab on-call rotation is 11.", "The rotation has 11 engineers.")
    assert not verdict.substring and not verdict.strict and verdict.reason == ""


def test_normalise_ignores_case_punctuation_and_spacing() -> None:
    assert rag_eval.normalise("  The  p95 is 1,200 MS!\n") == "the p95 is 1 200 ms"
    assert rag_eval.substring_match("#harbor-oncall", "Engineers ask in harbor-oncall.")
    assert rag_eval.substring_match("<|im_end|>", "It is closed by <|im_end|>.")


def test_strict_never_accepts_what_the_substring_rule_rejects() -> None:
    context = RUNBOOKS + " Tidewatch runs on 3 servers."
    answers = ["842 runbooks", "842", "Runbooks: 842.", "1842 runbooks", "842 runbooks in Paris", "3 servers", "", "842 RUNBOOKS."]
    for expected in ("842 runbooks", "3 servers", "842"):
        for answer in answers:
            verdict = rag_eval.score(expected, answer, context)
            assert verdict.strict <= verdict.substring, (expected, answer)


# -- prompt shapes ---------------------------------------------------------------------------------

def test_the_system_context_shape_is_the_course_prompt() -> None:
    messages = rag_eval.SYSTEM_CONTEXT.messages("Tidewatch is the assistant.", "What is it called?")
    course = rag.rag_prompt().invoke({"context": "Tidewatch is the assistant.", "question": "What is it called?"}).to_messages()
    assert [m["role"] for m in messages] == ["system", "user"]
    assert [m["content"] for m in messages] == [m.content for m in course]


def test_the_packed_shape_is_one_user_message_with_context_and_question() -> None:
    (message,) = rag_eval.PACKED.messages("Tidewatch is the assistant.", "What is it called?")
    assert message["role"] == "user"
    assert "Tidewatch is the assistant." in message["content"] and message["content"].index("What is it called?") > 0


# -- retrieval -------------------------------------------------------------------------------------

def test_the_pages_read_from_files_chunk_like_the_served_pages() -> None:
    with corpus.CorpusServer() as server:
        base_url = server.url
        served = rag.split_documents(rag.load_pages(server.page_urls()))
    local = rag.split_documents(rag_eval.corpus_pages())
    assert [c.page_content for c in local] == [c.page_content for c in served]
    assert [c.metadata["source"] for c in local] == [c.metadata["source"].removeprefix(base_url) for c in served]


def test_hit_at_k_rises_with_k_and_finds_most_facts(retrieved) -> None:
    assert len(retrieved) == len(corpus.facts()) == 61
    assert all(len(r.chunks) == 5 for r in retrieved)
    for kind in ("fact", "page"):
        rates = [rag_eval.hit_rate(retrieved, k, kind) for k in range(1, 6)]
        assert rates == sorted(rates), (kind, rates)  # top-k lists are nested
    # The embedding model runs in float32 on the CPU here; floors measured with room to spare.
    assert rag_eval.hit_rate(retrieved, 4, "page") >= 0.85
    assert rag_eval.hit_rate(retrieved, 4, "fact") >= 0.75
    tidewatch = next(r for r in retrieved if r.fact.answer == "Tidewatch")
    assert tidewatch.fact_hit(1) and tidewatch.page_hit(1)
    with pytest.raises(ValueError):
        rag_eval.hit_rate(retrieved, 2, "chunk")


def test_table_and_plot_have_a_row_and_a_group_per_k(retrieved) -> None:
    from matplotlib.figure import Figure

    shapes, ks = rag_eval.SHAPES, (2, 4)
    fake = [rag_eval.Run(shape, k, tuple(rag_eval.Answer(r, r.fact.answer, False, rag_eval.score(r.fact.answer, r.fact.answer, r.context(k)))
                                         for r in retrieved)) for shape in shapes for k in ks]  # fmt: skip
    text = rag_eval.table(retrieved, fake)
    lines = text.splitlines()
    assert len(lines) == 2 + len(ks) and all(shape.name in lines[0] for shape in shapes)
    assert all(run.substring_accuracy == 1.0 for run in fake)  # the fact itself, as an answer, is a substring match
    ax = rag_eval.plot(retrieved, fake, Figure().subplots())
    assert len(ax.patches) == len(ks) * (1 + 2 * len(shapes))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["k = 2", "k = 4"]


# -- generation, through the real server -----------------------------------------------------------

@pytest.mark.slow
def test_evaluate_sends_every_shape_and_k_concurrently(retrieved, server) -> None:
    some = [r for r in retrieved if r.fact.file.endswith("harbor-lab-case-study.html")][:4]
    client = server.async_openai()
    runs, seconds = asyncio.run(rag_eval.evaluate(client, "tgi", some, ks=(1, 2), max_tokens=12, concurrency=8))
    assert [(run.shape.name, run.k) for run in runs] == [(s.name, k) for s in rag_eval.SHAPES for k in (1, 2)]
    assert seconds > 0
    for run in runs:
        assert [a.retrieved for a in run.answers] == some
        assert all(isinstance(a.text, str) and a.text for a in run.answers)
        assert 0 <= run.strict_accuracy <= run.substring_accuracy <= 1
    with pytest.raises(ValueError):
        asyncio.run(rag_eval.evaluate(client, "tgi", some, ks=(9,)))
