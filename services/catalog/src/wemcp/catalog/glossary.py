"""A small Chinese-English glossary of the words people use to look for tools, for the full-text
retriever's query expansion: a Chinese query also looks for the English words (浏览器 → browser) and
an English query for the Chinese ones, each at a discount of its idf. The embedding model bridges
the languages too, but weakly for short queries; this lets BM25 find a server described only in
the other language. General software and everyday-service vocabulary, and the Latin names of the big companies and
Chinese platforms people look for servers of (小红书 is written xiaohongshu, rednote or xhs in English
summaries), not names of individual products."""

from __future__ import annotations

_PAIRS = """
天气 weather|forecast
预报 forecast
地图 map|maps
导航 navigation|directions
路线 route|directions
路径 route|path
规划 planning|plan
定位 location|geolocation
地理 geocode|geocoding|geo
股票 stock|stocks
行情 quotes|market
股价 stock|quotes
金融 finance|financial
财经 finance
汇率 exchange|currency
货币 currency
加密货币 crypto|cryptocurrency
交易所 exchange
交易 trading|trade
支付 payment|payments
付款 payment
计费 billing
订阅 subscription|billing
发票 invoice
电商 ecommerce|shop|store
网店 shop|store
商品 product|products
订单 order|orders
浏览器 browser
网页 web|webpage|page
网站 website|web
爬虫 crawler|scrape|scraping
抓取 scrape|scraping|crawl|fetch
采集 scrape|collect|crawl
自动化 automation|automate
测试 test|testing|tests
代码 code
源代码 source|code
审查 review
代码审查 review
重构 refactor|transformation
仓库 repository|repo
版本控制 git|version
提交 commit
数据库 database|sql
表结构 schema
查询 query|search|lookup
搜索 search
检索 retrieval|search
联网 web|online
文件 file|files
文件系统 filesystem
读写 read|write
文档 document|documents|docs
表格 spreadsheet|sheets|table|excel
电子表格 spreadsheet|excel
幻灯片 slides
演示 slides|presentation
笔记 notes|note
知识库 knowledge|wiki
记忆 memory
日历 calendar
日程 calendar|schedule
提醒 reminders|reminder
待办 todo|tasks
任务 task|tasks|jobs
队列 queue
定时 cron|schedule
邮件 email|mail
邮箱 email|mail|inbox
短信 sms
电话 phone|telephony|call
消息 message|messages
通知 notification|notifications
推送 push|notification
聊天 chat
翻译 translate|translation
语言 language|languages
语音 speech|voice
转写 transcription|transcribe
字幕 transcript|subtitles|captions
识别 recognition
图片 image|images
图像 image
生成 generate|generation
绘图 drawing|image|diagram
画图 drawing|diagram
流程图 diagram|flowchart
思维导图 mindmap
视频 video|videos
音乐 music
音频 audio
钢琴 piano
吉他 guitar
社交媒体 social|media
论文 paper|papers
学术 academic|scholar
科学 science|scientific
文献 literature|papers
新闻 news
设计 design
设计稿 design|figma
组件 component|components
组件库 components|library
前端 frontend|ui
界面 ui|interface
容器 container|containers
镜像 image|images
集群 cluster
编排 orchestration
部署 deploy|deployment
云 cloud
服务器 server|servers
无服务器 serverless|lambda
函数 function|functions
监控 monitoring|observability
仪表盘 dashboard|dashboards
日志 logs|logging
告警 alerts|alerting
预警 alerts|warning
分析 analytics|analysis
统计 statistics|stats
流量 traffic|analytics
安全 security
漏洞 vulnerability
身份 identity
认证 auth|authentication
验证 verification|validation
实名 identity|kyc
登录 login|auth
密码 password
手机 mobile|phone
设备 device|devices
桌面 desktop
智能体 agent|agents
代理 agent|proxy
多智能体 agents|multi-agent
工作流 workflow|workflows
插件 plugin|plugins
模型 model|models
大模型 llm|model
本地 local
实时 realtime|live
旅行 travel|trip
酒店 hotel|hotels
机票 flight|flights
航班 flight|flights
火车 train
火车票 train|tickets
车票 ticket|tickets
快递 express|parcel|delivery
物流 logistics|shipping
招聘 recruiting|jobs
简历 resume
岗位 jobs|job
职业 career|jobs
医学 medical
医疗 medical|health
健康 health
天文 astronomy
定理 theorem
证明 proof|prover
依赖 dependency|dependencies
版本 version|versions
检查 check|checking
评估 evaluation|evaluate
美国 us|usa
韩国 korean|korea
谷歌 google
苹果 apple
亚马逊 amazon|aws
微软 microsoft
腾讯 tencent
阿里云 aliyun
百度 baidu
小红书 xiaohongshu|rednote|xhs
抖音 douyin
快手 kuaishou
微信 wechat|weixin
企业微信 wecom
微博 weibo
知乎 zhihu
哔哩哔哩 bilibili
头条 toutiao
淘宝 taobao
京东 jingdong
拼多多 pinduoduo
闲鱼 xianyu|goofish
美团 meituan
大众点评 dianping
携程 ctrip
雪球 xueqiu
钉钉 dingtalk
飞书 feishu|lark
高德 amap|gaode
"""


def _build() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    zh_en: dict[str, list[str]] = {}
    en_zh: dict[str, list[str]] = {}
    for line in _PAIRS.strip().splitlines():
        zh, en = line.split()
        words = en.split("|")
        zh_en.setdefault(zh, []).extend(words)
        for w in words:
            en_zh.setdefault(w, []).append(zh)
    return zh_en, en_zh


ZH_EN, EN_ZH = _build()


def translations(term: str) -> list[str]:
    """The other language's words for a query term (empty when the glossary has none)."""
    return ZH_EN.get(term) or EN_ZH.get(term) or []
