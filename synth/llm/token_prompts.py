"""A conversation's earlier replies sent back as the tokens the model generated (llama-server).

Through the chat API a server tokenizes the whole conversation anew at every turn, and the tokens
it makes of an earlier reply are not the ones the model sampled (under a grammar SmolLM2 writes
`re` `pl` `y` where the tokenizer makes `reply`). So llama-server's prefix match with the slot's
cache ends where the previous reply starts, and every turn recomputes that reply and all after it
(8 of 8 recorded agent turns: cached = exactly the previous prompt; docs/architecture.md, §7).

llama-server's `/completion` takes a prompt of text pieces and token ids mixed. So for a server that
has it, a request's messages are rendered with the server's own chat template (`/apply-template`),
and where the rendering starts with an earlier request's rendering plus the reply it got, that part
goes as that earlier prompt's pieces and the reply's generated token ids; only the rest is text.
The next turn then finds the whole earlier conversation, replies included, in the slot's cache.

The contract with the caller (`synth.llm.client`): the request is the chat request it stands for
(messages, sampling, `response_format` as llama-server's `json_schema`), and the reply is given back
as a chat completion, so the response cache, the usage records and every caller are unchanged. The
model is shown its own replies as it wrote them, token for token; text the rendering does not
reproduce exactly (a template that rewrites earlier turns, a caller that edits a reply) is simply
sent as text. Only replies that ended by themselves (`stop_type` "eos") are remembered: their last
token is the end-of-turn token, which the template writes itself.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

Piece = str | int
# Conversations remembered per endpoint and process (a turn's prompt pieces each; a run keeps 2 episodes
# a slot in flight); the oldest are forgotten.
MAX_REMEMBERED = 256
# How far back a request's messages are searched for a remembered reply (the last few assistant
# messages: a retry of the same turn, or a turn after a scripted one, still finds it).
_LOOKBACK = 4
# Chat request fields that are not /completion sampling parameters.
_CHAT_ONLY = frozenset({"model", "messages", "max_tokens", "response_format", "stream", "stream_options",
                        "tools", "tool_choice"})


def _messages_key(messages: list[dict[str, Any]]) -> str:
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class _Turn:
    """A rendered prompt plus the reply it got (`text`), and the same as pieces for `/completion`."""

    text: str
    pieces: tuple[Piece, ...]


class ReplyTokens:
    """The replies one endpoint generated, as token ids, by the conversation that ends with them."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._turns: OrderedDict[str, _Turn] = OrderedDict()
        self._max = max_remembered
        self.reused = 0  # requests that sent an earlier reply as its tokens

    def prompt(self, messages: list[dict[str, Any]], rendered: str) -> list[Piece]:
        """The pieces of a request whose messages the server's template renders as `rendered`: the
        longest remembered conversation it continues, as pieces, then the rest as text."""
        seen = 0
        for end in range(len(messages) - 1, 0, -1):
            if messages[end].get("role") != "assistant":
                continue
            key = _messages_key(messages[:end + 1])
            turn = self._turns.get(key)
            if turn is not None and rendered.startswith(turn.text):
                self._turns.move_to_end(key)
                self.reused += 1
                rest = rendered[len(turn.text):]
                return [*turn.pieces, rest] if rest else list(turn.pieces)
            seen += 1
            if seen >= _LOOKBACK:
                break
        return [rendered]

    def remember(self, messages: list[dict[str, Any]], rendered: str, pieces: list[Piece],
                 reply: str, tokens: list[int]) -> None:
        """Keep a reply that ended by itself: `tokens` as generated, without the end-of-turn token
        (the template writes it after the reply; `reply_tokens`)."""
        if not tokens:
            return
        key = _messages_key([*messages, {"role": "assistant", "content": reply}])
        self._turns[key] = _Turn(rendered + reply, (*pieces, *tokens))
        self._turns.move_to_end(key)
        if len(self._turns) > self._max:
            self._turns.popitem(last=False)


def reply_tokens(tokens: list[int], streamed: bool, silent_tail: bool) -> list[int]:
    """The token ids of a reply's text, from the ids llama-server sent for a reply that stopped at
    its end-of-turn token: it sends that token's id too, in a whole response as the last id and in a
    stream as an event of its own with no text (`silent_tail`); a stream whose last id came with text
    ended without it. (The integration test checks both against the embedded server.)"""
    if streamed and not silent_tail:
        return tokens
    return tokens[:-1]


def completion_body(chat_body: dict[str, Any], prompt: list[Piece], stream: bool) -> dict[str, Any]:
    """The `/completion` request for a chat request: the same sampling, `max_tokens` as `n_predict`,
    a JSON-schema `response_format` as `json_schema`, and the generated token ids asked back."""
    body: dict[str, Any] = {k: v for k, v in chat_body.items() if k not in _CHAT_ONLY}
    body["prompt"] = prompt
    if "max_tokens" in chat_body:
        body["n_predict"] = chat_body["max_tokens"]
    fmt = chat_body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        body["json_schema"] = (fmt.get("json_schema") or {}).get("schema") or {}
    elif fmt.get("type") == "json_object":
        body["json_schema"] = {"type": "object"}
    body["return_tokens"] = True
    body["cache_prompt"] = True
    if stream:
        body["stream"] = True
    return body


def finish_reason(stop_type: str | None) -> str | None:
    """The chat finish reason of a `/completion` stop type (None: not finished)."""
    if stop_type in ("eos", "word"):
        return "stop"
    if stop_type == "limit":
        return "length"
    return None
