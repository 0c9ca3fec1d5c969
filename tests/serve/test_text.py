"""A choice's text as tokens arrive: stop strings cut the answer, streaming never sends part of a stop string or of
an incomplete character, and the streamed pieces add up to the answer. Tokens here are single bytes (UTF-8)."""

from rlhfkit.serve.text import ChoiceText


def decode(ids: list[int]) -> str:
    return bytes(ids).decode("utf-8", errors="replace")


def feed(text: ChoiceText, data: bytes) -> list[str]:
    return [text.push(b) for b in data]


def test_stop_string_across_tokens_cuts_the_answer_and_is_never_streamed():
    t = ChoiceText(decode, ["END", "\n\n"])
    deltas = feed(t, b"ok ENxEND tail")[:9]  # "EN" could start END: held, then released when "x" rules it out
    assert deltas == ["o", "k", " ", "", "", "ENx", "", "", ""]
    assert t.stopped and t.text == "ok ENx"
    assert "".join(deltas) + t.flush() == "ok ENx"


def test_the_earliest_stop_string_wins():
    t = ChoiceText(decode, ["cd", "b"])
    feed(t, b"abcd")
    assert t.stopped and t.text == "a"


def test_incomplete_utf8_is_held_until_the_character_is_whole():
    t = ChoiceText(decode, [])
    euro = "€".encode()  # 3 bytes
    assert feed(t, b"a" + euro + b"b") == ["a", "", "", "€", "b"]
    assert not t.stopped and t.flush() == "" and t.text == "a€b"


def test_a_choice_cut_mid_character_flushes_what_it_has():
    t = ChoiceText(decode, ["zz"])
    deltas = feed(t, b"xz" + "€".encode()[:2])
    assert deltas == ["x", "", "", ""]  # "z" could start "zz"; the two bytes are not a character yet
    assert t.flush() == "z\ufffd" and t.text == "xz\ufffd"


def test_without_stream_or_stop_nothing_is_decoded_until_the_end():
    calls = []
    t = ChoiceText(lambda ids: calls.append(1) or decode(ids), [], stream=False)
    assert feed(t, b"hello") == [""] * 5 and calls == []
    assert t.flush() == "hello" and t.text == "hello" and len(calls) == 1
