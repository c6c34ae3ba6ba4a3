"""Query planning of the full-text retriever, pure functions: corrections of misspelled words, term
groups, the bounded candidate tsqueries and when the trigram retriever runs."""

from __future__ import annotations

from wemcp.catalog.config import Settings
from wemcp.catalog.search import (
    TermStats,
    cached_plan,
    candidate_tsqueries,
    has_unknown_word,
    plan_terms,
    term_groups,
    vector_literal,
)
from wemcp.catalog.text import correctable, edits1


def _stats(df: dict[str, int], n_docs: int) -> TermStats:
    s = TermStats(n_docs=n_docs, df=df, vocab=sorted(w for w in df if w.isascii()))
    s.loaded_at = 0.0
    return s


def test_edits1_covers_each_kind_of_typo() -> None:
    assert {"weather", "wther", "ewther", "wethr"} <= edits1("wether")  # insert, delete, swap, delete
    assert "docker" in edits1("dokcer")  # swapped neighbours
    assert "postgres" in edits1("postgress")
    assert "wether" not in edits1("wether")
    assert "forecast" not in edits1("frcast")  # two edits away
    assert len(edits1("abcd")) <= 54 * 4 + 25


def test_correctable_and_corrections() -> None:
    assert correctable("wether") and not correctable("mcp") and not correctable("天气预报")
    assert not correctable("k8s1")
    stats = _stats({"weather": 40, "whether": 3, "forecast": 9, "docker": 5}, 100)
    assert stats.corrections("wether") == ["weather", "whether"]  # the more frequent first
    assert stats.corrections("weather") == []  # a known word is not corrected
    assert stats.corrections("frcast") == []  # nothing one edit away
    assert stats.corrections("dokcer") == ["docker"]


def test_term_groups_stand_ins_and_bigrams() -> None:
    stats = _stats({"weather": 40, "weathers": 2, "forecast": 9, "天气": 10, "天气预报": 3, "预报": 5}, 100)
    groups = term_groups("weath 天气预报", stats, prefix_weight=0.5, translation_weight=1.0)
    # one group per word: the prefix with its expansions; the Chinese word with its bigrams
    # (jieba's sub-words and the bigrams inside it join it) and their translations
    assert len(groups) == 2
    assert set(groups[0]) == {"weath", "weather", "weathers"}
    assert groups[0]["weather"] == 0.5 * stats.idf("weather")
    assert {"天气预报", "天气", "预报", "weather", "forecast"} <= set(groups[1])
    # a stand-in no document has is left out (it would only cost a term to score); the word itself stays
    assert term_groups("天气预报", _stats({"天气预报": 3}, 100), 0.5, 1.0)[0].keys() >= {"天气预报", "天气", "预报"}
    assert not {"weather", "forecast"} & term_groups("天气预报", _stats({"天气预报": 3}, 100), 0.5, 1.0)[0].keys()
    assert "weather" in term_groups("wether", stats, 0.5, 0.0, correction_weight=0.7)[0]
    assert "weather" not in term_groups("wether", stats, 0.5, 0.0, correction_weight=0.0)[0]


def test_candidate_tsqueries_small_catalog_selects_every_word() -> None:
    stats = _stats({"web": 500, "search": 600, "tavily": 2}, 900)
    groups = [{"tavily": 1.0}, {"web": 1.0}, {"search": 1.0}, {"nosuchword": 1.0}]
    # (a word unseen at the last count of the statistics selects too: it may be in new documents)
    assert candidate_tsqueries(groups, stats, budget=1000) == ("nosuchword | tavily | web | search", "")


def test_candidate_tsqueries_bounds_common_words() -> None:
    stats = _stats({"tavily": 20, "exa": 300, "web": 8000, "websites": 900, "search": 15000, "api": 9000,
                    "ai": 30000}, 100_000)
    # rare words select on their own while their documents add up to the budget (20 + 300)
    rare, common = candidate_tsqueries([{"tavily": 1.0}, {"web": 1.0, "websites": 1.0}, {"exa": 1.0}],
                                       stats, budget=1000)
    assert rare == "tavily | exa"
    assert common == ""  # one common word beside rare ones selects nothing by itself
    # two common words: both
    assert candidate_tsqueries([{"web": 1.0}, {"search": 1.0}], stats, 1000) == ("", "web & search")
    # three or more: all but one, the rarest first; stand-ins OR-ed inside a word
    rare, common = candidate_tsqueries([{"ai": 1.0}, {"search": 1.0}, {"web": 1.0, "websites": 1.0},
                                        {"api": 1.0}], stats, 1000)
    assert rare == ""
    assert common == ("(api & search & ai) | ((web | websites) & search & ai) | ((web | websites) & api & ai)"
                      " | ((web | websites) & api & search)")
    # a single common word is all there is: it selects
    assert candidate_tsqueries([{"ai": 1.0}], stats, 1000) == ("", "ai")
    # a word in no document at the last count selects as a rare one
    assert candidate_tsqueries([{"zzzq": 1.0}, {"ai": 1.0}], stats, 1000) == ("zzzq", "")


def test_plan_terms_and_unknown_words() -> None:
    stats = _stats({"weather": 40, "forecast": 9, "天气": 10, "预报": 5}, 100)
    plan = plan_terms("wether forcast", stats, Settings())
    assert plan is not None
    assert {"weather", "forecast"} <= set(plan.terms)
    # rarest first; each corrected word also brings its glossary translations, as a correct one does
    assert plan.rare == "(forcast | forecast | 天气 | 预报) | (wether | weather | 天气)" and plan.common == ""
    assert plan_terms("the and", stats, Settings()) is None  # stop words only
    unseen = plan_terms("qqqqzz", stats, Settings())
    assert unseen is not None and unseen.rare == "qqqqzz"
    assert not has_unknown_word("weather forecast", stats)
    # a misspelling the full text corrects, or a prefix it expands, needs no trigram look-up
    assert not has_unknown_word("wether", stats) and not has_unknown_word("weath", stats)
    assert has_unknown_word("qqqqzz", stats) and has_unknown_word("weather wthr", stats)  # nothing stands in
    assert has_unknown_word("", stats)


def test_a_correction_brings_its_expansions_and_translations() -> None:
    stats = _stats({"postgres": 3, "postgresql": 12, "xiaohongshu": 5, "小红书": 8}, 100)
    groups = term_groups("postgress xiaohongsu", stats, prefix_weight=0.5, translation_weight=1.0,
                         correction_weight=0.5)
    postgres, xhs = groups
    assert set(postgres) == {"postgress", "postgres", "postgresql"}
    assert postgres["postgresql"] == 0.5 * 0.5 * stats.idf("postgresql")  # both discounts
    assert set(xhs) >= {"xiaohongsu", "xiaohongshu", "小红书"}
    assert xhs["小红书"] == 0.5 * stats.idf("小红书")
    # without corrections, neither comes
    assert set(term_groups("postgress", stats, 0.5, 1.0, correction_weight=0.0)[0]) == {"postgress"}


def test_plans_are_cached_per_statistics_and_settings() -> None:
    stats = _stats({"weather": 40}, 100)
    settings = Settings()
    first = cached_plan("wether", stats, settings)
    assert first[0] is not None and "weather" in first[0].terms and not first[1]  # corrected: no trigram
    assert cached_plan("wether", stats, settings) is first
    uncorrected = cached_plan("wether", stats, settings.model_copy(update={"correction_weight": 0.0}))[0]
    assert uncorrected is not None and uncorrected.terms == ["wether"]
    stats.plans = {}  # what a refresh of the statistics does
    assert cached_plan("wether", stats, settings) is not first
    assert vector_literal((0.5, -1.0, 0.25)) == "[0.5,-1.0,0.25]"


def test_a_need_word_brings_the_products_known_for_it(monkeypatch) -> None:
    from wemcp.catalog import search

    lexicon = {"accounting": ["xero", "quickbooks", "sage"], "记账": ["xero"], "bookkeeping": ["freshbooks"]}
    monkeypatch.setattr(search, "products_for", lambda w: lexicon.get(w, []))
    monkeypatch.setattr(search, "translations", lambda w: {"记账": ["bookkeeping"]}.get(w, []))
    stats = _stats({"accounting": 5, "xero": 1, "quickbooks": 3, "freshbooks": 2, "invoices": 9}, 100)
    group = term_groups("accounting", stats, 0.5, 1.0, product_weight=0.5)[0]
    # the products some document mentions, the most mentioned first, at the discount times their idf;
    # sage is in no document and brings nothing
    assert list(group) == ["accounting", "quickbooks", "xero"]
    assert group["xero"] == 0.5 * stats.idf("xero")
    assert set(term_groups("accounting", stats, 0.5, 1.0, product_weight=0.0)[0]) == {"accounting"}
    # a Chinese need word: its own products, and (at the translation's discount) its translation's
    zh = term_groups("记账", stats, 0.5, 0.8, product_weight=0.5)[0]
    assert zh["xero"] == 0.5 * stats.idf("xero") and zh["freshbooks"] == 0.5 * 0.8 * stats.idf("freshbooks")
    assert set(zh) == {"记账", "xero", "freshbooks"}  # no document says bookkeeping: it is left out
    # at most MAX_PRODUCTS, whatever the lexicon lists
    many = {f"p{i}": 1 for i in range(20)}
    monkeypatch.setattr(search, "products_for", lambda w: list(many) if w == "crm" else [])
    assert len(term_groups("crm", _stats(many, 100), 0.5, 1.0, product_weight=0.5)[0]) == 1 + search.MAX_PRODUCTS
