// Chinese first (the product's users are), English on request; the choice is kept in localStorage.
const STRINGS = {
  zh: {
    "nav.market": "市场", "nav.guide": "文档", "nav.api": "API", "lang.switch": "English",
    "pitch.title": "发现、托管并调用 MCP 服务器与智能体",
    "pitch.body": "粘贴一份 Claude Desktop 配置、server.json、OpenAPI 文档或源码包，WeMcp 在沙箱中部署它，列出工具，并通过一个网关为每个 MCP 客户端提供服务：免费额度、您自己的密钥、两代协议。",
    "search.label": "搜索 MCP 服务器", "search.placeholder": "例如：地图、天气、github、数据库", "search.go": "搜索",
    "filter.category": "分类", "filter.all": "全部分类", "sort.label": "排序",
    "sort.relevance": "相关度", "sort.newest": "最新", "sort.popular": "最常用", "sort.name": "名称",
    "results.count": "共 {n} 个服务器", "results.none": "没有找到匹配的服务器。",
    "page.prev": "上一页", "page.next": "下一页", "page.of": "第 {p} / {n} 页",
    "feed.title": "今日新服务器", "feed.none": "今天还没有新服务器。",
    "news.title": "公告与动态", "news.none": "暂无动态。",
    "featured.title": "精选", "calls": "{n} 次调用", "tools.n": "{n} 个工具",
    "server.tools": "工具", "server.prompts": "提示词", "server.resources": "资源", "server.connect": "连接",
    "server.inputs": "所需输入", "server.noTools": "此服务器没有列出工具。", "server.schema": "输入参数",
    "server.status": "状态", "server.version": "版本", "server.url": "网关地址", "server.back": "返回市场",
    "server.local": "此服务器在您自己的电脑上运行；以下配置可直接粘贴到客户端。",
    "server.keyNote": "将 {v} 换成您的 WeMcp API 密钥（在“我的账户”中创建）。",
    "server.notFound": "没有这个服务器。", "secret": "密钥", "required": "必填", "optional": "可选",
    "copy": "复制", "copied": "已复制",
    "guide.title": "文档", "guide.contents": "目录", "error": "出错了：{m}", "loading": "加载中…",
    "nav.signin": "登录", "nav.signout": "退出", "nav.account": "我的账户",
    "signin.title": "登录 WeMcp", "signin.with": "使用 {p} 登录", "signin.none": "此平台尚未配置任何登录方式（GitHub、Gitee、Google）。",
    "signin.dev": "开发环境：运行 make admin，打开它打印的一次性登录链接（10 分钟内有效，只能使用一次）。",
    "account.signedOut": "您尚未登录。",
    "role.user": "用户", "role.merchant": "商家", "role.admin": "管理员", "role.superadmin": "超级管理员",
    "keys.title": "平台 API 密钥", "keys.about": "MCP 客户端和 SDK 用它调用服务器：Authorization: Bearer <密钥>。密钥只在创建时显示一次。",
    "keys.create": "创建新密钥", "keys.name": "名称", "keys.servers": "仅限这些服务器（可选，用逗号分隔）",
    "keys.serversHint": "留空表示所有服务器", "keys.createButton": "创建", "keys.once": "请立即复制这个密钥，它不会再次显示：",
    "keys.prefix": "前缀", "keys.created": "创建于", "keys.all": "所有服务器", "keys.revoke": "吊销", "keys.none": "还没有密钥。",
    "nav.admin": "管理",
    "admin.title": "管理", "admin.only": "只有管理员可以打开这个页面。", "admin.review": "审核队列", "admin.queueEmpty": "没有等待审核的提交。",
    "admin.requested": "提交于 {at}", "admin.spec": "规格、包与输入", "admin.reason": "理由（拒绝时必填，提交者可见）",
    "admin.approve": "批准", "admin.reject": "拒绝", "admin.approved": "{s} 已批准，开始部署。", "admin.rejected": "{s} 已拒绝。",
    "admin.announcements": "公告", "admin.titleZh": "标题（中文）", "admin.titleEn": "标题（英文）", "admin.bodyZh": "正文（中文）", "admin.bodyEn": "正文（英文）",
    "admin.pinned": "置顶", "admin.publish": "发布公告", "admin.published": "公告已发布。", "admin.delete": "删除",
    "nav.publish": "发布",
    "publish.title": "发布 MCP 服务器", "publish.about": "粘贴 Claude Desktop 的 mcpServers 配置、官方注册表的 server.json 或 OpenAPI 文档；未固定版本的 npx / uvx 包会解析为最新版本。",
    "publish.paste": "配置（JSON）", "publish.notJson": "不是有效的 JSON：{m}", "publish.unknown": "认不出这份文档：需要 mcpServers、server.json 或 OpenAPI。",
    "publish.detected": "检测到", "publish.setting": "设置", "publish.noInputs": "不需要任何输入。", "publish.submit": "提交",
    "publish.orArchive": "或者上传源码包", "publish.manifest": "清单（JSON：name、version、runtime、entrypoint）", "publish.archive": "源码包（.tar.gz 或 .zip）", "publish.upload": "上传",
    "publish.review": "{s} 已提交，正在等待管理员审核；批准后自动部署。", "publish.progress": "部署 {s}",
    "publish.done.deployed": "部署成功。", "publish.done.failed": "部署失败：{r}", "publish.done.disabled": "已停用。", "publish.done.superseded": "有更新的提交取代了这次部署。",
    "publish.open": "打开服务器页面", "publish.mine": "我的服务器", "publish.name": "名称", "publish.watch": "查看进度", "publish.none": "还没有发布过服务器。",
    "status.draft": "草稿", "status.pending_review": "等待审核", "status.rejected": "已拒绝", "status.submitted": "已提交", "status.deploying": "部署中",
    "status.published": "已发布", "status.failed": "失败", "status.disabled": "已停用",
    "try.title": "试用", "try.call": "调用", "try.badJson": "参数不是有效的 JSON：{m}",
    "try.done": "调用成功（{k}）", "try.toolError": "工具返回了错误（{k}）",
    "try.key.system": "平台密钥，计入每日免费额度", "try.key.own": "您自己的密钥，不计额度", "try.key.none": "无需密钥，计入每日免费额度",
    "foot": "WeMcp — MCP 服务器与智能体的市场与网关",
  },
  en: {
    "nav.market": "Marketplace", "nav.guide": "Docs", "nav.api": "API", "lang.switch": "中文",
    "pitch.title": "Find, host and call MCP servers and agents",
    "pitch.body": "Paste a Claude Desktop config, a server.json, an OpenAPI document or a source archive: WeMcp deploys it in a sandbox, lists its tools and serves it to every MCP client through one gateway — free quotas, your own keys, both protocol eras.",
    "search.label": "Search MCP servers", "search.placeholder": "e.g. maps, weather, github, database", "search.go": "Search",
    "filter.category": "Category", "filter.all": "All categories", "sort.label": "Sort",
    "sort.relevance": "Relevance", "sort.newest": "Newest", "sort.popular": "Most used", "sort.name": "Name",
    "results.count": "{n} servers", "results.none": "No server matches.",
    "page.prev": "Previous", "page.next": "Next", "page.of": "Page {p} of {n}",
    "feed.title": "New today", "feed.none": "No new servers today yet.",
    "news.title": "Announcements and news", "news.none": "No news yet.",
    "featured.title": "Featured", "calls": "{n} calls", "tools.n": "{n} tools",
    "server.tools": "Tools", "server.prompts": "Prompts", "server.resources": "Resources", "server.connect": "Connect",
    "server.inputs": "Inputs it needs", "server.noTools": "This server lists no tools.", "server.schema": "Input schema",
    "server.status": "Status", "server.version": "Version", "server.url": "Gateway URL", "server.back": "Back to the marketplace",
    "server.local": "This server runs on your own machine; paste the config below into your client.",
    "server.keyNote": "Replace {v} with your WeMcp API key (create one under My account).",
    "server.notFound": "No such server.", "secret": "secret", "required": "required", "optional": "optional",
    "copy": "Copy", "copied": "Copied",
    "guide.title": "Docs", "guide.contents": "Contents", "error": "Something went wrong: {m}", "loading": "Loading…",
    "nav.signin": "Sign in", "nav.signout": "Sign out", "nav.account": "My account",
    "signin.title": "Sign in to WeMcp", "signin.with": "Sign in with {p}", "signin.none": "No sign-in provider (GitHub, Gitee, Google) is configured on this platform.",
    "signin.dev": "Development stack: run make admin and open the one-time sign-in link it prints (valid 10 minutes, once).",
    "account.signedOut": "You are not signed in.",
    "role.user": "user", "role.merchant": "merchant", "role.admin": "admin", "role.superadmin": "superadmin",
    "keys.title": "Platform API keys", "keys.about": "MCP clients and the SDKs call servers with one: Authorization: Bearer <key>. A key is shown once, when it is created.",
    "keys.create": "Create a key", "keys.name": "Name", "keys.servers": "Only these servers (optional, comma-separated)",
    "keys.serversHint": "empty: every server", "keys.createButton": "Create", "keys.once": "Copy this key now; it is not shown again:",
    "keys.prefix": "Prefix", "keys.created": "Created", "keys.all": "every server", "keys.revoke": "Revoke", "keys.none": "No keys yet.",
    "nav.admin": "Admin",
    "admin.title": "Administration", "admin.only": "Only administrators can open this page.", "admin.review": "Review queue", "admin.queueEmpty": "Nothing waits for review.",
    "admin.requested": "submitted {at}", "admin.spec": "Spec, packages and inputs", "admin.reason": "Reason (required to reject; the submitter sees it)",
    "admin.approve": "Approve", "admin.reject": "Reject", "admin.approved": "{s} approved: it deploys now.", "admin.rejected": "{s} rejected.",
    "admin.announcements": "Announcements", "admin.titleZh": "Title (Chinese)", "admin.titleEn": "Title (English)", "admin.bodyZh": "Text (Chinese)", "admin.bodyEn": "Text (English)",
    "admin.pinned": "Pinned", "admin.publish": "Publish the announcement", "admin.published": "The announcement is published.", "admin.delete": "Delete",
    "nav.publish": "Publish",
    "publish.title": "Publish an MCP server", "publish.about": "Paste a Claude Desktop mcpServers config, an official-registry server.json or an OpenAPI document; unpinned npx / uvx packages resolve to their latest release.",
    "publish.paste": "Config (JSON)", "publish.notJson": "not valid JSON: {m}", "publish.unknown": "Not a document this page knows: mcpServers, server.json or OpenAPI.",
    "publish.detected": "Detected", "publish.setting": "setting", "publish.noInputs": "It needs no inputs.", "publish.submit": "Submit",
    "publish.orArchive": "Or upload a source archive", "publish.manifest": "Manifest (JSON: name, version, runtime, entrypoint)", "publish.archive": "Archive (.tar.gz or .zip)", "publish.upload": "Upload",
    "publish.review": "{s} was submitted and waits for an admin's review; it deploys once approved.", "publish.progress": "Deploying {s}",
    "publish.done.deployed": "Deployed.", "publish.done.failed": "The deployment failed: {r}", "publish.done.disabled": "Disabled.", "publish.done.superseded": "A newer submission replaced this deployment.",
    "publish.open": "Open the server's page", "publish.mine": "My servers", "publish.name": "Name", "publish.watch": "Watch", "publish.none": "You have not published a server yet.",
    "status.draft": "draft", "status.pending_review": "waiting for review", "status.rejected": "rejected", "status.submitted": "submitted", "status.deploying": "deploying",
    "status.published": "published", "status.failed": "failed", "status.disabled": "disabled",
    "try.title": "Try it", "try.call": "Call", "try.badJson": "an argument is not valid JSON: {m}",
    "try.done": "Called ({k})", "try.toolError": "The tool answered with an error ({k})",
    "try.key.system": "the platform's key, counted in the free daily quota", "try.key.own": "your own key, not counted", "try.key.none": "no key needed, counted in the free daily quota",
    "foot": "WeMcp — a marketplace and gateway for MCP servers and agents",
  },
};

let current = localStorage.getItem("wemcp.lang") === "en" ? "en" : "zh";

export function lang() {
  return current;
}

export function setLang(value) {
  current = value === "en" ? "en" : "zh";
  localStorage.setItem("wemcp.lang", current);
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
}

export function t(key, vars = {}) {
  const s = STRINGS[current][key] ?? STRINGS.zh[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

export const KEYS = Object.keys(STRINGS.zh);
export const TABLES = STRINGS;
