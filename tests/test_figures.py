from pytest_axion.figures import figure


def test_a_figure_has_one_decimal_from_10_and_three_significant_digits_below():
    assert [figure(v) for v in (6256.64, 312.44, 41.34, 10.0, 9.996, 5.0, 0.125, 0.0)] == [
        "6256.6", "312.4", "41.3", "10.0", "10.0", "5.00", "0.125", "0.00"]


def test_a_negative_figure_is_written_like_its_size():
    assert figure(-41.34) == "-41.3" and figure(-5.0) == "-5.00"
