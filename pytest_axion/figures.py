"""How every message, table and summary writes a measured figure: one rule, so that one value reads the same
in a verdict, the terminal table and the A/B summary."""

from __future__ import annotations


def figure(value: float) -> str:
    """One decimal from 10 up, three significant digits below: ``6256.6``, ``41.3``, ``5.00``, ``0.125``."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:#.3g}"
