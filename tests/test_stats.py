import math

import pytest

from pytest_axion import stats


def test_quantile_interpolates_linearly_between_order_statistics():
    values = [4.0, 1.0, 3.0, 2.0]
    assert stats.quantile(values, 0.0) == 1.0
    assert stats.quantile(values, 1.0) == 4.0
    assert stats.quantile(values, 0.5) == pytest.approx(2.5)
    assert stats.quantile(values, 0.25) == pytest.approx(1.75)  # numpy's default ("linear") gives 1.75


def test_median_of_odd_count_is_the_middle_value():
    assert stats.median([5.0, 1.0, 3.0]) == 3.0


def test_iqr_and_mad_ignore_a_single_outlier():
    steady = [100.0, 101.0, 99.0, 100.0, 100.5]
    with_outlier = [*steady[:-1], 10.0]
    assert stats.mad(with_outlier) == pytest.approx(stats.mad(steady), abs=1.0)
    assert stats.iqr(with_outlier) < 5.0


def test_cv_is_stdev_over_mean():
    assert stats.cv([10.0, 10.0, 10.0]) == 0.0
    assert stats.cv([9.0, 11.0]) == pytest.approx(math.sqrt(2) / 10)
    assert stats.cv([7.0]) == 0.0


def test_empty_input_and_bad_quantile_are_rejected():
    with pytest.raises(ValueError):
        stats.median([])
    with pytest.raises(ValueError):
        stats.quantile([1.0], 1.5)


def test_summary_holds_every_figure_and_serialises():
    summary = stats.Summary.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (summary.n, summary.median, summary.minimum, summary.maximum) == (5, 3.0, 1.0, 100.0)
    assert summary.p50 == summary.median
    assert summary.p90 < summary.p99 <= summary.maximum
    assert set(summary.to_json()) >= {"median", "iqr", "mad", "cv", "p90", "p99"}
