"""A straightforward port of ../shared/SPEC.md in plain Python loops: the oracle of the tests.

It shares no code with daskrec except the documented downsampling draws (which define *which*
entries Mahout's random sampling keeps, and so must be the same draws to compare exactly).
"""

from __future__ import annotations

import csv
import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd

from daskrec.cooccurrence import uniform_draws, user_keys


def _xlogx(x: float) -> float:
    return 0.0 if x == 0 else x * math.log(x)


def _entropy(*xs: float) -> float:
    return _xlogx(sum(xs)) - sum(_xlogx(x) for x in xs)


def spec_llr(k11: float, k12: float, k21: float, k22: float) -> float:
    row = _entropy(k11 + k12, k21 + k22)
    col = _entropy(k11 + k21, k12 + k22)
    mat = _entropy(k11, k12, k21, k22)
    return 0.0 if row + col < mat else 2.0 * (row + col - mat)


def spec_root_llr(k11: float, k12: float, k21: float, k22: float) -> float:
    root = math.sqrt(spec_llr(k11, k12, k21, k22))
    left = k11 / (k11 + k12) if k11 + k12 else math.nan
    right = k21 / (k21 + k22) if k21 + k22 else (math.nan if k21 == 0 else math.inf)
    return -root if left < right else root


def _parse_id(text: str, as_int: bool) -> int | str:
    return int(text) if as_int else text


def spec_indicators(
    path: str,
    *,
    event_types: set[str] | None = frozenset({"transaction"}),  # type: ignore[assignment]
    recent: int = 50,
    top_k: int = 50,
    min_llr: float = 5.0,
    llr_table: str = "cooccurrence",
    max_per_user: int | None = None,
    max_per_item: int | None = None,
    seed: int = 0,
) -> dict[object, list[tuple[object, float]]]:
    """Item id -> [(indicator id, score), ...] best first, by the SPEC, in plain loops."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    selected = [(i, r) for i, r in enumerate(rows) if event_types is None or r["event"] in event_types]
    users_int = all(r["visitorid"].lstrip("-").isdigit() for _, r in selected)
    items_int = all(r["itemid"].lstrip("-").isdigit() for _, r in selected)
    history: dict[object, list[tuple[int, int, object]]] = defaultdict(list)
    for position, r in selected:
        user = _parse_id(r["visitorid"], users_int)
        history[user].append((int(r["timestamp"]), position, _parse_id(r["itemid"], items_int)))
    occ: dict[object, Counter[object]] = {}
    for user, events in history.items():
        events.sort(reverse=True)  # latest timestamp first, later position first on ties
        occ[user] = Counter(item for _, _, item in events[:recent])
    items = sorted({i for c in occ.values() for i in c})
    code = {item: n for n, item in enumerate(items)}
    if llr_table == "users":
        occ = {u: Counter({i: 1 for i in c}) for u, c in occ.items()}
        if max_per_user is not None or max_per_item is not None:
            users_per_item = Counter(i for c in occ.values() for i in c)
            keys = dict(zip(occ, user_keys(pd.Series(list(occ)))))
            sampled = {}
            for user, c in occ.items():
                kept = Counter()
                for item in c:
                    rate = 1.0
                    if max_per_user is not None:
                        rate = min(rate, min(max_per_user, len(c)) / len(c))
                    if max_per_item is not None:
                        n = users_per_item[item]
                        rate = min(rate, min(max_per_item, n) / n)
                    draw = uniform_draws(np.array([keys[user]], np.uint64), np.array([code[item]]), seed)[0]
                    if draw <= rate:
                        kept[item] = 1
                sampled[user] = kept
            occ = sampled
    cooc: dict[object, Counter[object]] = defaultdict(Counter)
    for c in occ.values():
        for i, ci in c.items():
            for j, cj in c.items():
                if i != j:
                    cooc[i][j] += ci * cj
    if llr_table == "users":
        row_sum = Counter(i for c in occ.values() for i in c)
        total = len(occ)
    else:
        row_sum = Counter({i: sum(row.values()) for i, row in cooc.items()})
        total = sum(row_sum.values())
    return _indicators(items, code, cooc, row_sum, row_sum, total, top_k, min_llr)


def _indicators(
    items: list[object],
    code: dict[object, int],
    table: dict[object, Counter[object]],
    row_sum: Counter[object],
    column_sum: Counter[object],
    total: int,
    top_k: int,
    min_llr: float,
) -> dict[object, list[tuple[object, float]]]:
    """Score every nonzero of ``table`` with the SPEC's 2x2 table and keep each row's top k."""
    result: dict[object, list[tuple[object, float]]] = {}
    for i in items:
        scored = []
        for j, v in table[i].items():
            k11 = v
            k12 = row_sum[i] - k11
            k21 = column_sum[j] - k11
            k22 = total - k11 - k12 - k21
            scored.append((spec_root_llr(k11, k12, k21, k22), j))
        scored.sort(key=lambda sj: (-sj[0], code[sj[1]]))
        result[i] = [(j, s) for s, j in scored[:top_k] if s >= min_llr and s != 0.0]
    return result


def spec_cross_indicators(
    path: str,
    *,
    primary: str = "transaction",
    cross: str = "view",
    recent: int = 50,
    top_k: int = 50,
    min_llr: float = 5.0,
    llr_table: str = "cooccurrence",
) -> dict[object, list[tuple[object, float]]]:
    """Item id -> [(cross indicator id, score), ...] best first: the SPEC's cross-occurrence
    ``Aᵀ·B`` over the users with primary rows (each keeping its ``recent`` latest rows per type),
    scored with that matrix's own marginals (or, for ``users``, user counts over those users), in
    plain loops. Every item of either type has a row."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    selected = [(i, r) for i, r in enumerate(rows) if r["event"] in (primary, cross)]
    users_int = all(r["visitorid"].lstrip("-").isdigit() for _, r in selected)
    items_int = all(r["itemid"].lstrip("-").isdigit() for _, r in selected)
    history: dict[tuple[object, str], list[tuple[int, int, object]]] = defaultdict(list)
    for position, r in selected:
        user = _parse_id(r["visitorid"], users_int)
        history[user, r["event"]].append((int(r["timestamp"]), position, _parse_id(r["itemid"], items_int)))
    occ: dict[str, dict[object, Counter[object]]] = {primary: {}, cross: {}}
    for (user, event), events in history.items():
        events.sort(reverse=True)
        occ[event][user] = Counter(item for _, _, item in events[:recent])
    items = sorted({i for kind in occ.values() for c in kind.values() for i in c})
    code = {item: n for n, item in enumerate(items)}
    a = occ[primary]
    b = {user: occ[cross].get(user, Counter()) for user in a}  # only users with primary rows
    if llr_table == "users":
        a = {u: Counter({i: 1 for i in c}) for u, c in a.items()}
        b = {u: Counter({i: 1 for i in c}) for u, c in b.items()}
    table: dict[object, Counter[object]] = defaultdict(Counter)
    for user, ca in a.items():
        for i, vi in ca.items():
            for j, vj in b[user].items():
                table[i][j] += vi * vj
    if llr_table == "users":
        row_sum = Counter(i for c in a.values() for i in c)
        column_sum = Counter(j for c in b.values() for j in c)
        total = len(a)
    else:
        row_sum = Counter({i: sum(row.values()) for i, row in table.items()})
        column_sum = Counter()
        for row in table.values():
            column_sum.update(row)
        total = sum(row_sum.values())
    return _indicators(items, code, table, row_sum, column_sum, total, top_k, min_llr)
