import OpenAI from "openai";

export interface McpTool {
  type: "mcp";
  ref: string;
  allowed_tools?: string[];
  server_label?: string;
  headers?: Record<string, string>;
}

export interface McpServerTool {
  type: "mcp";
  server_url: string;
  server_label?: string;
  allowed_tools?: string[];
  headers?: Record<string, string>;
  require_approval?: "never";
}

export interface McpCall {
  round: number;
  server: string;
  ref: string | null;
  tool: string;
  arguments: unknown;
  status: "ok" | "error" | "invalid_arguments" | "not_allowed" | "timeout" | "unavailable";
  latencyMs: number;
  output: string;
}

export function mcp(ref: string, options?: { allowedTools?: string[]; serverLabel?: string;
  headers?: Record<string, string> }): McpTool;
export function mcpServer(serverUrl: string, options?: { serverLabel?: string; allowedTools?: string[];
  headers?: Record<string, string> }): McpServerTool;
export function mcpCalls(completion: unknown): McpCall[];

export interface AgentDefinition {
  name: string;
  model: string;
  description?: string;
  instructions?: string;
  mcp_servers?: Array<{ ref?: string; server_url?: string; server_label?: string; allowed_tools?: string[] }>;
  visibility?: "private" | "public";
  owner_kind?: "user" | "merchant";
  max_tool_rounds?: number;
}

declare class Agents {
  create(definition: AgentDefinition): Promise<Record<string, any>>;
  list(options?: { includePublic?: boolean }): Promise<{ items: any[]; total: number; page: number; page_size: number }>;
  get(id: string): Promise<Record<string, any>>;
  delete(id: string): Promise<null>;
  client(id: string): OpenAI;
  chat(id: string, messages: any[], options?: Record<string, any>): Promise<any>;
}

export class WeMcp extends OpenAI {
  constructor(options?: ConstructorParameters<typeof OpenAI>[0]);
  wemcpURL: string;
  agents: Agents;
}

export default WeMcp;
