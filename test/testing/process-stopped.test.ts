/**
 * waitUntilStopped, behind `pause()` of the harness's nodes: kill(SIGSTOP) returns before the
 * target has stopped, so a test that acts on "the process is frozen" must wait for every thread.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { waitUntilStopped } from '../../src/testing/process-stopped.js';

function threadStates(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2);
  });
}

// A process with several busy threads: a worker spinning, and the main thread spinning too.
const BUSY = `
const { Worker } = require('node:worker_threads');
new Worker('for (;;) {}', { eval: true });
process.stdout.write('ready\\n');
setInterval(() => { const end = Date.now() + 5; while (Date.now() < end); }, 1);
`;

describe.runIf(process.platform === 'linux')('waitUntilStopped', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill('SIGKILL');
    child = undefined;
  });

  it('resolves once every thread of a busy process is stopped, and they run again after SIGCONT', async () => {
    child = spawn(process.execPath, ['-e', BUSY], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child!.stdout!.once('data', () => resolve()));
    const pid = child.pid!;
    expect(threadStates(pid).length).toBeGreaterThan(2);

    for (let round = 0; round < 5; round++) {
      child.kill('SIGSTOP');
      await waitUntilStopped(pid);
      expect(threadStates(pid).every((state) => state === 'T' || state === 't')).toBe(true);
      child.kill('SIGCONT');
      // Two spinning threads: at least one of them is seen running again.
      const deadline = performance.now() + 2000;
      while (!threadStates(pid).includes('R') && performance.now() < deadline)
        await new Promise((r) => setTimeout(r, 1));
      expect(threadStates(pid)).toContain('R');
    }
  });

  it('resolves at once for a process that is gone', async () => {
    child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    const pid = child.pid!;
    await new Promise((resolve) => child!.once('exit', resolve));
    const started = performance.now();
    await waitUntilStopped(pid, 5_000);
    expect(performance.now() - started).toBeLessThan(1000);
  });
});
