"""Naming rules for tools and the entities they act on, in one place.

Tool synthesis names tools after an entity (`create_order`), task planning builds the world state
those tools will find (`orders` for `order_id`), the tool simulator finds a tool's collection and
the id argument of a call, and task validation checks that ids name entities. All four must agree
on the same rules, or a planned `get_status` looks for a collection nobody wrote. So the rules live
here and only here:

- `name_words`: a tool or argument name in any style (`create_issue`, `createIssue`, `issue-create`,
  `Issues.Create`) as lowercase words;
- `tool_intent`: which CRUD-like verb a tool name says, with the verb at either end
  (`issues_create`, `createIssue`), and the resource words around it;
- `singular` / `plural`: one table of English rules (`status`/`statuses`, `tie`/`ties`,
  `address`/`addresses`, `policy`/`policies`) that round-trip on the nouns tools use;
- `collection_name` / `id_key`: the state key of a resource's entities and its id field;
- `crude_stem`: the stem by which rewordings of a text are compared.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

IntentKind = Literal["create", "get", "update", "delete", "close"]

# Verb kinds the simulator can carry out in code. Order matters only for documentation: a word
# belongs to one kind.
VERBS: dict[IntentKind, tuple[str, ...]] = {
    "create": ("create", "add", "new", "register", "book", "place", "open", "insert", "make", "submit",
               "schedule", "post", "save", "upload"),
    "get": ("get", "fetch", "read", "retrieve", "lookup", "show", "view", "describe", "load"),
    "update": ("update", "set", "edit", "modify", "change", "rename", "patch", "assign", "move", "reschedule"),
    "delete": ("delete", "remove", "drop", "unregister"),
    "close": ("cancel", "close", "archive"),
}
CLOSED_STATUS: dict[str, str] = {"cancel": "cancelled", "close": "closed", "archive": "archived"}
_VERB_KIND: dict[str, IntentKind] = {verb: kind for kind, verbs in VERBS.items() for verb in verbs}

_IRREGULAR: dict[str, str] = {  # plural -> singular
    "people": "person", "children": "child", "men": "man", "women": "woman", "feet": "foot",
    "teeth": "tooth", "mice": "mouse", "geese": "goose", "criteria": "criterion", "phenomena": "phenomenon",
    "indices": "index", "matrices": "matrix", "vertices": "vertex", "leaves": "leaf", "lives": "life",
    "knives": "knife", "movies": "movie", "cookies": "cookie", "wives": "wife", "halves": "half",
    "shelves": "shelf", "wolves": "wolf",
}
_IRREGULAR_PLURAL: dict[str, str] = {s: p for p, s in _IRREGULAR.items()}
# Words that are the same in both numbers, or singular although they end in "s".
_INVARIANT = frozenset({
    "data", "media", "metadata", "news", "series", "species", "info", "information", "equipment", "software",
    "hardware", "feedback", "inventory", "analytics", "settings", "sms", "gps", "dns", "aws", "os", "ios",
    "status", "bus", "campus", "virus", "bonus", "census", "corpus", "focus", "radius", "canvas", "atlas",
    "alias", "lens", "gas", "chassis", "analysis", "basis", "crisis", "diagnosis", "thesis", "axis",
    # fields and names that end in -s without being plurals (`kubernete`, `mathematic` were tool nouns)
    "kubernetes", "mathematics", "physics", "economics", "logistics", "electronics", "genetics", "ethics",
    "robotics", "telematics", "bioinformatics", "linguistics", "athletics", "gymnastics", "politics", "aerobics",
})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-zA-Z0-9]+")


def name_words(name: str) -> list[str]:
    """Lowercase words of a name in snake, camel, Pascal, kebab or dotted style:
    `getHTTPStatus` -> ["get", "http", "status"], `issue-create` -> ["issue", "create"]."""
    return list(_name_words(name))


@functools.lru_cache(maxsize=4096)
def _name_words(name: str) -> tuple[str, ...]:
    # Remembered: a run splits the same few hundred tool and argument names at every step, check
    # and plan (~3% of a fake-backend run's event loop).
    spaced = _CAMEL.sub("_", name)
    return tuple(w for w in _NON_WORD.split(spaced.lower()) if w)


def snake(name: str) -> str:
    """`orderId` / `order-id` / `OrderID` -> `order_id`."""
    return "_".join(name_words(name))


@functools.lru_cache(maxsize=65536)  # pure, and called for every word of every drafted task and stored text
def crude_stem(word: str) -> str:
    """A crude English stem, the same for both sides of a comparison of rewordings: `confirmed`,
    `confirms`, `confirming` -> `confirm`; `cancelled` -> `cancel`; `orders` -> `order`; `changes`,
    `change` -> `chang`. Task validation and near-duplicate detection share it (the judges' checks
    keep a finer one, `checks._stem`, that also maps `cancellation` to `cancel`)."""
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word


def singular(word: str) -> str:
    """The singular of an English noun as tools use them (`ties` -> `tie`, `addresses` -> `address`,
    `statuses` -> `status`, `policies` -> `policy`); a singular noun is returned unchanged."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in _INVARIANT or w in _IRREGULAR_PLURAL or len(w) <= 2:
        return w
    if w.endswith("uses") and w[:-2] in _INVARIANT:
        return w[:-2]  # statuses, buses, viruses
    if w.endswith("ses") and w[:-3] + "sis" in _INVARIANT:
        return w[:-3] + "sis"  # analyses, crises
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"  # policies, entries; but ties, lies
    if w.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return w[:-3] if w.endswith("zzes") else w[:-2]  # addresses, wishes, batches, boxes
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def plural(word: str) -> str:
    """The plural of an English noun (the inverse of `singular`); a plural noun is returned
    unchanged."""
    w = word.lower()
    if w in _IRREGULAR:
        return w
    if w in _IRREGULAR_PLURAL:
        return _IRREGULAR_PLURAL[w]
    if w.endswith("sis") and w in _INVARIANT:
        return w[:-3] + "ses"
    if w in _INVARIANT and not w.endswith(("us", "as")):
        return w
    if singular(w) != w:
        return w
    if w.endswith(("s", "sh", "ch", "x", "z")):
        return w + ("zes" if w.endswith("z") and not w.endswith("zz") else "es")
    if w.endswith("y") and len(w) > 1 and w[-2] not in "aeiou":
        return w[:-1] + "ies"
    return w + "s"


def tool_intent(name: str, writes: bool = True) -> tuple[IntentKind | None, list[str]]:
    """(verb kind, resource words) of a tool name, the verb at either end: `create_support_ticket`,
    `supportTicketCreate` -> ("create", ["support", "ticket"]). The kind is None when neither end is
    a known verb (then the resource is every word after the first). A "create" verb on a tool that
    does not write (`make_forecast` that only reads) is no create."""
    words = name_words(name)
    if len(words) < 2:
        return None, words
    for verb, resource in ((words[0], words[1:]), (words[-1], words[:-1])):
        kind = _VERB_KIND.get(verb)
        if kind is not None:
            return (None if kind == "create" and not writes else kind), resource
    return None, words[1:]


def intent_verb(name: str) -> str | None:
    """The verb word `tool_intent` matched (`cancel` of `order_cancel`), None when none did."""
    words = name_words(name)
    if len(words) < 2:
        return None
    return next((w for w in (words[0], words[-1]) if w in _VERB_KIND), None)


def resource_words(words: list[str]) -> list[str]:
    """Resource words with each singularised: `["support", "tickets"]` -> `["support", "ticket"]`."""
    return [singular(w) for w in words]


def collection_name(words: list[str]) -> str:
    """The state key holding a resource's entities: `["order"]` -> `orders`,
    `["support", "ticket"]` -> `support_tickets`, `["status"]` -> `statuses`."""
    words = resource_words(words) or ["item"]
    return "_".join([*words[:-1], plural(words[-1])])


def id_key(words: list[str]) -> str:
    """The id field of a resource's entities: `["order"]` -> `order_id`."""
    words = resource_words(words) or ["item"]
    return f"{words[-1]}_id"


def id_resource(argument: str) -> list[str] | None:
    """The resource an `<thing>_id` / `<thing>Id` argument names (singular words), None for any
    other argument (a bare `id` names the tool's own resource; the caller knows which)."""
    words = name_words(argument)
    if len(words) < 2 or words[-1] != "id":
        return None
    return resource_words(words[:-1])


# Words a made-up parameter wraps around its tool's name: `function_list_orders`, `create_order_data`.
_WRAPPER_WORDS = frozenset({"function", "data", "info", "details", "object", "params", "param", "input",
                            "request", "payload", "the", "a", "for"})


def repeats_tool_name(parameter: str, tool: str) -> bool:
    """Whether `parameter` is only `tool`'s own name, perhaps wrapped (`create_weather` or
    `function_create_weather` for `create_weather`, `function_list_order_managements` for
    `list_order_managements`). Such a parameter says nothing of what to pass: it is no parameter
    a real API has, and a model fills it with whatever it likes. A one-word tool (`search`) is
    left alone: `search_query` is a fine parameter of it."""
    tool_words = {singular(w) for w in name_words(tool)}
    words = {singular(w) for w in name_words(parameter)}
    return len(tool_words) >= 2 and tool_words <= words and words - tool_words <= _WRAPPER_WORDS


_VOWELS = frozenset("aeiouy")
_CONSONANT_RUN = re.compile(r"[b-df-hj-np-tv-xz]{6,}", re.I)


def looks_like_words(text: str) -> bool:
    """Whether every alphabetic run of `text` could be a word (of some language written in Latin
    letters, or an abbreviation): no run of six letters or more without a vowel, and no six
    consonants in a row. `jsscjdjcjjdjcj` is not; `rhythm`, `GPS`, `ORD-88213`, `strengths` are."""
    for run in re.findall(r"[A-Za-z]+", text):
        if len(run) >= 6 and (not _VOWELS & set(run.lower()) or _CONSONANT_RUN.search(run)):
            return False
    return True


# Words a placeholder value puts around its parameter's name: `example_location`, `category_name`.
_PLACEHOLDER_WORDS = frozenset({"example", "sample", "dummy", "placeholder", "your", "my", "some", "test",
                                "name", "value", "here", "string", "text", "data", "for", "the", "a", "of",
                                "new", "default", "x", "xxx", "foo", "bar", "tbd"})
_TEMPLATE_VALUE = re.compile(r"^\s*(?:<[^<>]{1,60}>|\{\{?[^{}]{1,60}\}?\}|\[[A-Za-z_ ]{1,60}\])\s*$")


def placeholder_value(value: str, parameter: str) -> bool:
    """Whether `value` is a stand-in for a value rather than one: a template (`<name>`, `{city}`,
    `[customer name]`), the parameter's own name (`location` for `location`), or a snake_case
    token of that name and placeholder words only (`example_location`, `category_name`,
    `your_email`). A real value that happens to be snake_case (`in_progress` for `status`,
    `order_date` for `sort_by`) is none."""
    if _TEMPLATE_VALUE.match(value):
        return True
    text = value.strip()
    if not text or " " in text or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", text):
        return False
    words = [singular(w) for w in name_words(text)]
    own = {singular(w) for w in name_words(parameter)}
    if words == [singular(w) for w in name_words(parameter)]:
        return True
    return (len(words) >= 2 and set(words) <= own | _PLACEHOLDER_WORDS
            and bool(set(words) & own) and bool(set(words) & _PLACEHOLDER_WORDS))
