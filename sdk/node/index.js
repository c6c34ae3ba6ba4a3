// WeMcp SDK for Node: a thin layer over the `openai` client.
import OpenAI from "openai";

const rootOf = (baseURL) => {
  const url = (baseURL ?? process.env.WEMCP_BASE_URL ?? "http://127.0.0.1:8000").replace(/\/+$/, "");
  return url.endsWith("/v1") ? url.slice(0, -3) : url;
};

/** An MCP server from the WeMcp catalog, by slug (called through the gateway with your keys). */
export function mcp(ref, { allowedTools, serverLabel, headers } = {}) {
  const tool = { type: "mcp", ref };
  if (allowedTools) tool.allowed_tools = [...allowedTools];
  if (serverLabel) tool.server_label = serverLabel;
  if (headers) tool.headers = { ...headers };
  return tool;
}

/** Any MCP server by URL (OpenAI Responses style), called directly with `headers`. */
export function mcpServer(serverUrl, { serverLabel, allowedTools, headers } = {}) {
  const tool = { type: "mcp", server_url: serverUrl, require_approval: "never" };
  if (serverLabel) tool.server_label = serverLabel;
  if (allowedTools) tool.allowed_tools = [...allowedTools];
  if (headers) tool.headers = { ...headers };
  return tool;
}

/** The MCP calls the platform made while answering (a completion, or the last stream chunk). */
export function mcpCalls(completion) {
  return (completion?.mcp_calls ?? []).map((c) => ({
    round: c.round, server: c.server, ref: c.ref ?? null, tool: c.tool, arguments: c.arguments,
    status: c.status, latencyMs: c.latency_ms, output: c.output ?? "",
  }));
}

class Agents {
  #owner;
  constructor(owner) { this.#owner = owner; }

  async #request(method, path, body) {
    const res = await fetch(`${this.#owner.wemcpURL}/api/v1/agents${path}`, {
      method,
      headers: { authorization: `Bearer ${this.#owner.apiKey}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = new Error(data?.detail ?? `HTTP ${res.status}`);
      err.status = res.status;
      err.body = data;
      throw err;
    }
    return data;
  }

  create(definition) { return this.#request("POST", "", definition); }
  list({ includePublic = false } = {}) { return this.#request("GET", `?include_public=${includePublic}`); }
  get(id) { return this.#request("GET", `/${id}`); }
  delete(id) { return this.#request("DELETE", `/${id}`); }

  /** An OpenAI client whose chat.completions talk to this agent (100 calls per user per day). */
  client(id) {
    return new OpenAI({ apiKey: this.#owner.apiKey, baseURL: `${this.#owner.wemcpURL}/v1/agents/${id}`,
                        maxRetries: this.#owner.maxRetries });
  }

  chat(id, messages, options = {}) {
    return this.client(id).chat.completions.create({ model: "agent", messages, ...options });
  }
}

/** `OpenAI` on a WeMcp platform: `baseURL` is the platform root (the gateway). */
export class WeMcp extends OpenAI {
  constructor({ apiKey, baseURL, ...rest } = {}) {
    const root = rootOf(baseURL);
    super({ apiKey: apiKey ?? process.env.WEMCP_API_KEY, baseURL: `${root}/v1`, ...rest });
    this.wemcpURL = root;
    this.agents = new Agents(this);
  }
}

export default WeMcp;
