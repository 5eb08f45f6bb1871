"""What a censored result (``<x``, ``<=x``, ``>x``, ``>=x``) proves about a threshold.

A censored value is an interval, not a number: ``>=5`` means "5 or more", which does not prove "more than 5".
A threshold counts as crossed only when every value the result allows crosses it. SLEDAI-2K descriptors and
the H/L interpretation flags both ask these two questions, so they share the answer.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["proves_above", "proves_below"]


def proves_above(number: Decimal, comparator: str | None, limit: Decimal) -> bool:
    """True when the reported value is certainly strictly above ``limit``."""
    if comparator in ("<", "<="):
        return False  # values down to zero are allowed
    if comparator == ">":
        return number >= limit  # every value is > number >= limit
    if comparator == ">=":
        return number > limit  # the smallest allowed value, number itself, must exceed the limit
    return number > limit


def proves_below(number: Decimal, comparator: str | None, limit: Decimal) -> bool:
    """True when the reported value is certainly strictly below ``limit``."""
    if comparator in (">", ">="):
        return False  # values without bound are allowed
    if comparator == "<":
        return number <= limit
    if comparator == "<=":
        return number < limit
    return number < limit
