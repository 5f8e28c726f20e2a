"""A small stdio MCP server whose tools compute real results, for rollout tests: an episode that
binds these tools must show exactly these results in its trajectory.

Run: `python tests/mcp_servers/rollout_server.py` (stdio), or with `--http PORT` to serve streamable HTTP
at `http://127.0.0.1:PORT/mcp`.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

server = MCPServer("rollout-units")


class Conversion(BaseModel):
    celsius: float
    fahrenheit: float


@server.tool()
def convert_temperature(celsius: float) -> Conversion:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit."""
    return Conversion(celsius=celsius, fahrenheit=round(celsius * 9 / 5 + 32, 2))


@server.tool()
def count_words(text: str) -> str:
    """Count the words of a text."""
    return f"{len(text.split())} words"


@server.tool()
def always_fails(reason: str) -> str:
    """A tool whose backend is down: it always reports an error."""
    raise ToolError(f"backend unavailable: {reason}")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
