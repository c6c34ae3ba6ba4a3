"""Unit tests of wemcp.catalog.text's query side: tsquery_text builds the OR-query the full-text
retriever hands to ``to_tsquery('simple', ...)`` from what a user typed."""

from __future__ import annotations

import re

import pytest

from wemcp.catalog.text import is_prefix_term, query_terms, tsquery_text

# what to_tsquery may receive: terms of [0-9a-z] or CJK, an optional ":*", joined by " | "
TSQUERY = re.compile(r"[0-9a-z\u3400-\u9fff]+(?::\*)?(?: \| [0-9a-z\u3400-\u9fff]+(?::\*)?)*")


def test_ascii_words_of_three_letters_or_more_match_as_prefixes() -> None:
    assert tsquery_text("weather forecast") == "weather:* | forecast:*"
    assert tsquery_text("weath") == "weath:*"
    assert tsquery_text("Go SDK") == "go | sdk:*"  # two letters: exact only


def test_words_are_lower_cased_and_whitespace_does_not_matter() -> None:
    assert tsquery_text("  GitHub \t PRs\n") == "github:* | prs:*"


def test_stop_words_and_single_letters_leave_nothing_to_search() -> None:
    assert tsquery_text("find me a tool") is None
    assert tsquery_text("x y z") is None
    assert tsquery_text("") is None
    assert tsquery_text("   ") is None


def test_compound_words_keep_their_parts_without_stop_words() -> None:
    # mcp-server-amap: mcp and server are stop words; the digit of 3d stays, its letter alone does not
    assert tsquery_text("mcp-server-amap 3d") == "amap:* | 3d | 3"


def test_chinese_is_segmented_with_bigrams_and_never_prefixed() -> None:
    q = tsquery_text("天气查询")
    assert q is not None
    terms = q.split(" | ")
    assert {"天气", "查询", "气查"} <= set(terms)
    assert not any(t.endswith(":*") for t in terms)


@pytest.mark.parametrize("query", [
    "a:* & !b | (c)", "it's :* <-> !weather", "weather' | 'x", "weather)) & !(", "weather:A",
    "weather\\:* | x", "天气 & !查询", "--; drop table servers", "\x00weather\x00",
])
def test_tsquery_syntax_in_the_query_never_reaches_to_tsquery(query: str) -> None:
    q = tsquery_text(query)
    assert q is None or TSQUERY.fullmatch(q), q


def test_operators_are_dropped_and_the_words_kept() -> None:
    assert tsquery_text("it's :* <-> !weather") == "weather:*"
    assert tsquery_text("a:* & !b | (c)") is None


def test_terms_are_deduplicated_in_order_and_capped_at_32() -> None:
    assert tsquery_text("weather Weather WEATHER maps") == "weather:* | maps:*"
    words = [f"word{chr(97 + i)}{chr(97 + j)}" for i in range(8) for j in range(8)]
    q = tsquery_text(" ".join(words))
    assert q is not None
    assert q.split(" | ") == [f"{w}:*" for w in words[:32]]


def test_query_terms_and_prefix_rule_agree_with_the_query() -> None:
    assert query_terms("weather in Paris") == ["weather", "paris"]
    assert is_prefix_term("abc") and not is_prefix_term("ab") and not is_prefix_term("天气预报")
