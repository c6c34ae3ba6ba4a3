"""How corpus.jsonl was made (kept for provenance; not run by the tests).

Source: the npm and PyPI registries' own one-line summaries of MCP server packages, as listed in
the workplace's package index (/work/.library/env/packages/{npm,pypi}.tsv, fields name/summary).
Selection: packages whose name or summary mentions MCP, summary of 25-300 characters, duplicate
summaries dropped; a fixed set of topics is taken first (so the labelled queries have targets),
then a seeded random fill up to 130 English (npm) and 130 Chinese (PyPI) descriptions."""

from __future__ import annotations

import csv
import json
import random
import re
import sys

CJK = re.compile(r"[\u4e00-\u9fff]")
TOPICS = [r"weather|天气", r"12306|火车|车票", r"amap|高德|baidu.?map|百度地图", r"github", r"postgres|mysql|sql",
          r"汇率|currency|exchange rate", r"pdf", r"小红书|rednote|xiaohongshu", r"抖音|douyin", r"淘宝|taobao|拼多多",
          r"stock|股票|A股", r"slack", r"notion", r"browser|puppeteer|playwright", r"jira", r"email|gmail|邮件",
          r"kubernetes|k8s", r"translate|翻译", r"memory|记忆", r"figma", r"xmind|思维导图", r"json", r"redis",
          r"filesystem|file system|文件",
          r"calendar|日历|节假日", r"youtube|bilibili", r"wechat|微信", r"arxiv|论文|paper",
          r"image generation|图片生成|绘图|视觉生成", r"speech|语音", r"docker", r"aws", r"shopify", r"twitter|x\.com",
          r"search engine|web search|搜索引擎", r"excel|表格", r"git\b", r"sentry", r"stripe", r"obsidian"]


def rows(path: str, summary_col: int) -> list[tuple[str, str]]:
    out = []
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        for rec in csv.reader(fh, delimiter="\t"):
            if len(rec) <= summary_col:
                continue
            name, summary = rec[0], rec[summary_col].strip()
            if ("mcp" in name.lower() or "mcp" in summary.lower()) and 25 <= len(summary) <= 300:
                out.append((name, summary))
    return out


def main(index_dir: str) -> None:
    rnd = random.Random(20261124)
    npm = [r for r in rows(f"{index_dir}/npm.tsv", 3) if not CJK.search(r[1])]
    pypi_zh = [r for r in rows(f"{index_dir}/pypi.tsv", 4) if CJK.search(r[1])]
    chosen: dict[str, dict[str, str]] = {}
    seen_summaries: set[str] = set()

    def take(pool: list[tuple[str, str]], lang: str, limit: int) -> None:
        for topic in TOPICS:
            hits = [r for r in pool if re.search(topic, f"{r[0]} {r[1]}", re.I)]
            rnd.shuffle(hits)
            for name, summary in hits[:3]:
                add(name, summary, lang, limit)
        rest = pool[:]
        rnd.shuffle(rest)
        for name, summary in rest:
            add(name, summary, lang, limit)

    def add(name: str, summary: str, lang: str, limit: int) -> None:
        key = re.sub(r"\W+", "", summary.lower())
        if sum(1 for d in chosen.values() if d["lang"] == lang) >= limit or key in seen_summaries or name in chosen:
            return
        seen_summaries.add(key)
        chosen[name] = {"package": name, "description": summary, "lang": lang,
                        "registry": "npm" if lang == "en" else "pypi"}

    take(npm, "en", 130)
    take(pypi_zh, "zh", 130)
    with open("corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in chosen.values():
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    print(len(chosen), "documents")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/work/.library/env/packages")
