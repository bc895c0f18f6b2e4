"""Offline evaluation: split an events log by time, train on the past, recommend, score the future.

1. :func:`temporal_split` cuts the log: ``global`` trains on events before the 80th percentile
   of timestamps; ``per-user`` trains on each user's first 80% of events (by time, input order
   breaking ties).
2. The configuration under test is built on the training rows with the ordinary pipeline and
   served by a real Elasticsearch (or, with ``es=None``, by the in-process
   :class:`~daskrec.ranking.Scorer`, which ranks the same way).
3. Each user's query is their most recent ``recent`` training events of the primary types; items
   the user met in training (any event type) are excluded. The relevant items are the user's
   test events of the primary types not met in training; users with none are not scored.
4. :func:`ranking_metrics` gives precision, recall, MAP and NDCG at k (binary relevance) with
   standard errors over users, catalogue coverage and the share of users given fewer than k
   items. Baselines are scored the same way in the same run: popularity, an item-item Jaccard
   (SAR's similarity, no time decay), and the ``implicit`` library's cosine and TF-IDF item-item
   models when it is installed (``pip install daskrec[eval]``).

Every method's list is filled up to k with the most popular unseen items, as ``recommend`` does.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .config import BuildConfig, IndexConfig, IngestConfig, Layout, Split
from .errors import ConfigError, InputError
from .ingest import IdKinds, StringIdsFound, expand_inputs, read_events
from .schema import indicator_field

log = logging.getLogger(__name__)

__all__ = ["Split", "EvaluationSet", "temporal_split", "ranking_metrics", "evaluate"]

TRAIN_FRACTION = 0.8
"""Share of events (global: of the time range's events; per-user: of each user's) used for training."""
_PRIMARY = "__primary__"
"""Event name of the primary rows in the training file (the primary types may be several)."""


@dataclass
class EvaluationSet:
    """A split log, ready to train on and score against."""

    train: pd.DataFrame
    """Training rows of the primary and cross types: ``visitorid``, ``itemid``, ``timestamp``,
    ``position``, ``matrix`` (0 primary, ``1 + t`` cross type ``t``), in input order."""
    histories: dict[object, list[object]]
    """Per scored user, the query: their most recent training items of the primary types."""
    cross_histories: list[dict[object, list[object]]]
    """Per cross type, per scored user: their most recent training items of that type."""
    seen: dict[object, set[object]]
    """Per scored user, every item they met in training (any event type)."""
    relevant: dict[object, set[object]]
    """Per scored user, their test items of the primary types not met in training."""


# ------------------------------------------------------------------------------------------- pure


def temporal_split(
    events: pd.DataFrame, split: Split, recent: int, n_cross: int = 0, fraction: float = TRAIN_FRACTION
) -> EvaluationSet:
    """Cut ``events`` (every type: ``visitorid``, ``itemid``, ``timestamp``, ``position``,
    ``matrix``: 0 primary, ``1 + t`` cross type ``t``, -1 any other type) into training and test
    rows by time.

    Examples
    --------
    >>> events = pd.DataFrame({"visitorid": [1] * 5, "itemid": [10, 11, 12, 13, 14],
    ...                        "timestamp": [1, 2, 3, 4, 5], "position": range(5), "matrix": 0})
    >>> cut = temporal_split(events, "per-user", recent=50)
    >>> cut.histories, cut.relevant
    ({1: [10, 11, 12, 13]}, {1: {14}})
    """
    if split not in ("global", "per-user"):
        raise ConfigError(f"split: must be 'global' or 'per-user', got {split!r}.")
    order = np.lexsort((events["position"].to_numpy(), events["timestamp"].to_numpy()))
    events = events.iloc[order]
    if split == "global":
        cutoff = np.quantile(events["timestamp"].to_numpy(), fraction)
        in_train = events["timestamp"].to_numpy() < cutoff
    else:
        rank = events.groupby("visitorid", sort=False).cumcount().to_numpy()
        size = events.groupby("visitorid", sort=False)["itemid"].transform("size").to_numpy()
        in_train = rank < np.floor(size * fraction)
    train, test = events[in_train], events[~in_train]
    seen_all = train.groupby("visitorid", sort=False)["itemid"].agg(set).to_dict()
    relevant: dict[object, set[object]] = {}
    for user, items in test[test["matrix"] == 0].groupby("visitorid", sort=False)["itemid"]:
        fresh = set(items) - seen_all.get(user, set())
        if fresh:
            relevant[user] = fresh

    def recent_items(matrix: int) -> dict[object, list[object]]:
        rows = train[train["matrix"] == matrix]
        latest = rows.groupby("visitorid", sort=False)["itemid"].agg(lambda s: s.tolist()[-recent:])
        return {user: latest.get(user, []) for user in relevant}

    return EvaluationSet(
        train=train[train["matrix"] >= 0].sort_values("position"),
        histories=recent_items(0),
        cross_histories=[recent_items(1 + t) for t in range(n_cross)],
        seen={user: seen_all.get(user, set()) for user in relevant},
        relevant=relevant,
    )


def ranking_metrics(
    recommended: Mapping[object, Sequence[object]], relevant: Mapping[object, set[object]], k: int, n_items: int
) -> dict[str, float]:
    """Mean precision, recall, MAP and NDCG at ``k`` over the users of ``relevant`` (binary
    relevance), each with its standard error (``*_se``); ``coverage``: distinct recommended items
    over ``n_items``; ``short_share``: users given fewer than ``k`` items.

    Examples
    --------
    >>> m = ranking_metrics({1: [5, 6]}, {1: {6}}, k=2, n_items=4)
    >>> m["precision_at_k"], m["recall_at_k"], round(m["ndcg_at_k"], 4), m["map_at_k"]
    (0.5, 1.0, 0.6309, 0.5)
    """
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    per_user: dict[str, list[float]] = {"precision": [], "recall": [], "map": [], "ndcg": []}
    short = 0
    shown: set[object] = set()
    for user, truth in relevant.items():
        listed = list(recommended.get(user, []))[:k]
        shown.update(listed)
        short += len(listed) < k
        hits = np.array([item in truth for item in listed], dtype=bool)
        n_hits = int(hits.sum())
        per_user["precision"].append(n_hits / k)
        per_user["recall"].append(n_hits / len(truth))
        precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        per_user["map"].append(float(precision_at[hits].sum()) / min(len(truth), k))
        ideal = discounts[: min(len(truth), k)].sum()
        per_user["ndcg"].append(float(discounts[: len(hits)][hits].sum()) / ideal)
    out: dict[str, float] = {}
    for name, values in per_user.items():
        array = np.asarray(values)
        out[f"{name}_at_k"] = float(array.mean()) if array.size else math.nan
        out[f"{name}_at_k_se"] = float(array.std(ddof=1) / math.sqrt(array.size)) if array.size > 1 else math.nan
    out["coverage"] = len(shown) / n_items if n_items else 0.0
    out["short_share"] = short / len(relevant) if relevant else 0.0
    return out


def _popularity_order(train: pd.DataFrame) -> list[object]:
    """Primary training items by distinct users, most first, ties by id as text (as the index sorts)."""
    users = train[train["matrix"] == 0].groupby("itemid")["visitorid"].nunique()
    frame = pd.DataFrame({"item": users.index, "users": users.to_numpy(), "text": users.index.astype(str)})
    return frame.sort_values(["users", "text"], ascending=[False, True])["item"].tolist()


def _fill(ranked: Sequence[object], popular: Sequence[object], blocked: set[object], k: int) -> list[object]:
    """``ranked`` without ``blocked`` items, then popular ones, ``k`` in all (fewer if the catalogue runs out)."""
    out: list[object] = []
    for item in [*ranked, *popular]:
        if item not in blocked:
            out.append(item)
            blocked = blocked | {item}
            if len(out) == k:
                break
    return out


class _Matrix:
    """The training rows as a binary users x items matrix, with codes both ways."""

    def __init__(self, train: pd.DataFrame) -> None:
        user_codes, self.users = pd.factorize(train["visitorid"], sort=True)
        item_codes, items = pd.factorize(train["itemid"], sort=True)
        self.items = items.tolist()
        self.user_code = {user: code for code, user in enumerate(self.users.tolist())}
        matrix = sp.csr_array(
            (np.ones(len(train)), (user_codes, item_codes)), shape=(len(self.users), len(self.items))
        )
        matrix.data[:] = 1.0
        self.matrix = matrix

    def rank(self, user_scores: Callable[[np.ndarray], np.ndarray], users: Sequence[object], depth: int) -> dict[object, list[object]]:
        """The ``depth`` best items per user by ``user_scores`` (rows of item scores for user codes)."""
        known = [user for user in users if user in self.user_code]
        out: dict[object, list[object]] = {}
        for start in range(0, len(known), 256):
            batch = known[start : start + 256]
            scores = user_scores(np.array([self.user_code[user] for user in batch]))
            for user, row in zip(batch, scores):
                top = np.argsort(-row, kind="stable")[:depth]
                out[user] = [self.items[i] for i in top if row[i] > 0]
        return out


def _jaccard_scores(matrix: sp.csr_array) -> Callable[[np.ndarray], np.ndarray]:
    """Item-item Jaccard similarity (SAR's ``jaccard``): users of both over users of either."""
    counts = (matrix.T @ matrix).tocoo()
    users_per_item = np.asarray(matrix.sum(axis=0)).ravel()
    keep = counts.row != counts.col
    rows, cols, both = counts.row[keep], counts.col[keep], counts.data[keep]
    similarity = sp.csr_array(
        (both / (users_per_item[rows] + users_per_item[cols] - both), (rows, cols)), shape=counts.shape
    )
    return lambda codes: (matrix[codes] @ similarity).toarray()


def _implicit_scores(matrix: sp.csr_array, model_name: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """An ``implicit`` item-item model (default neighbours) fitted on ``matrix``; ``None`` without the library."""
    try:
        from implicit import nearest_neighbours
    except ImportError:
        return None
    model = getattr(nearest_neighbours, model_name)()
    with warnings.catch_warnings():
        # implicit's TF-IDF and BM25 weighting hand its own kNN a COO matrix and then warn about it
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(sp.csr_matrix(matrix), show_progress=False)
    similarity = sp.csr_array(model.similarity)
    return lambda codes: (matrix[codes] @ similarity).toarray()


# --------------------------------------------------------------------------------------------- I/O


def read_split(inputs: Sequence[str], ingest: IngestConfig, split: Split) -> EvaluationSet:
    """Read an events log with daskrec's reader (bad rows are reported as in a build) and split it."""
    files = expand_inputs(list(inputs))
    kinds = IdKinds()
    while True:
        try:
            events = read_events(files, ingest, kinds, other_types=True).compute()
            break
        except StringIdsFound as found:
            kinds = kinds.with_strings(found.column)
    events = events[events["bad_column"] == 0].drop(columns="bad_column")
    if not (events["matrix"] == 0).any():
        raise InputError("no events of the primary types to evaluate on; check --event.", path=files[0].url, column="event")
    return temporal_split(events, split, ingest.recent, len(ingest.cross_event_types))


def evaluate(
    inputs: Sequence[str],
    config: BuildConfig,
    *,
    split: Split = "per-user",
    k: int = 10,
    layout: Layout = "weighted",
    boosts: Mapping[str, float] | None = None,
    es: Any = None,
    baselines: bool = True,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate ``config`` (built and served as ``daskrec build`` and ``recommend`` would) and the
    baselines on a temporal split of ``inputs``.

    Parameters
    ----------
    inputs
        Events files (CSV/Parquet paths, globs or URLs).
    config
        The build configuration under test.
    split
        ``per-user`` or ``global`` (see the module docstring).
    k
        List length scored.
    layout
        How the indicators are indexed and ranked.
    boosts
        Query weight per indicator field (``{"view_indicators": 0.5}``; default 1 each).
    es
        :class:`~daskrec.es.EsSettings` of a node to serve from (a temporary alias, deleted
        afterwards); ``None`` ranks in process with the same formula.
    baselines
        Also score popularity, Jaccard and (if installed) ``implicit``'s cosine and TF-IDF.
    show_progress
        Progress bars for the build.

    Returns
    -------
    dict
        ``{"split", "k", "users", "items", "serving", "config", "timings", "methods": {name: metrics}}``
        with ``daskrec`` the configuration under test; see :func:`ranking_metrics`.
    """
    import tempfile

    from .output import read_indicators
    from .pipeline import write_build

    if k < 1:
        raise ConfigError(f"k: must be at least 1, got {k}.")
    fields = [indicator_field(), *(indicator_field(name) for name in config.ingest.cross_event_types)]
    unknown = sorted(set(boosts or {}) - set(fields))
    if unknown:
        raise ConfigError(f"boosts: {unknown} are not indicator fields of this build (it has {fields}); check --cross.")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    data = read_split(inputs, config.ingest, split)
    timings["split"] = round(time.perf_counter() - started, 3)
    users = list(data.relevant)
    popular = _popularity_order(data.train)
    n_items = len(popular)
    recommended: dict[str, dict[object, list[object]]] = {}
    with tempfile.TemporaryDirectory(prefix="daskrec-evaluate-") as folder:
        train_file = f"{folder}/train.parquet"
        names = np.array([_PRIMARY, *config.ingest.cross_event_types], dtype=object)
        data.train.assign(event=names[data.train["matrix"].to_numpy()], transactionid="")[
            ["timestamp", "visitorid", "event", "itemid", "transactionid"]
        ].to_parquet(train_file, index=False)
        training = replace(config, ingest=replace(config.ingest, event_types=(_PRIMARY,)))
        cross = dict(zip(config.ingest.cross_event_types, data.cross_histories))
        started = time.perf_counter()
        write_build([train_file], f"{folder}/build", training, show_progress=show_progress)
        timings["build"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        if es is None:
            recommended["daskrec"] = _serve_in_process(read_indicators(f"{folder}/build"), data, cross, layout, boosts, k)
        else:
            recommended["daskrec"] = _serve_from_elasticsearch(f"{folder}/build", data, cross, layout, boosts, k, es)
        timings["recommend"] = round(time.perf_counter() - started, 3)
    if baselines:
        started = time.perf_counter()
        recommended.update(_baselines(data, popular, k))
        timings["baselines"] = round(time.perf_counter() - started, 3)
    methods = {
        name: ranking_metrics(
            {user: _fill(lists.get(user, []), popular, data.seen[user], k) for user in users}
            if name != "daskrec"
            else lists,
            data.relevant,
            k,
            n_items,
        )
        for name, lists in recommended.items()
    }
    return {
        "split": split,
        "k": k,
        "users": len(users),
        "items": n_items,
        "train_events": len(data.train),
        "serving": "in-process" if es is None else "elasticsearch",
        "layout": layout,
        "boosts": dict(boosts or {}),
        "config": asdict(config),
        "timings": timings,
        "methods": methods,
    }


def _serve_in_process(
    table: Any,
    data: EvaluationSet,
    cross: Mapping[str, dict[object, list[object]]],
    layout: Layout,
    boosts: Mapping[str, float] | None,
    k: int,
) -> dict[object, list[object]]:
    from .ranking import Scorer

    scorer = Scorer(table, layout)
    users = list(data.relevant)
    lists = scorer.recommend_many(
        [data.histories[user] for user in users],
        k,
        cross_histories={name: [histories[user] for user in users] for name, histories in cross.items()},
        boosts=boosts,
        exclude=[data.seen[user] for user in users],
    )
    return {user: [found.item for found in listed] for user, listed in zip(users, lists)}


def _serve_from_elasticsearch(
    build_dir: str,
    data: EvaluationSet,
    cross: Mapping[str, dict[object, list[object]]],
    layout: Layout,
    boosts: Mapping[str, float] | None,
    k: int,
    es: Any,
) -> dict[object, list[object]]:
    from .es import connect_es
    from .index import write_index
    from .serve import ItemFilter, recommend

    alias = f"daskrec-evaluate-{uuid.uuid4().hex[:12]}"
    config = IndexConfig(alias=alias, keep=1, replicas=0, layout=layout)
    client = connect_es(es)
    try:
        write_index(build_dir, es, config)
        out = {}
        for user in data.relevant:
            listed = recommend(
                client,
                data.histories[user],
                k,
                index=alias,
                cross_histories={name: histories[user] for name, histories in cross.items()},
                boosts=boosts,
                item_filter=ItemFilter(exclude=tuple(data.seen[user])),
                layout=layout,
            )
            out[user] = [found.item for found in listed]
        return out
    finally:
        for index in client.indices.get(index=f"{alias}-*", allow_no_indices=True):
            client.indices.delete(index=index)  # one by one: wildcard deletes are refused
        client.options(ignore_status=404).indices.delete_index_template(name=f"{alias}-template")
        client.close()


def _baselines(data: EvaluationSet, popular: list[object], k: int) -> dict[str, dict[object, list[object]]]:
    users = list(data.relevant)
    out: dict[str, dict[object, list[object]]] = {"popularity": {}}
    matrix = _Matrix(data.train[data.train["matrix"] == 0])
    depth = k + max((len(seen) for seen in data.seen.values()), default=0)
    out["jaccard"] = matrix.rank(_jaccard_scores(matrix.matrix), users, depth)
    for name, model in (("implicit_cosine", "CosineRecommender"), ("implicit_tfidf", "TFIDFRecommender")):
        scores = _implicit_scores(matrix.matrix, model)
        if scores is None:
            log.warning("evaluate: the implicit library is not installed; skipping %s (pip install daskrec[eval])", name)
            continue
        out[name] = matrix.rank(scores, users, depth)
    return out


_COLUMNS = ("ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k", "coverage", "short_share")


def format_table(result: Mapping[str, Any]) -> str:
    """The methods' metrics of an :func:`evaluate` result as aligned text (± one standard error)."""
    k = result["k"]
    header = ["method", *(name.replace("_at_k", f"@{k}") for name in _COLUMNS)]
    rows = [header]
    for method, metrics in result["methods"].items():
        cells = [method]
        for name in _COLUMNS:
            error = metrics.get(f"{name}_se")
            cells.append(f"{metrics[name]:.4f}" + (f" ±{error:.4f}" if error is not None else ""))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    title = (
        f"{result['split']} split, {result['users']} users scored, {result['items']} training items, "
        f"served {result['serving']} ({result['layout']} layout)"
    )
    return "\n".join([title, *lines])


def plot_metrics(result: Mapping[str, Any], path: str) -> None:
    """A bar chart of each method's ranking metrics with standard-error bars, written to ``path``.

    Raises
    ------
    ConfigError
        matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'daskrec[eval]'.") from None
    names = ["ndcg_at_k", "precision_at_k", "recall_at_k", "map_at_k"]
    methods = list(result["methods"])
    width = 0.8 / len(methods)
    figure, axes = plt.subplots(figsize=(8, 4))
    for offset, method in enumerate(methods):
        metrics = result["methods"][method]
        positions = np.arange(len(names)) + offset * width
        axes.bar(positions, [metrics[n] for n in names], width, yerr=[metrics[f"{n}_se"] for n in names], label=method)
    axes.set_xticks(np.arange(len(names)) + 0.4 - width / 2, [n.replace("_at_k", f"@{result['k']}") for n in names])
    axes.set_title(f"{result['split']} temporal split, {result['users']} users")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
