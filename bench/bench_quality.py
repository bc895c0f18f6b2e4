"""Recommendation quality on the real datasets: daskrec's defaults and the tutorial preset, served
by Elasticsearch, against the item-item peers, on one temporal split per dataset.

Usage: ``python bench/bench_quality.py --json bench/results/quality.json`` (needs a node: ``make
es-up``; ml-latest-small ships in ``tests/data``, the others are read from ``$DASKREC_DATA``,
default ``../shared/data``). Prints a Markdown table (the README's) and exits
non-zero if the defaults miss the best item-item peer on any dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from daskrec import BuildConfig, EsSettings
from daskrec.config import TUTORIAL
from daskrec.evaluate import evaluate

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent / "tests" / "data"
DATA = Path(os.environ.get("DASKREC_DATA") or HERE.parents[1] / "shared" / "data")
DATASETS = ("ml-100k", "ml-latest-small", "lastfm-hetrec2011")
PEERS = ("jaccard", "implicit_cosine", "implicit_tfidf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--es-url", default="http://127.0.0.1:9200")
    parser.add_argument("--split", choices=["per-user", "global"], default="per-user")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    es = EsSettings(url=args.es_url)
    results: dict[str, Any] = {"split": args.split, "k": args.k, "datasets": {}}
    misses = []
    rows = []
    for name in DATASETS:
        events = [str((SHIPPED if (SHIPPED / name).is_dir() else DATA) / name / "events.csv")]
        default = evaluate(events, BuildConfig(), split=args.split, k=args.k, es=es)
        tutorial = evaluate(
            events, TUTORIAL.build, split=args.split, k=args.k, layout=TUTORIAL.layout, es=es, baselines=False
        )
        methods = {"daskrec": default["methods"]["daskrec"], "tutorial": tutorial["methods"]["daskrec"]}
        methods.update({m: v for m, v in default["methods"].items() if m != "daskrec"})
        results["datasets"][name] = {"users": default["users"], "items": default["items"], "methods": methods}
        best_peer = max(PEERS, key=lambda m: methods[m]["ndcg_at_k"] if m in methods else -1.0)
        if methods["daskrec"]["ndcg_at_k"] < methods[best_peer]["ndcg_at_k"]:
            misses.append(name)
        cells = [f"{methods[m]['ndcg_at_k']:.4f}" if m in methods else "n/a" for m in ("daskrec", "tutorial", *PEERS, "popularity")]
        rows.append(f"| {name} | {default['users']} | " + " | ".join(cells) + f" | {methods['daskrec']['ndcg_at_k_se']:.4f} |")
    header = "| dataset | users | daskrec default | tutorial preset | jaccard (SAR) | implicit cosine | implicit TF-IDF | popularity | ± SE (default) |"
    print("\n".join([header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if misses:
        sys.exit(f"the defaults miss the best item-item peer on {misses}")


if __name__ == "__main__":
    main()
