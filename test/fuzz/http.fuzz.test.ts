/**
 * The HTTP API of a real `concord node` (all three example apps) under generated requests:
 * methods, paths (every route, with good and bad ids, and random ones), headers (content types,
 * If-Match, Idempotency-Key, cookies, anything), bodies (JSON that fits, JSON that does not,
 * prototype keys, text, bytes). Every answer must be a documented status, never a 5xx other
 * than 503, an error body must be JSON `{"error": "…"}` without a stack trace — including the
 * answers Node and Fastify give before a route runs — and afterwards the node is still ready
 * and what was written before is intact. Plus the limits: header size, slow clients,
 * connections per address, and the content-type rules.
 */
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliNode, hasStackTrace, request, startCliCluster, stopAll } from '../cli/harness.js';
import { tempSqliteUrl } from '../support/tmp.js';
import { announce, FUZZ_TOTAL_RUNS, params } from './settings.js';

/** Every status the README documents for the API (plus 408/431/429 for the limits). */
const DOCUMENTED = new Set([200, 201, 400, 401, 404, 405, 408, 409, 412, 413, 415, 422, 429, 431, 503]);
const HTTP_RUNS = Math.max(200, Math.round(FUZZ_TOTAL_RUNS / 50));

let nodes: CliNode[] = [];
let node: CliNode;
let port: number;
const agent = new Agent({ keepAlive: true, maxSockets: 4 });

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function send(method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<RawAnswer | null> {
  return new Promise((resolve) => {
    let req: ReturnType<typeof httpRequest>;
    try {
      req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent, timeout: 15_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
        );
        res.on('error', () => resolve(null));
      });
    } catch {
      resolve(null); // the client refused to send it (e.g. a character Node does not put in a path)
      return;
    }
    req.on('error', () => resolve(null));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

function checkAnswer(method: string, answer: RawAnswer, what: string): void {
  expect(DOCUMENTED.has(answer.status), `${what} → ${answer.status} ${answer.text.slice(0, 300)}`).toBe(true);
  expect(answer.status >= 500 && answer.status !== 503, `${what} → ${answer.status}`).toBe(false);
  expect(hasStackTrace(answer.text), `${what}: ${answer.text.slice(0, 500)}`).toBe(false);
  if (answer.status >= 400 && method !== 'HEAD') {
    expect(String(answer.headers['content-type']), what).toMatch(/^application\/json/);
    const parsed = JSON.parse(answer.text) as { error?: unknown };
    expect(typeof parsed.error, `${what}: ${answer.text.slice(0, 300)}`).toBe('string');
  }
}

const ids = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_.:@~-]{1,20}$/),
  fc.constantFrom(
    '',
    'a'.repeat(201),
    'x'.repeat(5000),
    '..',
    '%2e%2e',
    '%00',
    '%E0%A4%A',
    'a%2Fb',
    'é',
    '%F0%9F%98%80',
  ),
  fc.string({ maxLength: 30 }).map((s) => encodeURIComponent(s)),
);
const paths = fc.oneof(
  ids.map((id) => `/entities/${id}`),
  ids.map((id) => `/users/${id}/team`),
  ids.map((id) => `/teams/${id}`),
  fc.constantFrom('/', '/healthz', '/readyz', '/cluster', '/metrics', '/signup', '/login', '/logout', '/me'),
  fc.constantFrom('/entities', '/entities/', '/users//team', '//', '/../etc/passwd', '/metrics/x', '/_test/faults'),
  fc.webPath(),
);
const pathWithQuery = fc
  .tuple(paths, fc.option(fc.webQueryParameters(), { nil: undefined }))
  .map(([p, q]) => (q === undefined ? p : `${p}?${q}`));
const methods = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('GET', 'PUT', 'POST', 'DELETE', 'HEAD') },
  { weight: 1, arbitrary: fc.constantFrom('PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'FOO') },
);
const printable = fc.string({
  unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  maxLength: 60,
});
const contentTypes = fc.constantFrom(
  'application/json',
  'application/json; charset=utf-8',
  'APPLICATION/JSON',
  'text/plain',
  'text/plain; charset=utf-8',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/merge-patch+json',
  'application/octet-stream',
  'json',
  '',
);
const headerSets = fc.record(
  {
    'content-type': fc.oneof(contentTypes, printable),
    'if-match': fc.oneof(fc.constantFrom('"0"', '"1"', 'W/"2"', '*', '"a"', '"1", "2"'), printable),
    'idempotency-key': fc.oneof(fc.constantFrom('"k1"', 'k2', '""', '"unterminated'), printable),
    cookie: fc.oneof(
      printable.map((v) => `concord_session=${v}`),
      printable,
    ),
    accept: fc.constantFrom('application/json', 'text/html', '*/*'),
    'x-anything': printable,
  },
  { requiredKeys: [] },
);
const jsonBodies = fc.oneof(
  fc.record(
    {
      state: fc.oneof(fc.constantFrom('initialized', 'working', 'finalized'), fc.jsonValue()),
      teamId: fc.oneof(fc.stringMatching(/^[a-z]{1,8}$/), fc.jsonValue()),
      username: fc.oneof(fc.stringMatching(/^fz[a-z0-9]{1,10}$/), fc.jsonValue()),
      password: fc.oneof(fc.constantFrom('short', 'long enough password'), fc.jsonValue()),
    },
    { requiredKeys: [] },
  ),
  fc.jsonValue({ maxDepth: 3 }),
);
const bodies = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 4, arbitrary: jsonBodies.map((v) => Buffer.from(JSON.stringify(v) ?? 'null')) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        '{"__proto__": {"admin": true}}',
        '{"state": "working", "constructor": {"prototype": {"x": 1}}}',
        '{"state": "wor',
        '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]',
        `{"pad": "${'x'.repeat(70_000)}"}`,
        ' ',
        'state=working',
      )
      .map((text) => Buffer.from(text)),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((s) => Buffer.from(s)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)) },
);

beforeAll(async () => {
  announce('http');
  nodes = await startCliCluster({
    store: tempSqliteUrl(),
    nodes: 1,
    args: [
      '--http-headers-timeout',
      '1000',
      '--http-request-timeout',
      '2000',
      '--http-max-connections-per-address',
      '16',
    ],
  });
  node = nodes[0]!;
  port = Number(new URL(node.url).port);
});

afterAll(async () => {
  agent.destroy();
  await stopAll(nodes);
});

describe('HTTP API, fuzzed against a real node', () => {
  it('every generated request gets a documented status and a JSON error without a stack', async () => {
    const keep = await request(node, 'PUT', '/entities/fuzz-keep', { json: { state: 'working' } });
    expect(keep.status).toBe(200);
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(methods, pathWithQuery, headerSets, bodies, async (method, path, headers, body) => {
        const answer = await send(method, path, headers as Record<string, string>, body);
        if (answer === null) return; // not sent, or a connection closed on purpose (checked below)
        seen.set(answer.status, (seen.get(answer.status) ?? 0) + 1);
        checkAnswer(method, answer, `${method} ${path.slice(0, 120)} ${JSON.stringify(headers).slice(0, 200)}`);
      }),
      params(HTTP_RUNS),
    );
    process.stdout.write(`[fuzz] http: ${HTTP_RUNS} requests, statuses ${JSON.stringify(Object.fromEntries(seen))}\n`);
    // Still serving, nothing lost.
    expect((await request(node, 'GET', '/readyz')).status).toBe(200);
    expect((await request(node, 'GET', '/entities/fuzz-keep')).body).toMatchObject({ state: 'working', version: 1 });
    expect(hasStackTrace(node.stderr())).toBe(false);
  });

  it('bytes that are not HTTP get a JSON 400; a 100,000-character URL a JSON 431', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), async (bytes) => {
        const text = await rawExchange(Buffer.concat([Buffer.from(bytes), Buffer.from('\r\n\r\n')]));
        if (text === '') return; // closed without an answer (e.g. the bytes began a valid request still waiting)
        const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
        expect(DOCUMENTED.has(status), text.slice(0, 200)).toBe(true);
        if (status >= 400)
          expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).error).toEqual(expect.any(String));
      }),
      params(Math.max(50, Math.round(HTTP_RUNS / 5))),
    );
    const long = await send('GET', `/entities/${'a'.repeat(100_000)}`, {});
    expect(long?.status).toBe(431);
    expect(JSON.parse(long!.text)).toEqual({ error: 'the request line and headers are larger than 16384 bytes' });
    expect(long!.headers['content-type']).toMatch(/^application\/json/);
  });

  it('content types: JSON bodies only, the same rule on every route', async () => {
    for (const [path, method, body] of [
      ['/entities/ct', 'PUT', '{"state":"working"}'],
      ['/users/ct/team', 'PUT', '{"teamId":"red"}'],
      ['/signup', 'POST', '{"username":"ctuser","password":"long enough password"}'],
      ['/login', 'POST', '{"username":"ctuser","password":"long enough password"}'],
    ] as const) {
      for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream', undefined]) {
        const answer = await send(method, path, type === undefined ? {} : { 'content-type': type }, Buffer.from(body));
        expect({ path, type, status: answer?.status }).toEqual({ path, type, status: 415 });
        expect(JSON.parse(answer!.text).error).toBe('unsupported content type; send application/json');
      }
    }
    const proto = await send(
      'PUT',
      '/entities/ct',
      { 'content-type': 'application/json' },
      Buffer.from('{"state":"working","__proto__":{"x":1}}'),
    );
    expect(proto?.status).toBe(400);
    expect(JSON.parse(proto!.text).error).toMatch(/"__proto__" key, which is not allowed/);
    const ctor = await send(
      'POST',
      '/signup',
      { 'content-type': 'application/json' },
      Buffer.from('{"constructor":{"prototype":{}}}'),
    );
    expect(JSON.parse(ctor!.text).error).toMatch(/"constructor" key holding a "prototype"/);
    const invalid = await send(
      'PUT',
      '/entities/ct',
      { 'content-type': 'application/json; charset=utf-8' },
      Buffer.from('{"state":'),
    );
    expect(invalid?.status).toBe(400);
    expect(JSON.parse(invalid!.text).error).toMatch(/^the body is not valid JSON/);
  });

  it('a slow client cannot hold a connection: headers must arrive within the headers timeout (408, JSON)', async () => {
    const started = performance.now();
    const text = await rawExchange(Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: '), 10_000);
    const elapsed = performance.now() - started;
    expect(text).toMatch(/^HTTP\/1\.1 408/);
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).error).toMatch(/did not arrive completely/);
    expect(elapsed).toBeLessThan(4000); // 1 s timeout, checked every second
    // A body that trickles is cut off by the request timeout.
    const body = await rawExchange(
      Buffer.from(
        'PUT /entities/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"state"',
      ),
      10_000,
    );
    expect(body).toMatch(/^HTTP\/1\.1 408/);
  });

  it('connections per client address are limited (429, JSON), and others still get in', async () => {
    const sockets = await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          new Promise<import('node:net').Socket>((resolve) => {
            const s = connect({ host: '127.0.0.1', port }, () => resolve(s));
            s.on('error', () => {});
          }),
      ),
    );
    const answers = await Promise.all(
      sockets.map(
        (s) =>
          new Promise<string>((resolve) => {
            let text = '';
            s.on('data', (c: Buffer) => {
              text += c.toString();
            });
            s.on('close', () => resolve(text));
            setTimeout(() => resolve(text), 1500);
          }),
      ),
    );
    const refused = answers.filter((t) => t.startsWith('HTTP/1.1 429'));
    // The fuzz agent may still hold up to 4 idle keep-alive connections: 16 allowed in all.
    expect(refused.length).toBeGreaterThanOrEqual(4);
    expect(JSON.parse(refused[0]!.slice(refused[0]!.indexOf('\r\n\r\n') + 4)).error).toMatch(
      /more than 16 open connections/,
    );
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect((await request(node, 'GET', '/healthz')).status).toBe(200);
  });
});

/** Writes `bytes` on a fresh connection and returns everything read until it closes (or the timeout). */
function rawExchange(bytes: Buffer, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port }, () => socket.write(bytes));
    let text = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(done, timeoutMs);
    socket.on('data', (c: Buffer) => {
      text += c.toString('utf8');
    });
    socket.on('error', () => {});
    socket.on('close', done);
  });
}
