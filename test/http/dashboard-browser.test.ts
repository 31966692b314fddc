/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by
 * playwright-core) loads the dashboard of a 3-node `concord demo`, sees 3 members and 256 owned
 * shards, clicks kill on one node and within 3 s sees it dead and every shard owned by the other
 * two, clicks restart and sees it back. Any console error fails the test. Screenshots are kept
 * under artifacts/ (the failover one is also the picture in docs/, see the README).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, freePortRange, REPO, runCli, type Spawned } from '../cli/harness.js';
import { tempDir } from '../support/tmp.js';

const CHROMIUM = process.env['CONCORD_CHROMIUM'] ?? '/usr/bin/chromium';
const ARTIFACTS = join(REPO, 'artifacts');

let demo: Spawned;
let base: number;
let browser: BrowserContext;
let page: Page;
const consoleErrors: string[] = [];

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); .ci/run does`);
  }
  base = await freePortRange(3);
  demo = runCli(['demo', '--base-port', String(base)], { cwd: tempDir('dashboard-') });
  await eventually(async () => {
    if (!demo.running) throw new Error(`demo exited:\n${demo.stdout()}\n${demo.stderr()}`);
    if (!demo.stdout().includes('Ctrl-C stops every node')) throw new Error('not up yet');
  }, 30_000);
  browser = await chromium.launchPersistentContext(tempDir('chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = await browser.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => consoleErrors.push(String(error)));
});

afterAll(async () => {
  await browser?.close();
  if (demo?.running) {
    demo.process.kill('SIGINT');
    await demo.exited;
  }
});

/** Owners of the grid's cells, and the members table's statuses. */
function view(p: Page) {
  return p.evaluate(() => ({
    owners: [...document.querySelectorAll('#grid div')].map((cell) => cell.getAttribute('data-owner')),
    members: Object.fromEntries(
      [...document.querySelectorAll('#members tr')].map((row) => [
        row.getAttribute('data-member'),
        row.getAttribute('data-status'),
      ]),
    ),
  }));
}

async function screenshot(name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, name);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
  return path;
}

describe('the live dashboard of a 3-node demo, in Chromium', () => {
  it('shows the members and shards, kill moves every shard within 3 s, restart brings the node back', async () => {
    await page.goto(`http://127.0.0.1:${base}/`);
    await page.waitForFunction(
      () =>
        document.querySelectorAll('#members tr[data-status="alive"]').length === 3 &&
        document.querySelector('#shard-summary')?.getAttribute('data-owned') === '256',
      null,
      { timeout: 15_000 },
    );
    const before = await view(page);
    expect(Object.keys(before.members).sort()).toEqual(['node-1', 'node-2', 'node-3']);
    expect(before.owners).toHaveLength(256);
    expect(new Set(before.owners)).toEqual(new Set(['node-1', 'node-2', 'node-3']));
    // Epochs on hover.
    expect(await page.getAttribute('#grid div:first-child', 'title')).toMatch(/^shard 0: node-\d · epoch \d+$/);

    const killedAt = performance.now();
    await page.click('button[data-action="kill"][data-node="node-3"]');
    await page.waitForFunction(
      () => {
        const owners = [...document.querySelectorAll('#grid div')].map((cell) => cell.getAttribute('data-owner'));
        return (
          owners.length === 256 &&
          owners.every((owner) => owner === 'node-1' || owner === 'node-2') &&
          document.querySelector('#members tr[data-member="node-3"]')?.getAttribute('data-status') === 'dead'
        );
      },
      null,
      { timeout: 10_000, polling: 50 },
    );
    const movedMs = performance.now() - killedAt;
    console.log(`kill -9 (button) to the dashboard showing node-3 dead and its shards moved: ${movedMs.toFixed(0)} ms`);
    await page.waitForSelector('#feed li[data-kind="failover"]', { timeout: 5000 });
    await screenshot('dashboard-failover.png');
    expect(movedMs).toBeLessThan(3000);
    expect(demo.stdout()).toContain('node-3 was killed by SIGKILL; its shards fail over to node-1, node-2');

    await page.click('button[data-action="restart"][data-node="node-3"]');
    await page.waitForFunction(
      () =>
        document.querySelector('#members tr[data-member="node-3"]')?.getAttribute('data-status') === 'alive' &&
        [...document.querySelectorAll('#grid div')].some((cell) => cell.getAttribute('data-owner') === 'node-3') &&
        document.querySelector('#shard-summary')?.getAttribute('data-owned') === '256',
      null,
      { timeout: 20_000 },
    );
    await screenshot('dashboard-restarted.png');
    // The demo says so when its own readiness poll sees node-3 ready, which can come a moment
    // after the dashboard (fed by the nodes) shows node-3 alive and owning shards.
    await eventually(async () => expect(demo.stdout()).toContain('node-3 is back'), 5000);
    expect(consoleErrors).toEqual([]);
  });
});
