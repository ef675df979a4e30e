import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.machine.features import missing_features, missing_message, parse_features

INFO = {"AVX2": "1", "AVX512": "1", "REPACK": "1", "LLAMAFILE": "1", "OPENMP": "1", "Metal.X": "1"}


def test_parse_accepts_build_flags_and_cpu_features_from_text_or_lists():
    assert parse_features("KLEIDIAI, REPACK,", source="--axion-require-features") == ("KLEIDIAI", "REPACK")
    assert parse_features(["sve", "i8mm", "sve"], source="requires") == ("sve", "i8mm")


@pytest.mark.parametrize("raw, message", [
    ("NOSUCHFLAG", "--axion-require-features: unknown feature(s) NOSUCHFLAG; llama.cpp build flags (upper case): "),
    ("kleidiai", "unknown feature(s) kleidiai"),
    ([1], "must list feature names as strings"),
    (" , ", "names no feature"),
])
def test_parse_refuses_unknown_names_listing_the_known_ones(raw, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_features(raw, source="--axion-require-features")
    assert "\n" not in str(err.value)


def test_missing_features_checks_flags_by_value_and_cpu_features_by_presence():
    assert missing_features(["REPACK", "avx2"], system_info=INFO, isa_features=["avx2"]) == []
    assert missing_features(["KLEIDIAI", "AMX_INT8", "sve"], system_info={**INFO, "AMX_INT8": "0"},
                            isa_features=["avx2"]) == ["KLEIDIAI", "AMX_INT8", "sve"]
    text = missing_message(["KLEIDIAI"], source="--axion-require-features", system_info=INFO, isa_features=["avx2"])
    assert text.startswith("--axion-require-features: required feature(s) missing: KLEIDIAI; llama.cpp reported "
                           "AVX2=1 AVX512=1 LLAMAFILE=1 OPENMP=1 REPACK=1; CPU features: avx2: rebuild")
    assert "Metal" not in text
