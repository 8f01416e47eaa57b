'use strict';
/*
 * plat's Node.js runtime shim: an HTTP/1.1 server that calls the user's handler.
 *
 * Started as `node /opt/plat/shim/plat-shim.cjs` with the function's folder as the
 * working directory. Dependency-free; runs on Node 18 (Debian bookworm) and 20+.
 *
 * Contract (see docs/runtimes.md):
 * - PLAT_HANDLER names the handler file relative to the working directory
 *   (default handler.js; `file.js:name` picks an export). The module exports
 *   `async (event, context) => ...` or `{ handle }`. CommonJS and ES modules work.
 * - The module is loaded before the port is bound; if that fails the error goes
 *   to stderr and the process exits 1, so a broken deploy never becomes ready.
 * - event: body (Buffer), json (parsed lazily; undefined when empty/invalid),
 *   headers (lower-cased names), method, path, query (first values),
 *   searchParams (URLSearchParams: getAll), rawQuery.
 * - Return: string -> text/plain; Buffer/Uint8Array -> application/octet-stream;
 *   undefined/null -> 204; {statusCode, headers, body} -> that response;
 *   anything else -> JSON.
 * - `X-Plat-Probe: 1` is answered 200 {"status":"ready"} without calling the
 *   handler (503 {"status":"stopping"} while draining).
 * - A thrown error or rejected promise -> 500 {"error":"handler_error",...};
 *   the stack goes to stderr only.
 * - Call ids: the X-Call-Id header ([A-Za-z0-9._-]{1,128}, set by plat's gateway)
 *   is context.callId (alias call_id). Lines written to stdout/stderr by the
 *   call (console.log, process.stdout.write, the shim's stack trace), including
 *   by work it started, begin with `[call:<id>] `; plat's log collector strips
 *   the tag and stores it as the line's call id. Other output is untagged.
 * - Trace context: a valid W3C traceparent header (version 00, lower-case hex,
 *   trace and parent ids not all zero; set by plat's gateway) gives
 *   context.traceId (alias trace_id; 32 hex), context.traceparent and
 *   context.tracestate (the headers); all null without one. The call's lines are
 *   then tagged `[call:<id> trace:<trace id>] `.
 * - Secrets: context.secret(name) (text) and context.secretBytes(name) (a Buffer)
 *   read the file `name` in PLAT_SECRETS_DIR (default /var/plat/secrets), where
 *   plat puts each secret plat.yaml lists; a missing one throws a
 *   SecretNotFoundError naming it.
 * - SIGTERM/SIGINT: stop accepting, let in-flight requests finish (up to
 *   PLAT_SHUTDOWN_GRACE seconds, default 5), exit 0.
 * - Express apps (PLAT_ADAPTER=express, or detected: the export is a function
 *   with `handle` and `use`, as `module.exports = app` gives) get Node's own req
 *   and res, unread: req.url is the path below the function's prefix
 *   (/function/<name>, or nothing for <name>.localhost), req.baseUrl and
 *   app.mountpath are that prefix so routers and redirects build public URLs,
 *   and 'trust proxy' is on unless the app set it (the gateway sets X-Forwarded-*).
 *   An error the app leaves unhandled is logged; the instance keeps serving.
 *   PLAT_ADAPTER=plat never treats the export as an Express app.
 * - Pool mode (PLAT_POOL_TOKEN set): a generic, pre-started instance. It listens
 *   at once without a handler, answers probes and 503 to anything else until the
 *   daemon POSTs /.plat/specialize with the token in X-Plat-Pool-Token and a JSON
 *   body {function, version, handler, env}; the daemon has placed the code in the
 *   working directory and the packages under NODE_PATH (read-only mounts) by then.
 *   The shim sets env, loads the handler and serves that function only; the
 *   endpoint is gone from then on. A failed load answers 500 with the error.
 */

const { AsyncLocalStorage } = require('async_hooks');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { pathToFileURL } = require('url');

const PORT = parseInt(process.env.PORT || '8080', 10);
const HOST = process.env.PLAT_HOST || '0.0.0.0';
let SPEC = process.env.PLAT_HANDLER || 'handler.js';
let FUNCTION = process.env.PLAT_FUNCTION || '';
let VERSION = process.env.PLAT_VERSION || '';
// Pool mode: out of the environment, so that the function's code never sees it.
let POOL_TOKEN = process.env.PLAT_POOL_TOKEN || '';
delete process.env.PLAT_POOL_TOKEN;
const SPECIALIZE_PATH = '/.plat/specialize';
const GRACE_MS = parseFloat(process.env.PLAT_SHUTDOWN_GRACE || '5') * 1000;
// Longer than the idle timeout of usual client pools (aiohttp: 15 s), so the client,
// not the shim, closes idle connections and no request races a close.
const KEEPALIVE_MS = parseFloat(process.env.PLAT_KEEPALIVE_TIMEOUT || '75') * 1000;
const HOSTNAME = os.hostname();

let closing = false;
let inFlight = 0;

// --- call ids on log lines ---------------------------------------------------------------

const CALL_ID = /^[A-Za-z0-9._-]{1,128}$/;
// W3C traceparent, version 00 only (https://www.w3.org/TR/trace-context/).
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** The trace id of a valid traceparent header, else null. */
function traceIdOf(value) {
  if (typeof value !== 'string' || value.length !== 55) return null;
  const match = TRACEPARENT.exec(value);
  if (match === null || match[1] === ZERO_TRACE || match[2] === ZERO_SPAN) return null;
  return match[1];
}
// The call whose code is running: { tag, cut }, kept across awaits, timers and callbacks.
const currentCall = new AsyncLocalStorage();
// Output from outside any call: a writer like the calls, without a tag.
const UNTAGGED = { tag: '', cut: [false, false] };
const lineEnders = [];

function endsLine(chunk) {
  const last = chunk.length - 1;
  return typeof chunk === 'string' ? chunk.charCodeAt(last) === 10 : chunk[last] === 10;
}

/*
 * Replace stream.write (console.log and console.error go through it) so that every
 * line written while a call runs starts with the call's tag. The stream remembers
 * whose line is unfinished: when another writer comes, that line is ended first
 * ("cut"), and the cut writer's next text starts a new tagged line (a leading newline,
 * which would have ended the cut line, is dropped). So every line carries the tag of
 * the call that wrote it, even when calls interleave partial lines.
 */
function tagLines(stream, index) {
  const write = stream.write;
  let open = null; // the writer whose line is unfinished; null at the start of a line

  stream.write = function taggedWrite(chunk, encoding, callback) {
    const call = currentCall.getStore();
    if (call === undefined && open === null && !UNTAGGED.cut[index]) {
      // Outside calls: no tagging, only remember whether a line was left unfinished.
      if (chunk && chunk.length && !endsLine(chunk)) open = UNTAGGED;
      return write.call(stream, chunk, encoding, callback);
    }
    let text;
    let textEncoding = 'utf8';
    if (typeof chunk === 'string' && (typeof encoding !== 'string' || /^utf-?8$/i.test(encoding))) {
      text = chunk;
    } else if (typeof chunk === 'string' || chunk instanceof Uint8Array) {
      // Other encodings and binary data: latin1 maps each byte to one character and back.
      const bytes = typeof chunk === 'string'
        ? Buffer.from(chunk, encoding)
        : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      text = bytes.toString('latin1');
      textEncoding = 'latin1';
    } else {
      return write.call(stream, chunk, encoding, callback); // let the stream reject it
    }
    if (typeof encoding === 'function') callback = encoding;
    const writer = call === undefined ? UNTAGGED : call;
    let out = '';
    if (open !== null && open !== writer) {
      out = '\n';
      open.cut[index] = true;
      open = null;
    }
    if (writer.cut[index]) {
      writer.cut[index] = false;
      if (text.charCodeAt(0) === 10) text = text.slice(1);
    }
    if (text.length) {
      const ends = text.charCodeAt(text.length - 1) === 10;
      if (writer.tag) {
        const body = ends ? text.slice(0, -1) : text;
        out += (open === null ? writer.tag : '') + body.replaceAll('\n', `\n${writer.tag}`) + (ends ? '\n' : '');
      } else {
        out += text;
      }
      open = ends ? null : writer;
    }
    return write.call(stream, out, textEncoding, callback);
  };

  // At the end of a call: finish the line it left unfinished.
  lineEnders.push((call) => {
    if (open === call) {
      write.call(stream, '\n');
      open = null;
      call.cut[index] = true;
    }
  });
}

tagLines(process.stdout, 0);
tagLines(process.stderr, 1);

function endCall(call) {
  for (const end of lineEnders) end(call);
}

function logError(message, err) {
  // One write per report so that concurrent reports do not interleave.
  let text = `plat-shim: ${message}\n`;
  if (err !== undefined) {
    text += `${err && err.stack ? err.stack : String(err)}\n`;
  }
  process.stderr.write(text);
}

// --- Express apps -------------------------------------------------------------------------

// Handlers that are Express apps (served with req and res, not event and context).
const expressApps = new WeakSet();
// The request an Express app is serving, for reports of errors it left unhandled.
const expressCall = new AsyncLocalStorage();
let expressGuards = false;

function isExpressApp(fn) {
  return typeof fn === 'function' && typeof fn.handle === 'function' && typeof fn.use === 'function';
}

// The function's key (<name> or <name>.<tenant>); a pool instance learns it at specialisation.
function functionKey() {
  return FUNCTION || process.env.PLAT_FUNCTION || '';
}

/** The function's path prefix: PLAT_PREFIX, else /function/<key>. */
function functionPrefix() {
  if (process.env.PLAT_PREFIX !== undefined) return process.env.PLAT_PREFIX.replace(/\/+$/, '');
  const key = functionKey();
  return key ? `/function/${key}` : '';
}

/** Whether the gateway routed this request by its host (<key>.localhost): no prefix then. */
function hostRouted(headers) {
  const forwarded = headers['x-forwarded-host'];
  const key = functionKey();
  if (typeof forwarded !== 'string' || !key) return false;
  const host = (forwarded.split(':').length === 2 ? forwarded.split(':')[0] : forwarded).toLowerCase();
  if (host === `${key}.localhost`) return true;
  const dashes = key.indexOf('--');
  return dashes > 0 && host === `${key.slice(dashes + 2)}--${key.slice(0, dashes)}.localhost`;
}

function adaptHandler(fn) {
  const kind = process.env.PLAT_ADAPTER || 'auto';
  if (kind !== 'auto' && kind !== 'plat' && kind !== 'express') {
    throw new TypeError(`no handler adapter for "${kind}" in the node runtime (known: express, plat)`);
  }
  if (kind === 'express' || (kind === 'auto' && isExpressApp(fn))) {
    if (typeof fn !== 'function') throw new TypeError('adapter: express needs the app as the export');
    expressApps.add(fn);
    fn.mountpath = functionPrefix() || '/';
    if (typeof fn.get === 'function' && typeof fn.set === 'function' && fn.get('trust proxy') === false) {
      fn.set('trust proxy', true);
    }
    guardExpress();
  }
  return fn;
}

/** Errors an Express app leaves unhandled (a rejected async route in Express 4) are
 *  logged, and the request they belong to answered 500, instead of ending the process. */
function guardExpress() {
  if (expressGuards) return;
  expressGuards = true;
  const report = (what) => (err) => {
    const call = expressCall.getStore();
    const where = call ? ` on ${call.req.method} ${call.req.url}` : '';
    logError(`the Express app left ${what} unhandled${where}`, err);
    if (call && !call.res.headersSent) {
      sendJson(call.req, call.res, 500, { error: 'handler_error', message: 'the function raised an error; see `plat logs`' });
    }
  };
  process.on('unhandledRejection', report('a rejected promise'));
  process.on('uncaughtException', report('an exception'));
}

function serveExpress(app, req, res) {
  const prefix = hostRouted(req.headers) ? '' : functionPrefix();
  req.baseUrl = prefix;
  req.originalUrl = prefix + req.url;
  const header = req.headers['x-call-id'];
  const callId = typeof header === 'string' && CALL_ID.test(header) ? header : '';
  const run = () => expressCall.run({ req, res }, () => {
    try {
      app(req, res);
    } catch (err) {
      logError(`the Express app threw on ${req.method} ${req.url}`, err);
      if (!res.headersSent) sendJson(req, res, 500, { error: 'handler_error', message: 'the function raised an error; see `plat logs`' });
    }
  });
  if (!callId) {
    run();
    return;
  }
  const traceId = traceIdOf(req.headers.traceparent);
  const tag = traceId === null ? `[call:${callId}] ` : `[call:${callId} trace:${traceId}] `;
  const call = { tag, cut: [false, false] };
  res.on('close', () => endCall(call));
  currentCall.run(call, run);
}

async function loadHandler(spec) {
  let file = spec;
  let name = null;
  const colon = spec.lastIndexOf(':');
  if (colon > 0) {
    file = spec.slice(0, colon);
    name = spec.slice(colon + 1);
  }
  const resolved = path.resolve(process.cwd(), file);
  let mod;
  try {
    mod = require(resolved);
  } catch (err) {
    // package.json "type": "module" or a .mjs file: load it as an ES module.
    if (err && err.code === 'ERR_REQUIRE_ESM') {
      mod = await import(pathToFileURL(resolved).href);
    } else {
      throw err;
    }
  }
  const candidates = name
    ? [mod && mod[name], mod && mod.default && mod.default[name]]
    : [mod, mod && mod.handle, mod && mod.default, mod && mod.default && mod.default.handle];
  const fn = candidates.find((c) => typeof c === 'function');
  if (!fn) {
    const wanted = name ? `an export named "${name}"` : 'a function (module.exports = async (event, context) => ...) or a "handle" export';
    throw new TypeError(`${file} does not export ${wanted}`);
  }
  return adaptHandler(fn);
}

function jsonBody(value) {
  const text = JSON.stringify(value);
  if (text === undefined) {
    throw new TypeError(`a ${typeof value} cannot be sent as JSON`);
  }
  return Buffer.from(text, 'utf8');
}

function encodeBody(body) {
  if (body === undefined || body === null) return [Buffer.alloc(0), null];
  if (typeof body === 'string') return [Buffer.from(body, 'utf8'), 'text/plain; charset=utf-8'];
  if (Buffer.isBuffer(body)) return [body, 'application/octet-stream'];
  if (body instanceof Uint8Array) {
    return [Buffer.from(body.buffer, body.byteOffset, body.byteLength), 'application/octet-stream'];
  }
  return [jsonBody(body), 'application/json'];
}

class InvalidResponse extends Error {}

const FORBIDDEN = new Set(['content-length', 'transfer-encoding', 'connection']);

/** [status, headers object, body Buffer] for a handler's return value. */
function renderResult(result) {
  if (result !== null && typeof result === 'object' && !Buffer.isBuffer(result) &&
      !(result instanceof Uint8Array) && !Array.isArray(result) && 'statusCode' in result) {
    let status = result.statusCode;
    if (typeof status === 'string' && /^\d+$/.test(status)) status = parseInt(status, 10);
    if (!Number.isInteger(status) || status < 100 || status > 599) {
      throw new InvalidResponse(`statusCode must be an integer from 100 to 599, not ${JSON.stringify(status)}`);
    }
    const headers = {};
    let hasType = false;
    for (const [name, value] of Object.entries(result.headers || {})) {
      if (FORBIDDEN.has(name.toLowerCase())) continue;
      headers[name] = Array.isArray(value) ? value.map(String) : String(value);
      if (name.toLowerCase() === 'content-type') hasType = true;
    }
    let encoded;
    try {
      encoded = encodeBody(result.body);
    } catch (err) {
      throw new InvalidResponse(`a body that cannot be sent (${err.message})`);
    }
    const [body, type] = encoded;
    if (type && body.length && !hasType) headers['Content-Type'] = type;
    return [status, headers, body];
  }
  if (result === undefined || result === null) return [204, {}, Buffer.alloc(0)];
  let encoded;
  try {
    encoded = encodeBody(result);
  } catch (err) {
    throw new InvalidResponse(`a value that cannot be sent (${err.message})`);
  }
  return [200, { 'Content-Type': encoded[1] }, encoded[0]];
}

function makeEvent(req, body) {
  const url = new URL(req.url, 'http://localhost');
  const query = {};
  for (const [key, value] of url.searchParams) {
    if (!(key in query)) query[key] = value;
  }
  let parsed;
  let parsedDone = false;
  let pathname = url.pathname;
  try {
    pathname = decodeURIComponent(url.pathname);
  } catch (err) {
    // malformed percent-encoding: keep the raw path
  }
  return {
    body,
    headers: req.headers,
    method: req.method,
    path: pathname,
    query,
    searchParams: url.searchParams,
    rawQuery: url.search.slice(1),
    get json() {
      if (!parsedDone) {
        parsedDone = true;
        try {
          parsed = body.length ? JSON.parse(body.toString('utf8')) : undefined;
        } catch (err) {
          parsed = undefined;
        }
      }
      return parsed;
    },
  };
}

class SecretNotFoundError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SecretNotFoundError';
  }
}

/** The bytes of the function's secret `name`: a file, read on each call, never kept. */
function secretBytes(name) {
  if (typeof name !== 'string' || !name || name === '.' || name === '..' || /[/\0]/.test(name)) {
    throw new TypeError(`${JSON.stringify(name)} is not a secret name (a name such as db-password)`);
  }
  const file = path.join(process.env.PLAT_SECRETS_DIR || '/var/plat/secrets', name);
  try {
    return fs.readFileSync(file);
  } catch (err) {
    if (err.code !== 'ENOENT' && err.code !== 'ENOTDIR') throw err;
    throw new SecretNotFoundError(
      `secret "${name}" is not available to this function (${file} does not exist); ` +
        `list it under \`secrets:\` in plat.yaml and set it with \`plat secret set ${name}\``,
    );
  }
}

function secret(name) {
  return secretBytes(name).toString('utf8');
}

function send(req, res, status, headers, body) {
  if (closing) headers.Connection = 'close';
  if (status !== 204 && status !== 304 && status >= 200) {
    headers['Content-Length'] = body.length;
  }
  // The reason phrase is passed explicitly: a failed writeHead leaves the old one behind.
  res.writeHead(status, http.STATUS_CODES[status] || 'Unknown', headers);
  res.end(req.method === 'HEAD' ? undefined : body);
}

function sendJson(req, res, status, payload) {
  send(req, res, status, { 'Content-Type': 'application/json' }, jsonBody(payload));
}

/** Call the handler for one request and send its outcome. */
async function respond(handler, req, res, body, callId, traceId) {
  const event = makeEvent(req, body);
  const context = {
    function: FUNCTION,
    version: VERSION,
    hostname: HOSTNAME,
    requestId: req.headers['x-request-id'] || callId,
    callId,
    call_id: callId,
    traceId,
    trace_id: traceId,
    traceparent: traceId === null ? null : req.headers.traceparent,
    tracestate: traceId === null ? null : (req.headers.tracestate ?? null),
    secret,
    secretBytes,
  };
  let result;
  try {
    result = await handler(event, context);
  } catch (err) {
    const type = (err && err.constructor && err.constructor.name) || typeof err;
    logError(`the handler threw ${type} on ${req.method} ${event.path}`, err);
    sendJson(req, res, 500, {
      error: 'handler_error',
      message: `the function raised ${type}; see \`plat logs\``,
    });
    return;
  }
  try {
    const [status, headers, out] = renderResult(result);
    send(req, res, status, headers, out);
  } catch (err) {
    const message = err instanceof InvalidResponse ? err.message : `an invalid response (${err.message})`;
    logError(`invalid return value on ${req.method} ${event.path}: ${message}`);
    if (!res.headersSent) {
      sendJson(req, res, 500, { error: 'invalid_response', message: `the function returned ${message}` });
    } else {
      res.destroy();
    }
  }
}

function servingLine() {
  return `plat-shim: node ${process.version} serving ${FUNCTION || 'function'} (${SPEC}) on http://${HOST}:${PORT}\n`;
}

/** Pool mode: become the function the daemon names; resolves to [status, JSON answer]. */
async function specialize(body) {
  let payload;
  try {
    payload = JSON.parse(body.toString('utf8'));
    if (!payload || typeof payload.function !== 'string' || typeof payload.version !== 'string') {
      throw new TypeError('function and version are required');
    }
  } catch (err) {
    return [400, { error: 'bad_request', message: `invalid specialisation: ${err.message}` }];
  }
  if (typeof payload.app === 'string' && payload.app) {
    // The process backend names the folder (its node_modules is a sibling); containers mount it.
    try {
      process.chdir(payload.app);
    } catch (err) {
      return [400, { error: 'bad_request', message: `cannot use ${payload.app}: ${err.message}` }];
    }
  }
  const env = payload.env && typeof payload.env === 'object' ? payload.env : {};
  for (const [key, value] of Object.entries(env)) process.env[key] = String(value);
  const spec = typeof payload.handler === 'string' && payload.handler ? payload.handler : 'handler.js';
  Object.assign(process.env, { PLAT_FUNCTION: payload.function, PLAT_VERSION: payload.version, PLAT_HANDLER: spec });
  let handler;
  try {
    handler = await loadHandler(spec);
  } catch (err) {
    const message = `cannot load the handler ${JSON.stringify(spec)} from ${process.cwd()}; the function will not start`;
    logError(message, err);
    return [500, { error: 'handler_failed', message: `${message} (${err && err.message})` }];
  }
  FUNCTION = payload.function;
  VERSION = payload.version;
  SPEC = spec;
  POOL_TOKEN = '';
  process.stdout.write(servingLine());
  return [200, { status: 'ready', handler }];
}

function serve(initial) {
  let handler = initial;
  const server = http.createServer((req, res) => {
    inFlight += 1;
    res.on('close', () => { inFlight -= 1; });
    if (handler !== null && expressApps.has(handler) && req.headers['x-plat-probe'] !== '1') {
      serveExpress(handler, req, res); // the app reads the body itself
      return;
    }
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('error', () => {}); // the client went away; nobody is left to answer
    req.on('end', () => {
      const body = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
      if (req.headers['x-plat-probe'] === '1') {
        sendJson(req, res, closing ? 503 : 200, { status: closing ? 'stopping' : 'ready' });
        return;
      }
      if (handler === null) {
        if (req.method === 'POST' && req.url === SPECIALIZE_PATH && POOL_TOKEN
            && req.headers['x-plat-pool-token'] === POOL_TOKEN) {
          specialize(body).then(([status, answer]) => {
            if (answer.handler) {
              handler = answer.handler;
              sendJson(req, res, status, { status: answer.status });
            } else {
              sendJson(req, res, status, answer);
            }
          });
        } else {
          sendJson(req, res, 503, {
            error: 'not_specialized',
            message: 'this is a pre-started pool instance that serves no function yet',
          });
        }
        return;
      }
      const header = req.headers['x-call-id'];
      const callId = typeof header === 'string' && CALL_ID.test(header) ? header : '';
      const traceId = traceIdOf(req.headers.traceparent);
      if (!callId) {
        respond(handler, req, res, body, callId, traceId);
        return;
      }
      const tag = traceId === null ? `[call:${callId}] ` : `[call:${callId} trace:${traceId}] `;
      const call = { tag, cut: [false, false] };
      currentCall.run(call, () => {
        respond(handler, req, res, body, callId, traceId).finally(() => endCall(call));
      });
    });
  });
  server.keepAliveTimeout = KEEPALIVE_MS;
  // Node requires headersTimeout > keepAliveTimeout, or idle sockets are cut early.
  server.headersTimeout = KEEPALIVE_MS + 1000;

  server.on('error', (err) => {
    logError(`cannot listen on ${HOST}:${PORT}: ${err.message}`);
    process.exit(1);
  });

  const stop = () => {
    if (closing) return;
    closing = true;
    server.close();
    if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
    const deadline = Date.now() + GRACE_MS;
    const check = () => {
      if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
      if (inFlight === 0 || Date.now() >= deadline) {
        if (inFlight) logError(`stopping with ${inFlight} request(s) still running`);
        process.exit(0);
      }
      setTimeout(check, 20);
    };
    check();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  server.listen(PORT, HOST, () => {
    if (handler !== null) process.stdout.write(servingLine());
  });
}

if (POOL_TOKEN) {
  serve(null);
} else {
  loadHandler(SPEC).then(serve, (err) => {
    logError(`cannot load the handler ${JSON.stringify(SPEC)} from ${process.cwd()}; the function will not start`, err);
    process.exit(1);
  });
}
