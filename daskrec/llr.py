r"""Log-likelihood ratio (G²) of a 2x2 contingency table, as in Dunning (1993) and Apache Mahout.

For a table with counts ``k11, k12, k21, k22`` (``k11``: both events, ``k12``: the first without
the second, ``k21``: the second without the first, ``k22``: neither)::

    xLogX(x) = x ln x            (0 for x = 0)
    H(x1..xn) = xLogX(x1 + ... + xn) - sum_i xLogX(xi)
    rowH = H(k11 + k12, k21 + k22)
    colH = H(k11 + k21, k12 + k22)
    matH = H(k11, k12, k21, k22)
    LLR  = 2 (rowH + colH - matH), or 0 when that is negative (round-off)
    rootLLR = sqrt(LLR), negated when k11 / (k11 + k12) < k21 / (k21 + k22)

Counts are non-negative; a side whose denominator is 0 never negates (0/0 compares false).

This is Mahout's ``org.apache.mahout.math.stats.LogLikelihood`` to the operation, so results agree
with it to the last bit.

References
----------
Ted Dunning, "Accurate Methods for the Statistics of Surprise and Coincidence",
Computational Linguistics 19(1), 1993.

The scalar functions are compiled with numba (``nogil``) so that the fused indicator kernel can call
them per co-occurrence; :func:`root_llr` and :func:`llr` are their NumPy ufuncs for arrays.
"""

from __future__ import annotations

import math

import numba

__all__ = ["llr", "root_llr"]

_jit = numba.njit(nogil=True, cache=True, error_model="numpy")


@_jit
def xlogx(x: float) -> float:
    """``x ln x``, and 0 for ``x = 0``."""
    return 0.0 if x == 0.0 else x * math.log(x)


@_jit
def llr_from_margins(
    k11: float,
    k12: float,
    k21: float,
    k22: float,
    xlogx_total: float,
    xlogx_row: float,
    xlogx_row_rest: float,
    xlogx_column: float,
    xlogx_column_rest: float,
) -> float:
    """LLR of one 2x2 table, given ``xLogX`` of its margins.

    ``xlogx_total = xLogX(k11+k12+k21+k22)``, ``xlogx_row = xLogX(k11+k12)``,
    ``xlogx_row_rest = xLogX(k21+k22)``, ``xlogx_column = xLogX(k11+k21)``,
    ``xlogx_column_rest = xLogX(k12+k22)``. Those depend only on an item's marginals, so the
    indicator kernel computes them once per item instead of once per co-occurrence; counts are
    exact integers in float64, so the result is bit for bit the same as :func:`llr_scalar`.
    """
    row_entropy = xlogx_total - xlogx_row - xlogx_row_rest
    column_entropy = xlogx_total - xlogx_column - xlogx_column_rest
    matrix_entropy = xlogx_total - xlogx(k11) - xlogx(k12) - xlogx(k21) - xlogx(k22)
    return llr_from_entropies(row_entropy + column_entropy, matrix_entropy)


@_jit
def llr_from_entropies(row_and_column_entropy: float, matrix_entropy: float) -> float:
    """LLR from the sum of a table's row and column entropies and its matrix entropy (0 when
    round-off makes it negative)."""
    if row_and_column_entropy < matrix_entropy:
        return 0.0  # round-off
    return 2.0 * (row_and_column_entropy - matrix_entropy)


@_jit
def negated(k11: float, k12: float, k21: float, k22: float) -> bool:
    """Whether the root LLR of this table is negative: ``k11 / (k11 + k12) < k21 / (k21 + k22)``."""
    # Mahout divides and lets 0/0 (NaN) compare false; for counts >= 0 a zero denominator means
    # a 0/0 side, so it never negates. Dividing (not cross-multiplying) keeps Mahout's rounding.
    first, second = k11 + k12, k21 + k22
    # A branch, not ``return <condition>``: as one expression the compiled code divided 0/0 even
    # when a side was 0, and the ufuncs warn of the invalid value.
    if first > 0.0 and second > 0.0 and k11 / first < k21 / second:
        return True
    return False


@_jit
def signed_root(llr_value: float, k11: float, k12: float, k21: float, k22: float) -> float:
    """``sqrt(llr_value)``, negated when :func:`negated` says so."""
    root = math.sqrt(llr_value)
    return -root if negated(k11, k12, k21, k22) else root


@_jit
def llr_scalar(k11: float, k12: float, k21: float, k22: float) -> float:
    """LLR of one 2x2 table (see the module docstring)."""
    return llr_from_margins(
        k11,
        k12,
        k21,
        k22,
        xlogx(k11 + k12 + k21 + k22),
        xlogx(k11 + k12),
        xlogx(k21 + k22),
        xlogx(k11 + k21),
        xlogx(k12 + k22),
    )


@_jit
def root_llr_scalar(k11: float, k12: float, k21: float, k22: float) -> float:
    """Signed root LLR of one 2x2 table (see the module docstring)."""
    return signed_root(llr_scalar(k11, k12, k21, k22), k11, k12, k21, k22)


_SIGNATURES = ["float64(float64, float64, float64, float64)"]


@numba.vectorize(_SIGNATURES, cache=True)  # type: ignore[untyped-decorator]
def llr(k11: float, k12: float, k21: float, k22: float) -> float:  # pragma: no cover - compiled
    """LLR of 2x2 tables given as four broadcastable arrays of counts.

    Examples
    --------
    >>> float(llr(1.0, 0.0, 0.0, 1.0))
    2.772588722239781
    """
    return llr_scalar(k11, k12, k21, k22)


@numba.vectorize(_SIGNATURES, cache=True)  # type: ignore[untyped-decorator]
def root_llr(k11: float, k12: float, k21: float, k22: float) -> float:  # pragma: no cover - compiled
    """Signed root LLR of 2x2 tables given as four broadcastable arrays of counts.

    Examples
    --------
    >>> float(root_llr(0.0, 1.0, 1.0, 0.0))
    -1.6651092223153954
    """
    return root_llr_scalar(k11, k12, k21, k22)

