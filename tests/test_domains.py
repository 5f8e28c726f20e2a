"""The domain taxonomy: size and shape of the packaged data, lookups with suggestions, MCP label
placement, and validation errors that name the offending entry."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from synth.domains import (
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
)

TOUCAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mcp" / "toucan_mcp_servers.jsonl.gz"


def _toucan_servers() -> list[dict[str, Any]]:
    if not TOUCAN.exists():
        pytest.skip(f"Toucan MCP data not present at {TOUCAN}")
    with gzip.open(TOUCAN, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_taxonomy()


def _good_data() -> dict[str, Any]:
    return {
        "version": 1,
        "categories": [
            {
                "name": "finance",
                "description": "Money.",
                "domains": [
                    {"name": "stock_trading", "description": "Orders.", "examples": ["broker"], "mcp_labels": []},
                    {"name": "banking", "description": "Accounts.", "examples": ["bank"], "mcp_labels": []},
                ],
            },
            {
                "name": "weather_climate",
                "description": "Weather.",
                "domains": [
                    {"name": "weather", "description": "Forecasts.", "examples": ["forecast API"]},
                ],
            },
        ],
    }


# ---------------------------------------------------------------- packaged data


def test_size(tax: Taxonomy) -> None:
    assert len(tax.categories) >= 30
    assert len(tax.domains) >= 300
    assert len(tax) == len(tax.domains)


def test_load_is_cached() -> None:
    assert load_taxonomy() is load_taxonomy()


def test_shape(tax: Taxonomy) -> None:
    names = tax.domain_names
    assert len(names) == len(set(names))
    assert len(tax.category_names) == len(set(tax.category_names))
    for cat in tax.categories:
        assert isinstance(cat, Category)
        assert SLUG_RE.match(cat.name) and cat.description.strip() and cat.domains
        for dom in cat.domains:
            assert isinstance(dom, Domain)
            assert SLUG_RE.match(dom.name)
            assert dom.category == cat.name
            assert dom.description.strip() and "\n" not in dom.description
            assert len(dom.examples) >= 3, dom.name
            assert all(e.strip() for e in dom.examples)


def test_covers_areas_toucan_misses(tax: Taxonomy) -> None:
    for name in [
        "smart_home_iot",
        "robotics_industrial",
        "logistics_supply_chain",
        "legal",
        "human_resources",
        "government_public_services",
        "science_research",
        "agriculture",
        "energy_utilities",
    ]:
        assert tax.by_category(name), name
    for name in ["weather", "web_search", "stock_trading", "flight_booking", "email", "sql_databases"]:
        assert name in tax


def test_every_toucan_label_is_mapped(tax: Taxonomy) -> None:
    servers = _toucan_servers()
    primaries = {s["primary_label"] for s in servers if s.get("primary_label")}
    secondaries = {label for s in servers for label in s.get("secondary_labels") or []}
    assert primaries
    used = {label for d in tax.domains for label in d.mcp_labels}
    assert primaries <= used, primaries - used
    assert secondaries <= used, secondaries - used
    for label in primaries:
        dom = tax.domain_for_labels(label, [])
        assert dom is not None and label in dom.mcp_labels, label
    # every real server lands somewhere
    for s in servers:
        assert tax.domain_for_labels(s.get("primary_label"), s.get("secondary_labels") or []) is not None


# ---------------------------------------------------------------- lookups


def test_get_and_by_category(tax: Taxonomy) -> None:
    dom = tax.get("weather")
    assert dom.name == "weather" and dom.category == "weather_climate"
    fin = tax.by_category("finance")
    assert tax.get("stock_trading") in fin
    assert all(d.category == "finance" for d in fin)


def test_misspelled_domain_suggests(tax: Taxonomy) -> None:
    with pytest.raises(UnknownDomainError) as info:
        tax.get("wether")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.name == "wether"
    assert err.suggestions[0] == "weather"
    assert str(err).startswith("unknown domain 'wether'; did you mean: weather")


def test_substring_suggestions(tax: Taxonomy) -> None:
    with pytest.raises(UnknownDomainError) as info:
        tax.get("crypto")
    assert {"crypto_wallet", "crypto_exchange"} <= set(info.value.suggestions)


def test_no_suggestions(tax: Taxonomy) -> None:
    with pytest.raises(UnknownDomainError) as info:
        tax.get("qqqzzzx")
    assert info.value.suggestions == []
    assert str(info.value) == "unknown domain 'qqqzzzx'; see 'synth domains list'"


def test_unknown_category(tax: Taxonomy) -> None:
    with pytest.raises(UnknownCategoryError) as info:
        tax.by_category("financ")
    assert info.value.suggestions[0] == "finance"
    assert "unknown category 'financ'" in str(info.value)


def test_resolve_keeps_order_and_dedups(tax: Taxonomy) -> None:
    got = tax.resolve(["weather", "stock_trading", "weather", "email", "stock_trading"])
    assert [d.name for d in got] == ["weather", "stock_trading", "email"]
    assert tax.resolve([]) == []
    with pytest.raises(UnknownDomainError):
        tax.resolve(["weather", "stok_trading"])


def test_domain_for_labels(tax: Taxonomy) -> None:
    assert tax.domain_for_labels("Weather", []) == tax.get("weather")
    # case and whitespace do not matter
    assert tax.domain_for_labels("  weather ", []) == tax.get("weather")
    # secondary labels break ties between domains carrying the primary label
    dom = tax.domain_for_labels("Web Search & Research", ["Browser Automation"])
    assert dom is not None and "Browser Automation" in dom.mcp_labels
    assert tax.domain_for_labels("No Such Label", []) is None
    assert tax.domain_for_labels(None, []) is None
    # no primary: fall back to the best secondary match
    fallback = tax.domain_for_labels(None, ["Weather"])
    assert fallback is not None and "Weather" in fallback.mcp_labels


# ---------------------------------------------------------------- validation


def test_parse_good() -> None:
    tax = parse_taxonomy(_good_data())
    assert tax.category_names == ["finance", "weather_climate"]
    assert [d.name for d in tax.domains] == ["stock_trading", "banking", "weather"]
    assert tax.get("weather").category == "weather_climate"


def _break(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(_good_data())
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["categories"][0]["domains"][1].update(name="Bad Name"), "domain 'Bad Name'"),
        (lambda d: d["categories"][1]["domains"][0].update(name="banking"), "domain 'banking'"),
        (lambda d: d["categories"][1].update(name="finance"), "duplicate category"),
        (lambda d: d["categories"][0]["domains"][0].update(description="  "), "domain 'stock_trading'"),
        (lambda d: d["categories"][0]["domains"][1].update(examples=[]), "domain 'banking'"),
        (lambda d: d["categories"][1].update(description=""), "category 'weather_climate'"),
        (lambda d: d["categories"][1].update(domains=[]), "category 'weather_climate'"),
        (lambda d: d["categories"][0]["domains"][0].update(mcp_labels="Weather"), "domain 'stock_trading'"),
        (lambda d: d["categories"][0]["domains"][0].update(exmaples=["typo"]), "domain 'stock_trading'"),
        (lambda d: d.pop("categories"), "categories"),
    ],
)
def test_broken_taxonomy_names_entry(mutate: Any, needle: str) -> None:
    with pytest.raises(TaxonomyError) as info:
        parse_taxonomy(_break(mutate))
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_duplicate_domain_names_both_categories() -> None:
    data = _break(lambda d: d["categories"][1]["domains"][0].update(name="banking"))
    expected = r"category 'weather_climate' > domain 'banking'.*also in category 'finance'"
    with pytest.raises(TaxonomyError, match=expected):
        parse_taxonomy(data)


def test_select_all_categories_and_exclusions(tax: Taxonomy) -> None:
    """`--domains all`, `--categories`, `--exclude` (a domain or a whole category) make one
    selection, each domain once; unknown names of any kind are errors with suggestions."""
    everything = tax.select(["all"])
    assert [d.name for d in everything] == tax.domain_names and len(everything) >= 300
    finance = [d.name for d in tax.by_category("finance")]
    got = [d.name for d in tax.select(["weather"], ["finance"], [finance[0]])]
    assert got == ["weather", *finance[1:]]
    assert [d.name for d in tax.select(["all"], exclude=["finance"])] == \
        [n for n in tax.domain_names if n not in finance]
    with pytest.raises(UnknownCategoryError) as cat:
        tax.select(categories=["financ"])
    assert cat.value.suggestions[0] == "finance"
    with pytest.raises(UnknownNameError) as name:
        tax.select(["weather"], exclude=["wether"])
    assert "weather" in name.value.suggestions
    with pytest.raises(ValueError, match="selection is empty"):
        tax.select(["weather"], exclude=["weather"])
