// Loaded into every Node process of a hosted server with network (NODE_OPTIONS=--require ...): Node
// before 22.21/24 ignores HTTP(S)_PROXY, in fetch (undici) and in the http/https modules alike, and
// inside the sandbox the platform's egress proxy is the only reachable address. Every outgoing
// connection of fetch and of http/https's default agents is made as a CONNECT tunnel through the
// proxy (TLS runs inside the tunnel, end to end with the origin). Clients that take an explicit
// agent or dispatcher of their own (proxy-aware ones read HTTPS_PROXY themselves) are left alone.
'use strict';
const net = require('net');
const tls = require('tls');
const http = require('http');
const https = require('https');

const proxyUrl = process.env.HTTPS_PROXY || process.env.HTTP_PROXY;
if (proxyUrl) {
  const proxy = new URL(proxyUrl);
  const proxyPort = Number(proxy.port) || 80;

  function tunnel(host, port, callback) {
    let done = false;
    const finish = (err, sock) => { if (!done) { done = true; callback(err, sock); } };
    const sock = net.connect(proxyPort, proxy.hostname);
    let buf = Buffer.alloc(0);
    const onData = (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > 65536) { sock.destroy(); finish(new Error('egress proxy: oversized answer')); }
        return;
      }
      sock.removeListener('data', onData);
      sock.removeListener('error', onError);
      const head = buf.subarray(0, end).toString('latin1');
      const status = Number(head.split(' ')[1]);
      if (status !== 200) {
        sock.destroy();
        const err = new Error(`egress proxy refused ${host}:${port}: ${buf.subarray(end + 4).toString().trim() || head}`);
        err.code = 'EEGRESSREFUSED';
        finish(err);
        return;
      }
      const rest = buf.subarray(end + 4);
      if (rest.length) sock.unshift(rest);
      finish(null, sock);
    };
    const onError = (err) => finish(err);
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('connect', () => {
      const target = host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
      sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    });
  }

  function secure(sock, opts) {
    const servername = opts.servername || (net.isIP(opts.host || opts.hostname) ? undefined : (opts.host || opts.hostname));
    // with a socket given, host only names the peer for the certificate check
    return tls.connect({ ...opts, socket: sock, servername, host: opts.host || opts.hostname, port: undefined,
                         path: undefined });
  }

  // http/https default agents: createConnection may answer through its callback
  class TunnelHttpAgent extends http.Agent {
    createConnection(opts, callback) {
      tunnel(opts.host || opts.hostname || 'localhost', opts.port || 80, callback);
    }
  }
  class TunnelHttpsAgent extends https.Agent {
    createConnection(opts, callback) {
      tunnel(opts.host || opts.hostname || 'localhost', opts.port || 443, (err, sock) => {
        if (err) return callback(err);
        callback(null, secure(sock, opts));
      });
    }
  }
  http.globalAgent = new TunnelHttpAgent({ keepAlive: true });
  https.globalAgent = new TunnelHttpsAgent({ keepAlive: true });

  // fetch: the built-in undici's global dispatcher, rebuilt with a connector that tunnels. Its Agent
  // class is the constructor of the dispatcher undici installs when it loads (Node loads it on the
  // first fetch: a data: URL loads it without any connection).
  const key = Symbol.for('undici.globalDispatcher.1');
  if (typeof globalThis.fetch === 'function') {
    if (globalThis[key] === undefined) globalThis.fetch('data:,').catch(() => {});
    const current = globalThis[key];
    const Agent = current && current.constructor;
    if (Agent) {
      const connect = (opts, callback) => {
        const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80);
        tunnel(opts.hostname, port, (err, sock) => {
          if (err) return callback(err, null);
          if (opts.protocol !== 'https:') return callback(null, sock);
          const secured = tls.connect({ socket: sock, host: opts.hostname, ALPNProtocols: ['http/1.1'],
                                        servername: opts.servername || (net.isIP(opts.hostname) ? undefined : opts.hostname) });
          secured.once('secureConnect', () => callback(null, secured));
          secured.once('error', (e) => callback(e, null));
        });
      };
      globalThis[key] = new Agent({ connect });  // undici defines it writable, not configurable
    }
  }
}
