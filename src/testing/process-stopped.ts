import type { ChildProcess } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';

/** SIGSTOP `child`; resolves once it has really stopped (see waitUntilStopped). The harness's `pause()`. */
export async function stopProcess(child: ChildProcess | null): Promise<void> {
  if (!child?.kill('SIGSTOP') || child.pid === undefined) return;
  await waitUntilStopped(child.pid);
}

/**
 * Resolves once every thread of process `pid` is stopped (state `T` or `t` in Linux's
 * /proc/<pid>/task/<tid>/stat), or after `timeoutMs`. kill(SIGSTOP) returns before the target
 * has stopped: a thread running on another core stops at its next return to user space, and
 * one inside a system call (an fsync) only when that call ends. A test that acts on "the
 * process is frozen" (it holds no lock now and cannot take one) must wait for this. Where
 * /proc is not there, it resolves at once.
 */
export async function waitUntilStopped(pid: number, timeoutMs = 2_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const stopped = await allThreadsStopped(pid);
    if (stopped !== false || performance.now() >= deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** true/false, or null when it cannot tell (no /proc, or the process is gone). */
async function allThreadsStopped(pid: number): Promise<boolean | null> {
  let tids: string[];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  for (const tid of tids) {
    let stat: string;
    try {
      stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // the thread ended meanwhile
    }
    // "tid (comm) S …": comm may hold spaces and parentheses, so the state follows the last ')'.
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    if (state !== 'T' && state !== 't' && state !== 'Z' && state !== 'X') return false;
  }
  return true;
}
