// A hosted stdio MCP server in Node that uses the network (tests of the egress proxy): its one tool
// fetches a URL with Node's own clients — fetch (undici), https.get, http.get — as npm servers do,
// never told about a proxy; or tries a direct TCP connection. Answers are plain text.
'use strict';
const http = require('http');
const https = require('https');
const net = require('net');
const readline = require('readline');

function viaModule(mod, url) {
  return new Promise((resolve) => {
    mod.get(url, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve(`${res.statusCode} ${body.trim()}`));
    }).on('error', (e) => resolve(`ERROR ${e.code || ''} ${e.message}`));
  });
}

async function run(args) {
  if (args.kind === 'connect') {
    return new Promise((resolve) => {
      const s = net.connect(Number(args.port), args.host);
      s.setTimeout(3000, () => { s.destroy(); resolve('DENIED timeout'); });
      s.on('connect', () => { s.destroy(); resolve('CONNECTED'); });
      s.on('error', (e) => resolve(`DENIED ${e.code} ${e.message}`));
    });
  }
  if (args.lib === 'fetch') {
    try {
      const r = await fetch(args.url);
      return `${r.status} ${(await r.text()).trim()}`;
    } catch (e) {
      return `ERROR ${(e.cause && e.cause.message) || e.message}`;
    }
  }
  return viaModule(args.lib === 'https' ? https : http, args.url);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const msg = JSON.parse(line);
  if (msg.id === undefined) return;
  let result = {};
  if (msg.method === 'initialize') {
    result = { protocolVersion: msg.params.protocolVersion, capabilities: { tools: {} },
               serverInfo: { name: 'egress-client-js', version: '1' } };
  } else if (msg.method === 'tools/list') {
    result = { tools: [{ name: 'net', inputSchema: { type: 'object' } }] };
  } else if (msg.method === 'tools/call') {
    result = { content: [{ type: 'text', text: await run(msg.params.arguments) }] };
  }
  process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result }) + '\n');
});
