import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchReport } from '../../bench/types.js';
import { tempDir } from './tmp.js';

/** `concord bench …` run as the user runs it: the built CLI in a child process. */

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(REPO, 'dist/src/cli/main.js');

export interface BenchRun {
  code: number | null;
  /** pid of the bench process (every node process of the run is its child). */
  pid: number;
  stdout: string;
  stderr: string;
}

/** Runs `concord bench ...args`; rejects (after killing it) if it takes longer than `timeoutMs`. */
export function runBench(args: string[], timeoutMs: number): Promise<BenchRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'bench', ...args], {
      cwd: REPO,
      env: { ...process.env, CONCORD_LOG_LEVEL: 'error' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`bench did not finish in ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, pid: child.pid ?? 0, stdout, stderr });
    });
  });
}

export interface BenchReportRun extends BenchRun {
  /** The run's JSON report (`--json`). */
  report: BenchReport;
  /** The Markdown table as written by `--markdown`. */
  markdown: string;
}

/**
 * Runs `concord bench ...args --json F --markdown G` in a fresh directory and reads both files
 * back; throws (with the bench's stderr) when the bench exits with an error.
 */
export async function runBenchReport(args: string[], timeoutMs: number): Promise<BenchReportRun> {
  const dir = tempDir('bench-');
  const jsonFile = join(dir, 'bench.json');
  const mdFile = join(dir, 'bench.md');
  const ran = await runBench([...args, '--json', jsonFile, '--markdown', mdFile], timeoutMs);
  if (ran.code !== 0) throw new Error(`concord bench exited with ${ran.code}\n${ran.stderr}`);
  const report = JSON.parse(readFileSync(jsonFile, 'utf8')) as BenchReport;
  return { ...ran, report, markdown: readFileSync(mdFile, 'utf8') };
}
