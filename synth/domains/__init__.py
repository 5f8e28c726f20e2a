"""Domain taxonomy: the curated categories and domains that tool, agent and task synthesis draw
from, and the bridge that places real MCP servers (by their Toucan labels) into the same taxonomy.

See `synth.domains.taxonomy` for the contract. Typical use::

    from synth.domains import load_taxonomy

    tax = load_taxonomy()
    tax.get("weather")                      # -> Domain
    tax.resolve(["weather", "stock_trading"])
    tax.by_category("finance")
    tax.domain_for_labels("Weather", ["Travel & Maps"])
"""

from synth.domains.taxonomy import (
    SLUG_RE,
    Category,
    Domain,
    Taxonomy,
    TaxonomyError,
    UnknownCategoryError,
    UnknownDomainError,
    UnknownNameError,
    load_taxonomy,
    parse_taxonomy,
    suggest,
)

__all__ = [
    "SLUG_RE",
    "Category",
    "Domain",
    "Taxonomy",
    "TaxonomyError",
    "UnknownCategoryError",
    "UnknownDomainError",
    "UnknownNameError",
    "load_taxonomy",
    "parse_taxonomy",
    "suggest",
]
