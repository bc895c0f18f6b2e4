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

* ``weighted`` (the default): ``tf`` is the indicator's root-LLR score in steps of
  :data:`~daskrec.schema.WEIGHT_STEP` (3), rounded to an integer (1 to
  :data:`~daskrec.schema.MAX_TERM_FREQUENCY`), stored by repeating the id's token in a whitespace-analysed
  text field; a strong co-occurrence counts for more than a weak one. Elasticsearch's core has
  no ``rank_features`` without the mapper-extras module, and repeated terms work on every
  distribution.
* ``keyword`` (the tutorial's): ``tf = 1``, a plain keyword match.

The in-process scores are Lucene's to the bit (float32 clause scores, summed exactly, reported
in float32), and ties are broken by the item id as text, ascending, as Elasticsearch sorts a
keyword. When fewer
than ``k`` items match, the most popular remaining items follow (popularity descending, then id
as text), or with ``trending`` backfill the most trending (then popularity, then id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from .config import Backfill, check_backfill
from .errors import ConfigError
from .schema import LINEAR_K1, Layout, indicator_field, indicator_fields, scores_field, term_frequencies

if TYPE_CHECKING:  # the Scorer imports scipy where it uses it: the service wants only Recommendation
    import pyarrow as pa  # from this module, and starts ~0.2 s sooner without scipy
    import scipy.sparse as sp

__all__ = ["Recommendation", "Scorer", "clause_scores"]

_BATCH_USERS = 256


@dataclass(frozen=True)
class Recommendation:
    """One recommended item."""

    item: object
    """The item id, as it was in the events log."""
    score: float
    """The ranking score of an indicator match; 0 for popularity backfill."""
    reason: Literal["indicators", "popularity", "trending"]
    """Why it was recommended."""


def clause_scores(tf: np.ndarray, df: np.ndarray, doc_count: int, boost: float = 1.0) -> np.ndarray:
    """Score of a ``term`` clause with ``boost`` for a document with ``tf`` copies of a term found
    in ``df`` of the ``doc_count`` documents, computed as Lucene computes BM25 (``b = 0``, ``k1 =``
    :data:`LINEAR_K1`, Elasticsearch's ``k1 + 1`` factor), in float32 step by step, so that a
    sum of clauses is bit for bit the engine's score.

    Examples
    --------
    >>> float(clause_scores(np.array([1]), np.array([106]), 5747)[0])  # as _explain reports it
    3.98876953125
    """
    idf = np.log(1.0 + (doc_count - df + 0.5) / (df + 0.5)).astype(np.float32)
    weight = (np.float32(boost) * np.float32(LINEAR_K1 + 1)) * idf
    norm_inverse = np.float32(1.0) / np.float32(LINEAR_K1)
    scores: np.ndarray = weight - weight / (np.float32(1.0) + np.asarray(tf, dtype=np.float32) * norm_inverse)
    return scores


@dataclass(frozen=True)
class _FieldIndex:
    """One indicator field, inverted: which candidates list which history items, how often."""

    history_items: np.ndarray
    candidates: np.ndarray
    tf: np.ndarray
    df: np.ndarray
    doc_count: int


class Scorer:
    """The ranking of :func:`daskrec.serve.recommend`, computed in process from an indicators
    table (for evaluation without a node, and to check the node's answers)."""

    def __init__(self, table: pa.Table, layout: Layout = "weighted") -> None:
        """Index ``table`` (``item``, ``indicators``, ``scores``, any ``<type>_indicators`` and
        ``<type>_scores``, ``popularity``, ``trending`` if the build has it) as ``layout``."""
        ids = table.column("item").to_numpy(zero_copy_only=False)
        self.items: list[object] = ids.tolist()
        """Every item id, by code."""
        self._codes = {item: code for code, item in enumerate(self.items)}
        n_items = len(ids)
        as_text = np.array([str(item) for item in self.items], dtype=object)
        text_rank = np.empty(n_items, dtype=np.int64)
        text_rank[np.argsort(as_text, kind="stable")] = np.arange(n_items)
        self._text_rank = text_rank
        self._fields: dict[str, _FieldIndex] = {}
        for field in indicator_fields(table.column_names):
            indicators = table.column(field).combine_chunks()
            counts = np.diff(indicators.offsets.to_numpy())
            listed = self._encode(indicators.flatten().to_numpy(zero_copy_only=False))
            scores = table.column(scores_field(field)).combine_chunks().flatten().to_numpy()
            self._fields[field] = _FieldIndex(
                history_items=listed,
                candidates=np.repeat(np.arange(n_items), counts),
                tf=term_frequencies(scores, layout),
                df=np.bincount(listed, minlength=n_items),
                doc_count=int(np.count_nonzero(counts)),
            )
        self._weights: dict[tuple[str, float], sp.csr_array] = {}
        popularity = table.column("popularity").to_numpy()
        trending = table.column("trending").to_numpy() if "trending" in table.column_names else np.zeros(n_items, np.int64)
        self._backfill_order = {
            "popularity": np.lexsort((text_rank, -popularity)),
            "trending": np.lexsort((text_rank, -popularity, -trending)),
        }

    def _field_weights(self, field: str, boost: float) -> sp.csr_array:
        """History item x candidate clause scores of ``field`` with ``boost``."""
        import scipy.sparse as sp

        if (field, boost) not in self._weights:
            if field not in self._fields:
                raise ConfigError(
                    f"field {field!r}: the indicators have no such field (they have {sorted(self._fields)}); "
                    "check the cross types and field boosts against the build's --cross."
                )
            index = self._fields[field]
            values = clause_scores(index.tf, index.df[index.history_items], index.doc_count, boost)
            n_items = len(self.items)
            self._weights[field, boost] = sp.csr_array(
                (values.astype(np.float64), (index.history_items, index.candidates)), shape=(n_items, n_items)
            )
        return self._weights[field, boost]

    def _encode(self, items: Iterable[object]) -> np.ndarray:
        return np.fromiter((self._codes[item] for item in items), dtype=np.int64)

    def recommend(
        self,
        history: Sequence[object],
        k: int = 10,
        *,
        cross_histories: Mapping[str, Sequence[object]] | None = None,
        boosts: Mapping[str, float] | None = None,
        exclude: Iterable[object] = (),
        backfill: Backfill = "popularity",
    ) -> list[Recommendation]:
        """Up to ``k`` items for one user, as :func:`daskrec.serve.recommend` ranks them."""
        cross = {name: [items] for name, items in (cross_histories or {}).items()}
        return self.recommend_many([history], k, cross_histories=cross, boosts=boosts, exclude=[exclude], backfill=backfill)[0]

    def recommend_many(
        self,
        histories: Sequence[Sequence[object]],
        k: int = 10,
        *,
        cross_histories: Mapping[str, Sequence[Sequence[object]]] | None = None,
        boosts: Mapping[str, float] | None = None,
        exclude: Sequence[Iterable[object]] | None = None,
        backfill: Backfill = "popularity",
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for many users at once (a sparse product per batch of users);
        ``cross_histories`` holds, per event type, one history per user.

        Items unknown to the table are ignored in a history and in ``exclude``.
        """
        check_backfill(backfill)
        boosts = boosts or {}
        unknown = sorted(set(boosts) - set(self._fields))
        if unknown:
            raise ConfigError(f"boosts: {unknown} are not indicator fields of these indicators (they have {sorted(self._fields)}).")
        searched = {indicator_field(): histories, **{indicator_field(name): lists for name, lists in (cross_histories or {}).items()}}
        weights = {field: self._field_weights(field, float(boosts.get(field, 1.0))) for field in searched}
        out: list[list[Recommendation]] = []
        for start in range(0, len(histories), _BATCH_USERS):
            stop = min(start + _BATCH_USERS, len(histories))
            scores = np.zeros((stop - start, len(self.items)))
            for field, lists in searched.items():
                scores += (self._history_matrix(lists[start:stop]) @ weights[field]).toarray()
            excluded = exclude[start:stop] if exclude is not None else [()] * (stop - start)
            for row, (history, extra) in enumerate(zip(histories[start:stop], excluded)):
                blocked = np.union1d(self._known(history), self._known(extra))
                out.append(self._ranked(scores[row], blocked, k, backfill))
        return out

    def _history_matrix(self, histories: Sequence[Sequence[object]]) -> sp.csr_array:
        """Users x items, 1 where the item is in the user's history (repeats count once)."""
        import scipy.sparse as sp

        codes = [self._known(history) for history in histories]
        rows = np.repeat(np.arange(len(histories)), [len(c) for c in codes])
        columns = np.concatenate(codes) if rows.size else np.empty(0, dtype=np.int64)
        return sp.csr_array((np.ones(len(rows)), (rows, columns)), shape=(len(histories), len(self.items)))

    def _known(self, items: Iterable[object]) -> np.ndarray:
        return np.unique(self._encode(item for item in items if item in self._codes))

    def _ranked(self, user_scores: np.ndarray, blocked: np.ndarray, k: int, backfill: Backfill) -> list[Recommendation]:
        user_scores[blocked] = 0.0
        candidates = np.flatnonzero(user_scores > 0)
        # The float32 clause scores add up exactly in float64; Lucene adds them in double and
        # reports a float32, and so do we. Ties go to the smaller id as text.
        ranked = user_scores[candidates].astype(np.float32)
        order = np.lexsort((self._text_rank[candidates], -ranked))[:k]
        found = [Recommendation(self.items[candidates[i]], float(ranked[i]), "indicators") for i in order]
        if backfill != "off" and len(found) < k:
            taken = np.union1d(blocked, candidates[order])
            by_count = self._backfill_order[backfill]
            fill = by_count[~np.isin(by_count, taken)][: k - len(found)]
            found += [Recommendation(self.items[c], 0.0, backfill) for c in fill]
        return found
