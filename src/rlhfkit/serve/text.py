"""A choice's text as its tokens arrive: stop strings, and the part that is safe to stream.

The whole token list is decoded each time and the new suffix emitted: decoding token by token would split
characters that span tokens. Held back while streaming: trailing U+FFFD (the bytes of a character not yet complete)
and a suffix that could be the start of a stop string (if the stop string completes, that text is never sent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class ChoiceText:
    """Feed token ids (EOS excluded) with `push`; `stopped` says a stop string appeared, `text` is the answer (cut
    before the earliest stop string), `push` and `flush` return the text to stream next. The deltas of `push` and
    `flush` concatenate to `text`. Without streaming and stop strings nothing is decoded before `flush`."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = (), *, stream: bool = True):
        self.decode, self.stop = decode, [s for s in stop if s]
        self.lazy = not stream and not self.stop
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of text already handed out
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add a token; the text that may be streamed now ('' when everything new could still change)."""
        self.ids.append(token_id)
        if self.lazy:
            return ""
        text = self.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.text = True, text[:cut]
            return self.flush()
        self.text = text
        safe = len(text.rstrip(REPLACEMENT))
        safe -= max((k for s in self.stop for k in range(1, len(s)) if text[:safe].endswith(s[:k])), default=0)
        if safe <= self.sent:
            return ""
        delta, self.sent = text[self.sent : safe], safe
        return delta

    def flush(self) -> str:
        """The rest of the text (the choice has ended)."""
        if self.lazy:
            self.text = self.decode(self.ids)
        delta, self.sent = self.text[self.sent :], len(self.text)
        return delta
