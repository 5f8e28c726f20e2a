"""Rendering of the jinja2 prompt templates that live beside the code that uses them.

A stage keeps its templates in a `prompts/` folder inside its own package and renders them with
`render("synth.tools", "applications.j2", domain=...)`. Undefined variables are errors
(StrictUndefined), so a renamed field cannot silently produce an empty prompt.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2


@cache
def _environment(package: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "prompts"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
        # Templates ship with the package and do not change while a process runs; checking each
        # one's mtime on every render cost ~2% of a worker's CPU on the fake backend.
        auto_reload=False,
    )
    env.filters["tojson_compact"] = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return env


def render(package: str, template: str, **context: Any) -> str:
    return _environment(package).get_template(template).render(**context).strip()
