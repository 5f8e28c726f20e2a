"""Telling a reply that loops from one that is still going somewhere.

A small model at temperature 0.7 falls into loops (`"-v-v-v-v..."`, one sentence again and again,
one list item copied until `max_tokens`). Measured on the embedded SmolLM2-135M over the responses of
12 CI runs (1,709 replies): 13% ran to `max_tokens`, and those discarded replies were 30% of all
decoded tokens; most of them had turned into an exact loop long before the end. A streamed reply whose
tail has become one short unit repeated is stopped there, so the slot goes back to useful work and
the caller retries with a new seed at once (docs/architecture.md section 5, "Loops").

Why not a sampler (llama.cpp's DRY or repeat penalty): the server feeds the prompt's tokens to those
samplers as well, so they penalise copying a value from the conversation, which is what a tool call's
arguments are made of. Measured: exact copies of an id or a name from the prompt fell from 7 of 30 to
0 of 30 with `dry_multiplier = 0.8`.
"""

from __future__ import annotations

# The longest unit looked for: a repeated sentence or list item up to this many characters.
MAX_UNIT_CHARS = 120
# A unit must repeat at least this many times before the tail counts as a loop, however long it is.
MIN_REPEATS = 3


def looping_unit(text: str, min_span: int) -> int | None:
    """The length of the unit whose back-to-back repeats make up the last `min_span` or more
    characters of `text` (at least `MIN_REPEATS` of them), or None when the tail is not a loop.
    A periodic tail matches at any phase, so the caller may check at any point of the stream."""
    n = len(text)
    if min_span <= 0 or n < min_span:
        return None
    for unit in range(1, min(MAX_UNIT_CHARS, n // MIN_REPEATS) + 1):
        repeats = max(MIN_REPEATS, -(-min_span // unit))
        if repeats * unit <= n and text.endswith(text[n - unit:] * repeats):
            return unit
    return None
