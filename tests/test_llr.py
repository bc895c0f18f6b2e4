"""The LLR functions: golden values, the SPEC's formula, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spec_port import spec_llr, spec_root_llr

from daskrec.llr import llr, root_llr

counts = st.integers(min_value=0, max_value=10**7)


def cancellation(*k: int) -> float:
    """Absolute round-off the entropy sums can carry: a few ulps of their largest term, N ln N."""
    total = sum(k)
    return 1e-13 * total * math.log(total) if total > 1 else 1e-12


def test_golden_values() -> None:
    assert llr(1.0, 0.0, 0.0, 1.0) == 2.772588722239781
    assert llr(10.0, 0.0, 0.0, 10.0) == pytest.approx(27.7258872224, rel=1e-9)
    assert llr(5.0, 1995.0, 0.0, 100000.0) == pytest.approx(39.33052, rel=1e-6)
    assert root_llr(0.0, 1.0, 1.0, 0.0) == -math.sqrt(llr(1.0, 0.0, 0.0, 1.0))


def test_vectorised_over_arrays() -> None:
    k = np.array([[1.0, 0, 0, 1], [10, 0, 0, 10], [0, 1, 1, 0]])
    np.testing.assert_array_equal(llr(*k.T), [llr(*row) for row in k])
    assert root_llr(*k.T).shape == (3,)


@given(counts, counts, counts, counts)
def test_agrees_with_the_spec_port(k11: int, k12: int, k21: int, k22: int) -> None:
    tolerance = cancellation(k11, k12, k21, k22)
    assert llr(float(k11), k12, k21, k22) == pytest.approx(spec_llr(k11, k12, k21, k22), rel=1e-9, abs=tolerance)
    expected = spec_root_llr(k11, k12, k21, k22)
    got = root_llr(float(k11), k12, k21, k22)
    assert got * abs(got) == pytest.approx(expected * abs(expected), rel=1e-9, abs=tolerance)


@given(counts, counts, counts, counts)
def test_nonnegative_and_unchanged_by_transposing(k11: int, k12: int, k21: int, k22: int) -> None:
    tolerance = cancellation(k11, k12, k21, k22)
    value = llr(float(k11), k12, k21, k22)
    assert value >= 0.0
    assert llr(float(k11), k21, k12, k22) == pytest.approx(value, rel=1e-9, abs=tolerance)
    root, transposed = root_llr(float(k11), k12, k21, k22), root_llr(float(k11), k21, k12, k22)
    assert transposed * abs(transposed) == pytest.approx(root * abs(root), rel=1e-9, abs=tolerance)


@given(*(st.integers(min_value=1, max_value=3000) for _ in range(4)))
def test_zero_for_independent_tables(a: int, b: int, c: int, d: int) -> None:
    # An outer product of margins is a table with no association at all.
    k11, k12, k21, k22 = a * c, a * d, b * c, b * d
    assert llr(float(k11), k12, k21, k22) == pytest.approx(0.0, abs=cancellation(k11, k12, k21, k22))


@given(counts, counts, counts, counts)
def test_sign_follows_the_spec_rule(k11: int, k12: int, k21: int, k22: int) -> None:
    score = root_llr(float(k11), k12, k21, k22)
    assert abs(score) == pytest.approx(math.sqrt(llr(float(k11), k12, k21, k22)), rel=1e-12)
    negative = k11 + k12 > 0 and k21 + k22 > 0 and k11 / (k11 + k12) < k21 / (k21 + k22)
    if score != 0.0:
        assert (score < 0) == negative
