import type { FastifyInstance } from 'fastify';
import type { ClusterActivity } from './activity.js';
import { sendError } from './errors.js';

/**
 * `GET /`: the live dashboard, one self-contained page (no external assets, no build step), and
 * `GET /events`, the Server-Sent Events stream it is fed by: a `hello` (recent events and the
 * state), then `state` every STATE_EVERY_MS (members with status, lease left, shards, active
 * entities, calls/s and p99; the shard map with epochs; the demo's processes) and an `activity`
 * for each event as it happens (joins, leaves, suspicions, evictions, failovers, handoffs, fence
 * rejections, healed partitions).
 *
 * With demo controls (only when `concord demo` started the node and passed the flag) the page has
 * buttons to kill, pause/resume, partition/heal and restart each node: `POST /demo/:action/:node`
 * asks the demo process to do it. A plain `concord node` has no such route.
 *
 * All text goes in through `textContent`, never `innerHTML`, so names and ids cannot inject
 * markup.
 */

export const DEMO_ACTIONS = ['kill', 'pause', 'resume', 'partition', 'heal', 'restart'] as const;
export type DemoAction = (typeof DEMO_ACTIONS)[number];

export interface DashboardOptions {
  activity: ClusterActivity;
  /** Present only under `concord demo`: carry out a button's action. */
  demoControls: ((action: DemoAction, node: string) => void) | null;
}

export interface EventStreams {
  /** End every open stream (the node is stopping) and refuse new ones. */
  closeAll(): void;
}

const STATE_EVERY_MS = 400;
const CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'";

export function registerDashboard(http: FastifyInstance, options: DashboardOptions): EventStreams {
  const { activity, demoControls } = options;
  const streams = new Set<() => void>();
  let closed = false;

  http.get('/', async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', CSP)
      .header('cache-control', 'no-store')
      .send(PAGE),
  );

  http.get('/events', (request, reply) => {
    if (closed) {
      return sendError(reply, { status: 503, body: { error: 'the node is stopping' }, retryAfterSeconds: 1 });
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
    });
    const send = (event: string, data: unknown) => {
      if (!res.writableEnded) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    res.write('retry: 1000\n\n');
    send('hello', { events: activity.recent(), state: activity.state(), controls: demoControls !== null });
    const unsubscribe = activity.subscribe((event) => send('activity', event));
    const timer = setInterval(() => send('state', activity.state()), STATE_EVERY_MS);
    const end = () => {
      clearInterval(timer);
      unsubscribe();
      streams.delete(end);
      if (!res.writableEnded) res.end();
    };
    streams.add(end);
    request.raw.on('close', end);
    res.on('error', end);
  });

  if (demoControls) {
    http.post<{ Params: { action: string; node: string } }>(
      '/demo/:action/:node',
      {
        schema: {
          params: {
            type: 'object',
            required: ['action', 'node'],
            properties: {
              action: { type: 'string', enum: [...DEMO_ACTIONS] },
              node: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' },
            },
          },
        },
      },
      async (request, reply) => {
        demoControls(request.params.action as DemoAction, request.params.node);
        return reply.code(202).send({ requested: request.params.action, node: request.params.node });
      },
    );
  }

  return {
    closeAll() {
      closed = true;
      for (const end of [...streams]) end();
    },
  };
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>concord</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2rem 1.5rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; } h2 { font-size: 1.05rem; margin: 1.1rem 0 .4rem; }
  .muted { color: #777; } .warn { color: #a40; font-weight: 600; } .bad { color: #b00; font-weight: 600; }
  .cols { display: flex; gap: 2rem; flex-wrap: wrap; align-items: flex-start; }
  .col { min-width: 24rem; } .col:last-child { flex: 1; }
  table { border-collapse: collapse; } td, th { padding: .2rem .55rem; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  #grid { display: grid; grid-template-columns: repeat(32, 14px); gap: 2px; margin-top: .3rem; }
  #grid div { width: 14px; height: 14px; border-radius: 2px; background: #ddd; transition: background .3s; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: .35rem; }
  .status-alive { color: #287a1e; } .status-dead, .status-evicted { color: #b00; font-weight: 600; }
  .status-suspected, .status-leaving, .status-joining { color: #a60; font-weight: 600; }
  form { display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
  input, select, button { font: inherit; padding: .15rem .45rem; }
  button:disabled { opacity: .4; }
  pre { background: #f5f5f5; padding: .6rem; overflow: auto; margin: .4rem 0; }
  #feed { list-style: none; padding: 0; margin: 0; max-height: 24rem; overflow: auto; border: 1px solid #eee; }
  #feed li { padding: .2rem .5rem; border-bottom: 1px solid #f0f0f0; }
  #feed time { color: #888; margin-right: .5rem; font-variant-numeric: tabular-nums; }
  #feed .k-failover, #feed .k-dead, #feed .k-evicted, #feed .k-fence { background: #fff1f0; }
  #feed .k-handoff, #feed .k-leave, #feed .k-left { background: #f3f6ff; }
  #feed .k-healed, #feed .k-member, #feed .k-join, #feed .k-restarted { background: #f1fbef; }
  #feed .k-demo { background: #fffbe6; }
  #demo td button { margin-right: .2rem; }
</style>
</head>
<body>
<h1>concord <span id="self" class="muted"></span></h1>
<div id="summary" class="muted">connecting…</div>
<div id="conn" class="warn"></div>
<div class="cols">
<div class="col">
<h2>Members</h2>
<table><thead><tr><th>node</th><th>status</th><th class="num">lease left</th><th class="num">shards</th><th class="num">active entities</th><th class="num">calls/s</th><th class="num">p99</th><th></th></tr></thead>
<tbody id="members"></tbody></table>
<div id="demo-box" hidden>
<h2>Demo controls</h2>
<table id="demo"><thead><tr><th>process</th><th>state</th><th>do</th></tr></thead><tbody id="demo-rows"></tbody></table>
<div class="muted">Kill is <code>kill -9</code>; pause is SIGSTOP/SIGCONT; partition cuts the node off from the others (its store stays reachable).</div>
</div>
<h2>Shard ownership</h2>
<div id="shard-summary"></div>
<div id="grid"></div>
<h2>Which node owns this entity?</h2>
<form id="entity" onsubmit="return false">
  <input id="id" value="entity_1" size="22" aria-label="entity id">
  <button id="owner" type="button">owner</button>
  <button id="get" type="button">GET</button>
  <select id="state" aria-label="state"><option>initialized</option><option>working</option><option>finalized</option></select>
  <input id="ifmatch" placeholder="If-Match (optional)" size="16" aria-label="If-Match">
  <button id="put" type="button">PUT</button>
</form>
<pre id="result" class="muted">GET or PUT an entity through this node; the answer names its owner.</pre>
</div>
<div class="col">
<h2>Events</h2>
<ul id="feed"></ul>
</div>
</div>
<script>
'use strict';
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
const $ = (id) => document.getElementById(id);
const colors = new Map();
function colorOf(name) {
  if (!colors.has(name)) {
    const m = /(\\d+)$/.exec(name);
    const used = new Set(colors.values());
    let c = m ? PALETTE[(Number(m[1]) - 1 + PALETTE.length) % PALETTE.length] : null;
    if (!c || used.has(c)) c = PALETTE.find((p) => !used.has(p)) || PALETTE[colors.size % PALETTE.length];
    colors.set(name, c);
  }
  return colors.get(name);
}
function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function ms(v) { return v === null || v === undefined ? '–' : (v >= 1000 ? (v / 1000).toFixed(1) + ' s' : Math.round(v) + ' ms'); }
let controls = false;
function render(s) {
  $('self').textContent = '— node ' + s.self;
  if (s.ownership === 'none') { $('summary').textContent = ''; $('summary').appendChild(el('span', 'ownership: none — uncoordinated baseline, nodes do NOT agree', { class: 'warn' })); }
  else $('summary').textContent = (s.ready ? 'ready' : 'NOT ready: ' + (s.notReadyReason || '')) + ' · ' + s.members.length + ' members';
  const names = new Set(s.members.map((m) => m.name));
  for (const p of s.demo || []) names.add(p.name);
  for (const n of [...names].sort()) colorOf(n);
  $('members').replaceChildren(...s.members.map((m) => {
    const tr = el('tr', undefined, { 'data-member': m.name, 'data-status': m.status });
    const name = el('td');
    name.appendChild(el('span', '', { class: 'swatch', style: 'background:' + colorOf(m.name) }));
    name.appendChild(document.createTextNode(m.name + (m.name === s.self ? ' (this node)' : '')));
    let status = m.status;
    if (m.status === 'suspected' && m.suspectedBy.length) status += ' by ' + m.suspectedBy.join(', ');
    if (m.status === 'evicted' && m.evictedBy && m.evictedBy.length) status += ' by ' + m.evictedBy.join(', ');
    if (!m.connected && m.status === 'alive') status += ', not connected';
    const http = el('td');
    if (m.httpAddress) http.appendChild(el('a', 'dashboard', { href: m.httpAddress + '/', title: m.httpAddress }));
    const st = m.stats;
    tr.append(name, el('td', status, { class: 'status-' + m.status }), el('td', m.status === 'dead' ? '–' : ms(m.leaseExpiresInMs), { class: 'num' }),
      el('td', m.shards, { class: 'num' }), el('td', st ? st.activeEntities : '–', { class: 'num' }),
      el('td', st ? st.callsPerSecond : '–', { class: 'num' }), el('td', st ? ms(st.p99Ms) : '–', { class: 'num' }), http);
    return tr;
  }));
  const owners = s.shards.owners;
  const grid = $('grid');
  if (grid.children.length !== owners.length) grid.replaceChildren(...owners.map(() => el('div')));
  const counts = {};
  let unowned = 0;
  owners.forEach((owner, i) => {
    const cell = grid.children[i];
    const epoch = s.shards.epochs[i];
    cell.setAttribute('data-owner', owner || '');
    cell.title = 'shard ' + i + ': ' + (owner || 'no live owner') + ' · epoch ' + epoch;
    cell.style.background = owner ? colorOf(owner) : '';
    if (owner) counts[owner] = (counts[owner] || 0) + 1; else unowned++;
  });
  const summary = $('shard-summary');
  summary.setAttribute('data-owned', String(owners.length - unowned));
  summary.replaceChildren();
  if (owners.length === 0) summary.textContent = 'no shards (ownership: none)';
  else {
    summary.appendChild(document.createTextNode(owners.length + ' shards · '));
    for (const [owner, n] of Object.entries(counts).sort()) {
      summary.appendChild(el('span', '', { class: 'swatch', style: 'background:' + colorOf(owner) }));
      summary.appendChild(document.createTextNode(owner + ' ' + n + '  '));
    }
    if (unowned) summary.appendChild(el('span', unowned + ' without a live owner', { class: 'bad' }));
  }
  renderDemo(s.demo);
}
function renderDemo(processes) {
  $('demo-box').hidden = !controls || !processes;
  if (!controls || !processes) return;
  $('demo-rows').replaceChildren(...processes.map((p) => {
    const tr = el('tr', undefined, { 'data-process': p.name, 'data-process-state': p.state });
    const name = el('td');
    name.appendChild(el('span', '', { class: 'swatch', style: 'background:' + colorOf(p.name) }));
    name.appendChild(document.createTextNode(p.name + (p.pid ? ' (pid ' + p.pid + ')' : '')));
    const actions = el('td');
    const up = p.state === 'running' || p.state === 'paused' || p.state === 'partitioned';
    const buttons = [
      ['kill', up], [p.state === 'paused' ? 'resume' : 'pause', p.state === 'running' || p.state === 'paused'],
      [p.state === 'partitioned' ? 'heal' : 'partition', p.state === 'running' || p.state === 'partitioned'],
      ['restart', p.state === 'killed' || p.state === 'exited'],
    ];
    for (const [action, enabled] of buttons) {
      const b = el('button', action, { type: 'button', 'data-action': action, 'data-node': p.name });
      b.disabled = !enabled;
      b.addEventListener('click', () => demo(action, p.name));
      actions.appendChild(b);
    }
    tr.append(name, el('td', p.state), actions);
    return tr;
  }));
}
async function demo(action, node) {
  try {
    const r = await fetch('/demo/' + action + '/' + encodeURIComponent(node), { method: 'POST' });
    if (r.status !== 202) addEvent({ at: Date.now(), kind: 'demo', text: action + ' ' + node + ' failed: ' + r.status });
  } catch (e) {
    addEvent({ at: Date.now(), kind: 'demo', text: action + ' ' + node + ' failed: ' + e });
  }
}
function addEvent(ev) {
  const li = el('li', undefined, { class: 'k-' + ev.kind, 'data-kind': ev.kind });
  li.appendChild(el('time', new Date(ev.at).toLocaleTimeString()));
  li.appendChild(document.createTextNode(ev.text));
  const feed = $('feed');
  feed.insertBefore(li, feed.firstChild);
  while (feed.children.length > 150) feed.removeChild(feed.lastChild);
}
const source = new EventSource('/events');
source.addEventListener('hello', (e) => {
  const d = JSON.parse(e.data);
  controls = d.controls;
  $('feed').replaceChildren();
  for (const ev of d.events) addEvent(ev);
  render(d.state);
  $('conn').textContent = '';
});
source.addEventListener('state', (e) => { render(JSON.parse(e.data)); $('conn').textContent = ''; });
source.addEventListener('activity', (e) => addEvent(JSON.parse(e.data)));
source.onerror = () => { $('conn').textContent = 'lost the connection to this node; retrying… (open another node’s dashboard from the members table)'; };
async function entity(method) {
  const id = $('id').value.trim();
  const init = { method, headers: {} };
  if (method === 'PUT') {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify({ state: $('state').value });
    const v = $('ifmatch').value.trim();
    if (v) init.headers['if-match'] = '"' + v + '"';
  }
  try {
    const r = await fetch('/entities/' + encodeURIComponent(id), init);
    const text = await r.text();
    const owner = r.headers.get('concord-owner');
    $('result').textContent = method + ' /entities/' + id + ' → ' + r.status + (owner ? '  owner: ' + owner : '') + (r.headers.get('etag') ? '  ETag: ' + r.headers.get('etag') : '') + '\\n' + text;
  } catch (e) {
    $('result').textContent = String(e);
  }
}
async function owner() {
  const id = $('id').value.trim();
  try {
    const r = await fetch('/cluster/owner/entity-state/' + encodeURIComponent(id));
    const o = await r.json();
    $('result').textContent = r.status === 200 ? 'entity-state/' + id + ' is in shard ' + o.shard + ', owned by ' + (o.owner || 'nobody live right now') + ' at epoch ' + o.epoch : JSON.stringify(o);
  } catch (e) {
    $('result').textContent = String(e);
  }
}
$('get').addEventListener('click', () => entity('GET'));
$('put').addEventListener('click', () => entity('PUT'));
$('owner').addEventListener('click', owner);
</script>
</body>
</html>
`;
