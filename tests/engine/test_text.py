"""Incremental detokenization and stop-sequence holdback, on the real tokenizer."""

from tgi_course.engine.text import IncrementalDecoder, StopMatcher


def test_stop_matcher_holds_back_a_possible_stop_and_cuts_at_the_match():
    matcher = StopMatcher(("END",))
    assert matcher.feed("hello E") == "hello "
    assert matcher.feed("N") == ""
    assert matcher.feed("D and more") == ""
    assert matcher.matched == "END"


def test_stop_matcher_releases_held_text_when_it_is_not_a_stop():
    matcher = StopMatcher(("END",))
    assert matcher.feed("an E") == "an "
    assert matcher.feed("gg") == "Egg"
    assert matcher.flush() == ""
    matcher.feed("fin E")
    assert matcher.flush() == "E"
    assert matcher.matched is None


def test_stop_matcher_picks_the_earliest_of_several_stops():
    matcher = StopMatcher(("world", "lo"))
    assert matcher.feed("hello world") == "hel"
    assert matcher.matched == "lo"


def test_incremental_decoder_rebuilds_text_including_multibyte_characters(loaded_model):
    tokenizer = loaded_model.tokenizer
    text = "Grüße, 東京! 🚀 done."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
