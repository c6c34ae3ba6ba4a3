"""The glossary's data (``glossary.py``): every word can match a query term, and none is a stop word
(a stop word is never a query term and would only add a term that says nothing)."""

from __future__ import annotations

import re

from wemcp.catalog.glossary import EN_ZH, ZH_EN, translations
from wemcp.catalog.text import STOPWORDS, index_tokens


def test_every_word_is_a_token_the_index_can_hold() -> None:
    assert len(ZH_EN) > 500
    for zh, words in ZH_EN.items():
        assert re.fullmatch(r"[\u3400-\u9fff]{1,8}", zh), zh
        for w in words:
            # one lowercase token that the index writes whole (a hyphenated word would be two; k8s is
            # written whole and in its parts)
            assert re.fullmatch(r"[a-z0-9]+", w) and index_tokens(w)[0] == w, (zh, w)
            assert w not in STOPWORDS, (zh, w)


def test_both_directions() -> None:
    assert "browser" in translations("浏览器") and "浏览器" in translations("browser")
    assert all(zh in ZH_EN and en in ZH_EN[zh] for en, zhs in EN_ZH.items() for zh in zhs)
    assert translations("nosuchword") == []
