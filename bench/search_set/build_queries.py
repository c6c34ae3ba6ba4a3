"""Builds queries.json from queries.src.tsv (the hand-written source) and corpus.jsonl.

Each query keeps its category and the packages relevant to it (most relevant first); within each
category the queries go alternately to the tuning half and the test half (the file's order, which
is topic order, so both halves cover the same kinds of need). Run after editing queries.src.tsv:

    .venv/bin/python bench/search_set/build_queries.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
CATEGORIES = ("en", "zh", "typo", "x_zh_en", "x_en_zh")


def main() -> None:
    docs = [json.loads(line) for line in (HERE / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]
    out, seen, counts = [], set(), dict.fromkeys(CATEGORIES, 0)
    for line in (HERE / "queries.src.tsv").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cat, q, rel = line.split("\t")
        if cat not in CATEGORIES or q in seen:
            raise SystemExit(f"bad or repeated line: {line!r}")
        seen.add(q)
        expected = [docs[int(i)]["package"] for i in rel.split(",")]
        if cat == "x_zh_en" and any(docs[int(i)]["lang"] != "en" for i in rel.split(",")):
            raise SystemExit(f"x_zh_en targets must be English-described: {line!r}")
        if cat == "x_en_zh" and any(docs[int(i)]["lang"] != "zh" for i in rel.split(",")):
            raise SystemExit(f"x_en_zh targets must be Chinese-described: {line!r}")
        half = "tune" if counts[cat] % 2 == 0 else "test"
        counts[cat] += 1
        out.append({"q": q, "cat": cat, "half": half, "expected": expected})
    (HERE / "queries.json").write_text(
        "[\n" + ",\n".join(json.dumps(o, ensure_ascii=False) for o in out) + "\n]\n", encoding="utf-8")
    print(len(out), "queries:", counts)


if __name__ == "__main__":
    main()
