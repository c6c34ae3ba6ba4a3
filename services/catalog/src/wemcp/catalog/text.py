"""Text processing for table B: Chinese is segmented with jieba and also cut into overlapping
character bigrams (jieba misses words it does not know: 汇率查询 finds 查询汇率, 飞牛 finds 飞牛NAS),
English is lower-cased and split, and all go into one ``simple`` tsvector (no stemming dictionary
mangles either language). The full-text retriever scores the query's terms like BM25 (see
``search.py``): each term weighs its inverse document frequency, so a rare word outweighs a common
one."""

from __future__ import annotations

import logging
import re
import threading

import jieba

jieba.setLogLevel(logging.WARNING)
_init_lock = threading.Lock()
_ready = False

_WORD = re.compile(r"[0-9a-z\u3400-\u9fff]+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_SPLIT_ASCII = re.compile(r"[a-z]+|[0-9]+")
_CJK_RUN = re.compile(r"[\u3400-\u9fff]{2,}")

STOPWORDS = frozenset("""
a an and are as at be by for from in into is it of on or the to with via your you that this
me my i we our can will find need want tool tools server servers mcp model context protocol
的 了 和 与 及 或 是 在 把 用 对 等 个 一个 我 我们 你 帮 帮我 给 能 可以 找 一下 吗 呢 什么 哪个 服务 工具
""".split())


def warm_up() -> None:
    """Load jieba's dictionary (~0.7 s) once, before the first request needs it."""
    global _ready
    with _init_lock:
        if not _ready:
            jieba.initialize()
            _ready = True


def tokens(text: str) -> list[str]:
    """Index-side tokens: jieba's search-mode segmentation (words and their sub-words), plus the
    alphabetic and numeric parts of compound ASCII words (``mcp-server-amap`` → mcp, server, amap)."""
    warm_up()
    out: list[str] = []
    lowered = text.lower()
    for piece in jieba.cut_for_search(lowered):
        for w in _WORD.findall(piece):
            out.append(w)
            if not _CJK.search(w):
                parts = _SPLIT_ASCII.findall(w)
                if len(parts) > 1:
                    out.extend(parts)
    return out


def bigrams(text: str) -> list[str]:
    """Overlapping character bigrams of every run of Chinese characters (天气查询 → 天气 气查 查询)."""
    out: list[str] = []
    for run in _CJK_RUN.findall(text.lower()):
        out.extend(run[i:i + 2] for i in range(len(run) - 1))
    return out


def index_tokens(text: str) -> list[str]:
    """What a document's text contributes to the tsvector: :func:`tokens` plus Chinese bigrams."""
    return tokens(text) + bigrams(text)


def query_terms(query: str) -> list[str]:
    """Query-side terms: the same segmentation and bigrams, stop words removed, de-duplicated,
    order kept (words first, so the cap of 32 drops bigrams of very long queries first)."""
    seen: dict[str, None] = {}
    for t in index_tokens(query):
        if t in STOPWORDS or (len(t) == 1 and not _CJK.search(t) and not t.isdigit()):
            continue
        seen.setdefault(t, None)
    return list(seen)[:32]


def tsquery_text(query: str) -> str | None:
    """An OR-query for ``to_tsquery('simple', ...)``; ASCII words of 3+ letters match as prefixes
    (``weath`` finds ``weather``). Tokens contain only [0-9a-z] and CJK, so nothing can inject
    tsquery syntax."""
    terms = query_terms(query)
    if not terms:
        return None
    return " | ".join(f"{t}:*" if is_prefix_term(t) else t for t in terms)


def is_prefix_term(term: str) -> bool:
    """ASCII words of 3+ letters also match as prefixes (``weath`` finds ``weather``)."""
    return len(term) >= 3 and not _CJK.search(term)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_LATIN_WORD = re.compile(r"[a-z]+")


def edits1(word: str) -> set[str]:
    """Every string one edit away from ``word`` (a lower-case Latin word): one letter deleted,
    two neighbours swapped, one letter replaced or one inserted (``wether`` → ``weather``,
    ``dokcer`` → ``docker``). About 54 n + 25 strings, each a dictionary look-up for the caller:
    no index to build or keep."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    out = {a + b[1:] for a, b in splits if b}
    out |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    out |= {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
    out |= {a + c + b for a, b in splits for c in _LETTERS}
    out.discard(word)
    return out


def correctable(term: str) -> bool:
    """Latin words of 4+ letters may be misspellings worth correcting (shorter ones have too many
    neighbours one edit away)."""
    return len(term) >= 4 and _LATIN_WORD.fullmatch(term) is not None


def index_text(*parts: str) -> str:
    return " ".join(index_tokens(" ".join(p for p in parts if p)))


def trigram_text(*parts: str) -> str:
    return " ".join(p.lower() for p in parts if p)[:1000]
