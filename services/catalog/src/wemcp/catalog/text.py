"""Text processing for table B: Chinese is segmented with jieba, English is lower-cased and split,
and both go into one ``simple`` tsvector (no stemming dictionary mangles either language)."""

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


def query_terms(query: str) -> list[str]:
    """Query-side terms: the same segmentation, stop words removed, de-duplicated, order kept."""
    seen: dict[str, None] = {}
    for t in tokens(query):
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
    return " | ".join(f"{t}:*" if (len(t) >= 3 and not _CJK.search(t)) else t for t in terms)


def index_text(*parts: str) -> str:
    return " ".join(tokens(" ".join(p for p in parts if p)))


def trigram_text(*parts: str) -> str:
    return " ".join(p.lower() for p in parts if p)[:1000]
