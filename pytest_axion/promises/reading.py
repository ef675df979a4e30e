"""Human reading speed: the per-user generation speed below which users wait for the text.

Default 5.0 tokens/s: the "human readability" figure in Arm's posts and MLPerf's 200 ms TPOT limit for
llama2-70b. Reading research (Brysbaert 2019) puts average silent reading of English non-fiction at 238
words per minute; words become tokens through the model's own tokenizer on a fixed English sample text,
because the words-per-token ratio depends on the tokenizer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources

from pytest_axion.errors import SettingsError

DEFAULT_TOKENS_PER_S = 5.0
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(wpm|words/min|tps|tokens/s|t/s)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ReadingSpeedSpec:
    """What the user asked for: a number in tokens/s or words/min, and where it came from."""

    value: float
    unit: str  # "tokens/s" or "wpm"
    source: str

    @property
    def is_default(self) -> bool:
        return self.source == "default"


@dataclass(frozen=True)
class ReadingSpeed:
    """Reading speed in tokens/s, with a label that says how it was obtained."""

    tokens_per_s: float
    label: str


DEFAULT_READING_SPEED = ReadingSpeedSpec(DEFAULT_TOKENS_PER_S, "tokens/s", "default")


def parse_reading_speed(text: str, *, source: str) -> ReadingSpeedSpec:
    """``5``, ``5tps``, ``5 tokens/s`` or ``238wpm``; raises SettingsError naming ``source``."""
    match = _PATTERN.match(text)
    value = float(match.group(1)) if match else math.nan
    if not match or not math.isfinite(value) or value <= 0:
        raise SettingsError(
            f"{source} must be a positive speed such as '5' (tokens/s) or '238wpm' (words per minute), got {text!r}"
        )
    unit = "wpm" if (match.group(2) or "").lower() in ("wpm", "words/min") else "tokens/s"
    return ReadingSpeedSpec(value, unit, source)


def sample_text() -> str:
    """The fixed English non-fiction passage used to convert words to tokens."""
    return (resources.files("pytest_axion") / "data" / "reading_sample.txt").read_text(encoding="utf-8")


def resolve_reading_speed(spec: ReadingSpeedSpec, *, tokens_per_word: float, tokenizer: str) -> ReadingSpeed:
    """Turn the spec into tokens/s; words per minute go through ``tokens_per_word`` of the model."""
    origin = "default" if spec.is_default else spec.source
    if spec.unit == "tokens/s":
        return ReadingSpeed(spec.value, f"reading speed {spec.value:g} t/s ({origin})")
    tokens_per_s = spec.value / 60.0 * tokens_per_word
    return ReadingSpeed(
        tokens_per_s,
        f"reading speed {spec.value:g} wpm = {tokens_per_s:.2f} t/s at {tokens_per_word:.2f} tokens/word "
        f"({tokenizer} tokenizer; {origin})",
    )


def tokens_per_word(token_count: int, text: str) -> float:
    """Tokens per whitespace-separated word of ``text``."""
    return token_count / max(1, len(text.split()))
