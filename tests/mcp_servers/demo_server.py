"""A small MCP server over stdio, for the live-import test (`synth tools import-mcp --command`).

Run: `python tests/mcp_servers/demo_server.py`. It declares a few tools of a notes application
with typed parameters, a nested object, an enum and an optional argument, so an importer has
real SDK-generated schemas (and output schemas) to read.
"""

from __future__ import annotations

from typing import Literal

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

server = MCPServer("demo-notes")


class Note(BaseModel):
    note_id: str
    title: str
    body: str
    tags: list[str] = Field(default_factory=list)


class Reminder(BaseModel):
    when: str = Field(description="ISO 8601 date-time of the reminder")
    channel: Literal["email", "sms", "push"] = "email"


@server.tool()
def create_note(title: str, body: str, tags: list[str] | None = None) -> Note:
    """Create a note and return it with its new note_id."""
    return Note(note_id="n-1", title=title, body=body, tags=tags or [])


@server.tool()
def get_note(note_id: str) -> Note:
    """Fetch one note by its note_id."""
    return Note(note_id=note_id, title="t", body="b")


@server.tool()
def search_notes(
    query: str, limit: int = 10, sort: Literal["newest", "oldest", "relevance"] = "relevance"
) -> list[str]:
    """Search notes by text; returns matching note ids."""
    return ["n-1"][:limit]


@server.tool()
def set_reminder(note_id: str, reminder: Reminder) -> str:
    """Attach a reminder to a note."""
    return f"reminder set on {note_id} for {reminder.when} via {reminder.channel}"


if __name__ == "__main__":
    server.run()
