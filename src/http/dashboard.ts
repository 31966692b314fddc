import type { FastifyInstance } from 'fastify';

/**
 * `GET /`: a small self-contained dashboard (no external assets). It polls `/cluster`
 * for members and shard ownership, and has a form to get and set an entity through the
 * entity-state routes of whichever node serves the page. All text goes in through
 * `textContent`, never `innerHTML`, so names and ids cannot inject markup.
 */

export function registerDashboard(http: FastifyInstance): void {
  http.get('/', async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header(
        'content-security-policy',
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'",
      )
      .send(PAGE),
  );
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>concord</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; max-width: 60rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; } h2 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
  .muted { color: #777; } .warn { color: #a40; font-weight: 600; }
  table { border-collapse: collapse; } td, th { padding: .2rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
  #grid { display: grid; grid-template-columns: repeat(32, 14px); gap: 2px; }
  #grid div { width: 14px; height: 14px; border-radius: 2px; background: #ddd; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: .3rem; }
  form { display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
  input, select, button { font: inherit; padding: .2rem .4rem; }
  pre { background: #f5f5f5; padding: .6rem; overflow: auto; }
</style>
</head>
<body>
<h1>concord <span id="self" class="muted"></span></h1>
<div id="summary" class="muted">loading…</div>
<div id="refused" class="warn"></div>
<h2>Members</h2>
<table><thead><tr><th>name</th><th>status</th><th>HTTP</th><th>cluster address</th><th>shards</th><th>lease</th></tr></thead>
<tbody id="members"></tbody></table>
<h2>Shard ownership</h2>
<div id="legend"></div>
<div id="grid"></div>
<h2>Entity</h2>
<form id="entity" onsubmit="return false">
  <input id="id" value="entity_1" size="24" aria-label="entity id">
  <button id="get" type="button">GET</button>
  <select id="state" aria-label="state"><option>initialized</option><option>working</option><option>finalized</option></select>
  <input id="ifmatch" placeholder="If-Match (version, optional)" size="26" aria-label="If-Match">
  <button id="put" type="button">PUT</button>
</form>
<pre id="result" class="muted">GET or PUT an entity through this node.</pre>
<script>
'use strict';
const COLORS = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
const $ = (id) => document.getElementById(id);
function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
async function refresh() {
  try {
    const c = await (await fetch('/cluster', { cache: 'no-store' })).json();
    $('self').textContent = '— node ' + c.self;
    $('summary').textContent = '';
    if (c.ownership === 'none') $('summary').appendChild(el('span', 'ownership: none — uncoordinated baseline, nodes do NOT agree', { class: 'warn' }));
    else $('summary').textContent = (c.ready ? 'ready' : 'NOT ready') + ' · lease ' + c.leaseRemainingMs + ' ms · ' + c.activeEntities + ' active entities here';
    const refused = (c.refusedJoins || []).filter((j) => j.ageMs < 3600000);
    $('refused').textContent = refused.length === 0 ? '' : refused.length + ' join' + (refused.length > 1 ? 's' : '') +
      ' refused in the last hour because of the cluster secret: ' + refused.map((j) => j.name + '@' + j.host + ' (' + Math.round(j.ageMs / 1000) + ' s ago)').join(', ');
    const color = new Map(c.members.map((m, i) => [m.name, COLORS[i % COLORS.length]]));
    const rows = c.members.map((m) => {
      const tr = el('tr');
      const http = el('td');
      if (m.httpAddress) http.appendChild(el('a', m.httpAddress, { href: m.httpAddress }));
      const name = el('td');
      name.appendChild(el('span', '', { class: 'swatch', style: 'background:' + color.get(m.name) }));
      name.appendChild(document.createTextNode(m.name + (m.name === c.self ? ' (this node)' : '')));
      tr.append(name, el('td', m.status + (m.connected ? '' : ', not connected')), http, el('td', m.address), el('td', m.shards), el('td', m.leaseExpiresInMs + ' ms'));
      return tr;
    });
    $('members').replaceChildren(...rows);
    const cells = c.shards.map.map((owner, shard) => el('div', undefined, { title: 'shard ' + shard + ': ' + (owner || 'unowned'), style: owner ? 'background:' + color.get(owner) : '' }));
    $('grid').replaceChildren(...cells);
    $('legend').textContent = c.shards.count ? c.shards.count + ' shards, ' + c.shards.unowned + ' unowned' : 'no shards (ownership: none)';
  } catch (e) {
    $('summary').textContent = 'cannot reach this node: ' + e;
  }
}
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
    $('result').textContent = method + ' /entities/' + id + ' → ' + r.status + (r.headers.get('etag') ? '  ETag: ' + r.headers.get('etag') : '') + '\\n' + text;
  } catch (e) {
    $('result').textContent = String(e);
  }
  refresh();
}
$('get').addEventListener('click', () => entity('GET'));
$('put').addEventListener('click', () => entity('PUT'));
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;
