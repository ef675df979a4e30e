import pytest

from pytest_axion.machine.sizing import levels_off_at, prompt_fill_tokens, still_rising

# llama-bench pp1..pp512 on this project's 2-vCPU EPYC VM (BENCHMARKS.md), tokens -> t/s.
ONE_THREAD = [(1, 77), (2, 112), (4, 104), (8, 154), (16, 172), (32, 167), (64, 180), (128, 184), (256, 178),
              (512, 174)]
TWO_THREADS = [(1, 97), (2, 122), (4, 198), (8, 282), (16, 281), (32, 302), (64, 331), (128, 352), (256, 353),
               (512, 327)]
# The 16-core Xeon's prompt cells of the reference suite (prompt x users tokens -> median t/s).
SIXTEEN_THREADS = [(32, 1778), (64, 2635), (96, 3201), (128, 3651), (128, 3596), (256, 3821), (384, 5496), (512, 6257)]


@pytest.mark.parametrize(("threads", "tokens"), [(1, 32), (2, 64), (4, 128), (16, 512), (32, 512), (64, 512)])
def test_the_fill_rule_is_32_tokens_a_thread_and_at_most_one_micro_batch(threads, tokens):
    assert prompt_fill_tokens(threads) == tokens
    assert prompt_fill_tokens(16, n_ubatch=256) == 256


@pytest.mark.parametrize(("points", "knee"), [(ONE_THREAD, 16), (TWO_THREADS, 64), (SIXTEEN_THREADS, 512)])
def test_the_rule_covers_where_measured_prompt_speed_levels_off(points, knee):
    assert levels_off_at(points) == knee
    threads = {id(ONE_THREAD): 1, id(TWO_THREADS): 2, id(SIXTEEN_THREADS): 16}[id(points)]
    assert prompt_fill_tokens(threads) >= knee


def test_rising_speed_is_told_apart_from_a_level_curve_and_a_dip():
    assert still_rising(SIXTEEN_THREADS)
    assert not still_rising([(t, s) for t, s in TWO_THREADS if t >= 64])      # levelled off
    assert not still_rising([(64, 330), (128, 160), (256, 350), (512, 340)])   # one slow cell: not a climb
    assert not still_rising([(64, 100), (128, 200)])                           # two points say nothing
    assert levels_off_at([]) is None
