"""The products lexicon's data (``products.py``): product names are tokens the index writes whole, the
needs are query terms (no stop words), and a need finds its products."""

from __future__ import annotations

import re

from wemcp.catalog.products import BY_NEED, products_for
from wemcp.catalog.text import STOPWORDS, index_tokens


def test_every_name_and_need_is_a_token_a_query_can_have() -> None:
    assert len(BY_NEED) > 1000 and len({p for ps in BY_NEED.values() for p in ps}) > 300
    for need, products in BY_NEED.items():
        assert need not in STOPWORDS, need
        assert re.fullmatch(r"[a-z0-9]+|[\u3400-\u9fff]{2,4}", need), need
        for p in products:
            assert re.fullmatch(r"[a-z0-9]+", p) and index_tokens(p)[0] == p, (need, p)


def test_a_need_finds_its_products() -> None:
    assert {"xero", "quickbooks"} <= set(products_for("accounting"))
    assert "trello" in products_for("看板") and "sentry" in products_for("监控")
    assert products_for("nosuchneed") == []
