"""Python functions that tests bind as tools through the config (`[[rollout.python_tools]]`)."""

from __future__ import annotations

from typing import Literal

RATES = {"EUR": 0.5, "GBP": 0.25, "JPY": 100.0}
CALLS: list[dict[str, object]] = []


def convert_currency(amount: float, currency: Literal["EUR", "GBP", "JPY"] = "EUR", note: str | None = None) -> dict:
    """Convert an amount of US dollars into another currency at today's rate.

    Args:
        amount: The amount in US dollars.
        currency: The currency to convert into.
        note: A free-text note kept with the conversion.
    """
    CALLS.append({"amount": amount, "currency": currency})
    return {"amount": amount, "currency": currency, "converted": round(amount * RATES[currency], 2)}
