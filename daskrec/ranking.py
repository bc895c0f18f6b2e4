"""How a user's history ranks items: the one definition that Elasticsearch (through the index
mapping of :mod:`daskrec.index` and the queries of :mod:`daskrec.serve`) and the in-process
:class:`Scorer` both follow.

An item ``i`` is scored for a history ``H`` by the history items found among its indicators:

    score(i) = Σ_{h ∈ H ∩ indicators(i)} idf(h) · (k1 + 1) · tf(i, h) / (tf(i, h) + k1)

which is Lucene's BM25 with ``b = 0`` (no length normalisation) and ``k1 =`` :data:`LINEAR_K1`,
so the sum grows almost linearly with ``tf``. ``idf(h) = ln(1 + (N − df(h) + 0.5) / (df(h) + 0.5))``
counts, over the N items that have indicators, the df(h) that list ``h``: a history item that is
everybody's indicator says little.

The layouts differ only in ``tf``:

* ``weighted`` (the default): ``tf`` is the indicator's root-LLR score rounded to an integer
  (at least 1), stored by repeating the id; a strong co-occurrence counts for more than a
  weak one. Elasticsearch's core has no ``rank_features`` without the mapper-extras module, and
  repeated terms work on every distribution.
* ``keyword`` (the tutorial's): ``tf = 1``, a plain keyword match.

The in-process scores are Lucene's to the bit (float32 clause scores, summed exactly, reported
in float32), and ties are broken by the item id as text, ascending, as Elasticsearch sorts a
keyword. When fewer
than ``k`` items match, the most popular remaining items follow (popularity descending, then id
as text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from .config import Layout

__all__ = ["LINEAR_K1", "Layout", "Recommendation", "Scorer", "term_frequencies", "clause_scores"]

LINEAR_K1 = 1000.0
"""BM25's ``k1`` for indicator fields: ``tf / (tf + k1)`` is within 5% of linear up to tf = 50."""

_BATCH_USERS = 256


@dataclass(frozen=True)
class Recommendation:
    """One recommended item."""

    item: object
    """The item id, as it was in the events log."""
    score: float
    """The ranking score of an indicator match; 0 for popularity backfill."""
    reason: Literal["indicators", "popularity"]
    """Why it was recommended."""


def term_frequencies(scores: np.ndarray, layout: Layout) -> np.ndarray:
    """How often each indicator id is written to the searched field.

    Examples
    --------
    >>> term_frequencies(np.array([12.4, 5.6, 0.3]), "weighted").tolist()
    [12, 6, 1]
    >>> term_frequencies(np.array([12.4, 5.6, 0.3]), "keyword").tolist()
    [1, 1, 1]
    """
    if layout == "keyword":
        return np.ones(len(scores), dtype=np.int64)
    return np.maximum(np.rint(scores), 1).astype(np.int64)


def clause_scores(tf: np.ndarray, df: np.ndarray, doc_count: int) -> np.ndarray:
    """Score of a ``term`` clause (boost 1) for a document with ``tf`` copies of a term found in
    ``df`` of the ``doc_count`` documents, computed as Lucene computes BM25 (``b = 0``, ``k1 =``
    :data:`LINEAR_K1`, Elasticsearch's ``k1 + 1`` factor), in float32 step by step, so that a
    sum of clauses is bit for bit the engine's score.

    Examples
    --------
    >>> float(clause_scores(np.array([1]), np.array([106]), 5747)[0])  # as _explain reports it
    3.98876953125
    """
    idf = np.log(1.0 + (doc_count - df + 0.5) / (df + 0.5)).astype(np.float32)
    weight = np.float32(LINEAR_K1 + 1) * idf
    norm_inverse = np.float32(1.0) / np.float32(LINEAR_K1)
    scores: np.ndarray = weight - weight / (np.float32(1.0) + np.asarray(tf, dtype=np.float32) * norm_inverse)
    return scores


class Scorer:
    """The ranking of :mod:`daskrec.serve`, computed in process from an indicators table (for
    evaluation without a node, and to check the node's answers)."""

    def __init__(self, table: pa.Table, layout: Layout = "weighted") -> None:
        """Index ``table`` (``item``, ``indicators``, ``scores``, ``popularity``) as ``layout``."""
        ids = table.column("item").to_numpy(zero_copy_only=False)
        self.items: list[object] = ids.tolist()
        """Every item id, by code."""
        self._codes = {item: code for code, item in enumerate(self.items)}
        n_items = len(ids)
        as_text = np.array([str(item) for item in self.items], dtype=object)
        text_rank = np.empty(n_items, dtype=np.int64)
        text_rank[np.argsort(as_text, kind="stable")] = np.arange(n_items)
        self._text_rank = text_rank
        indicators = table.column("indicators").combine_chunks()
        counts = np.diff(indicators.offsets.to_numpy())
        rows = np.repeat(np.arange(n_items), counts)
        columns = self._encode(indicators.flatten().to_numpy(zero_copy_only=False))
        scores = table.column("scores").combine_chunks().flatten().to_numpy()
        df = np.bincount(columns, minlength=n_items)
        weights = clause_scores(term_frequencies(scores, layout), df[columns], int(np.count_nonzero(counts)))
        # history item x candidate, so a batch of histories times this is their candidates' scores
        self._weights = sp.csr_array((weights, (columns, rows)), shape=(n_items, n_items))
        popularity = table.column("popularity").to_numpy()
        self._by_popularity = np.lexsort((text_rank, -popularity))

    def _encode(self, items: Iterable[object]) -> np.ndarray:
        return np.fromiter((self._codes[item] for item in items), dtype=np.int64)

    def recommend(
        self, history: Sequence[object], k: int = 10, *, exclude: Iterable[object] = (), backfill: bool = True
    ) -> list[Recommendation]:
        """Up to ``k`` items for one history, as :func:`daskrec.serve.recommend` ranks them."""
        return self.recommend_many([history], k, exclude=[exclude], backfill=backfill)[0]

    def recommend_many(
        self,
        histories: Sequence[Sequence[object]],
        k: int = 10,
        *,
        exclude: Sequence[Iterable[object]] | None = None,
        backfill: bool = True,
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for many histories at once (a sparse product per batch of users).

        Items unknown to the table are ignored in a history and in ``exclude``.
        """
        out: list[list[Recommendation]] = []
        for start in range(0, len(histories), _BATCH_USERS):
            batch = histories[start : start + _BATCH_USERS]
            excluded = exclude[start : start + _BATCH_USERS] if exclude is not None else [()] * len(batch)
            out += self._batch(batch, excluded, k, backfill)
        return out

    def _known(self, items: Iterable[object]) -> np.ndarray:
        return np.unique(self._encode(item for item in items if item in self._codes))

    def _batch(
        self, histories: Sequence[Sequence[object]], exclude: Sequence[Iterable[object]], k: int, backfill: bool
    ) -> list[list[Recommendation]]:
        n_items = len(self.items)
        history_codes = [self._known(history) for history in histories]
        lengths = [len(codes) for codes in history_codes]
        rows = np.repeat(np.arange(len(histories)), lengths)
        columns = np.concatenate(history_codes) if rows.size else np.empty(0, dtype=np.int64)
        matrix = sp.csr_array((np.ones(len(rows)), (rows, columns)), shape=(len(histories), n_items))
        scores = (matrix @ self._weights).toarray()
        out = []
        for row, (codes, extra) in enumerate(zip(history_codes, exclude)):
            blocked = np.union1d(codes, self._known(extra))
            user_scores = scores[row]
            user_scores[blocked] = 0.0
            candidates = np.flatnonzero(user_scores > 0)
            # The float32 clause scores add up exactly in float64; Lucene adds them in double and
            # reports a float32, and so do we. Ties go to the smaller id as text.
            ranked = user_scores[candidates].astype(np.float32)
            order = np.lexsort((self._text_rank[candidates], -ranked))[:k]
            found = [
                Recommendation(self.items[candidates[i]], float(ranked[i]), "indicators") for i in order
            ]
            order = candidates[order]
            if backfill and len(found) < k:
                taken = np.union1d(blocked, order)
                fill = self._by_popularity[~np.isin(self._by_popularity, taken)][: k - len(found)]
                found += [Recommendation(self.items[c], 0.0, "popularity") for c in fill]
            out.append(found)
        return out
