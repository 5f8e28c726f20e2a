"""The tool repository: ToolSpec conversions (MCP, OpenAI), validation and repair of schemas,
hierarchical synthesis of tools per domain, and import of real MCP tools."""
