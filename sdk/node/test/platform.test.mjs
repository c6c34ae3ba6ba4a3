// Runs against a live WeMcp platform (the pytest test services/agents/tests/test_api_sdks.py starts one):
// WEMCP_BASE_URL, WEMCP_API_KEY, WEMCP_MODEL, and WEMCP_TIME_REF (the slug of a hosted mcp-server-time;
// default "time").
import assert from "node:assert/strict";
import { test } from "node:test";
import { WeMcp, mcp, mcpCalls } from "../index.js";

const client = new WeMcp({ maxRetries: 0 });
const model = process.env.WEMCP_MODEL;
const timeRef = process.env.WEMCP_TIME_REF ?? "time";
const question = "TIME: what time is it in Tokyo, judging from New York?";
const answer = /^When it is (\d\d):(\d\d) in New York, it is (\d\d):(\d\d) in Tokyo\.$/;

function checkTokyo(text) {
  const m = answer.exec(text);
  assert.ok(m, text);
  const diff = ((Number(m[3]) * 60 + Number(m[4])) - (Number(m[1]) * 60 + Number(m[2])) + 1440) % 1440;
  assert.ok(diff === 14 * 60 || diff === 13 * 60, `Tokyo is 13 or 14 h ahead of New York: ${text}`);
}

test("lists models", async () => {
  const models = await client.models.list();
  // every model the platform serves (a shared stack may list others too)
  assert.ok(models.data.map((m) => m.id).includes(model), JSON.stringify(models.data));
});

test("answers a time question through two MCP tool rounds", async () => {
  const done = await client.chat.completions.create({
    model, messages: [{ role: "user", content: question }], tools: [mcp(timeRef)],
  });
  checkTokyo(done.choices[0].message.content);
  const calls = mcpCalls(done);
  assert.deepEqual(calls.map((c) => [c.round, c.tool, c.status]),
    [[1, "get_current_time", "ok"], [2, "convert_time", "ok"]]);
});

test("streams", async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: "user", content: question }], tools: [mcp(timeRef)], stream: true,
  });
  let text = "";
  let pieces = 0;
  let last;
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta?.content;
    if (delta) { text += delta; pieces += 1; }
    if (chunk.choices[0]?.finish_reason) last = chunk;
  }
  assert.ok(pieces > 3);
  checkTokyo(text);
  assert.equal(mcpCalls(last).length, 2);
});

test("unknown ref is a 400", async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }], tools: [mcp("nope-nope")] }),
    (err) => err.status === 400 && /nope-nope/.test(err.message),
  );
});

test("agents: create, chat, delete", async () => {
  const agent = await client.agents.create({ name: "Node Agent", model, instructions: "Be kind.",
                                             mcp_servers: [{ ref: timeRef }] });
  const done = await client.agents.chat(agent.id, [{ role: "user", content: question }]);
  checkTokyo(done.choices[0].message.content);
  const listed = await client.agents.list();
  assert.ok(listed.items.some((a) => a.id === agent.id));
  await client.agents.delete(agent.id);
  await assert.rejects(client.agents.get(agent.id), (err) => err.status === 404);
});
