import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.promises.reading import parse_reading_speed, resolve_reading_speed, sample_text, tokens_per_word


@pytest.mark.parametrize("text, value, unit", [
    ("5", 5.0, "tokens/s"), ("5.5tps", 5.5, "tokens/s"), ("6 tokens/s", 6.0, "tokens/s"),
    ("238wpm", 238.0, "wpm"), ("238 WPM", 238.0, "wpm"), ("200 words/min", 200.0, "wpm"),
])
def test_speeds_parse_in_both_units(text, value, unit):
    spec = parse_reading_speed(text, source="--axion-reading-speed")
    assert (spec.value, spec.unit) == (value, unit)


@pytest.mark.parametrize("text", ["abc", "-5wpm", "0", "5 mph", ""])
def test_bad_speeds_name_the_source(text):
    with pytest.raises(SettingsError, match="--axion-reading-speed must be a positive speed"):
        parse_reading_speed(text, source="--axion-reading-speed")


def test_words_per_minute_convert_through_tokens_per_word():
    spec = parse_reading_speed("240wpm", source="ini axion_reading_speed")
    speed = resolve_reading_speed(spec, tokens_per_word=1.25, tokenizer="SmolLM2")
    assert speed.tokens_per_s == pytest.approx(5.0)
    assert "240 wpm = 5.00 t/s at 1.25 tokens/word (SmolLM2 tokenizer; ini axion_reading_speed)" in speed.label


def test_the_shipped_sample_is_english_prose_of_a_few_hundred_words():
    text = sample_text()
    assert 200 <= len(text.split()) <= 400 and "bridge" in text.lower()
    assert tokens_per_word(390, "a b c") == 130.0


def test_real_tokenizer_gives_a_plausible_ratio(engine):
    text = sample_text()
    ratio = tokens_per_word(engine.count_tokens(text), text)
    assert 1.0 < ratio < 2.0  # English prose with a BPE tokenizer
