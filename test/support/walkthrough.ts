/**
 * The README's curl walk-through, replayed against running nodes: every ```console block of the
 * README whose commands are `curl … localhost:400N/…` is read, each command is sent to the N-th
 * of the given nodes, and its output must be the README's — byte for byte for bodies; for
 * `curl -i`, the status line and every header line the README shows (the others, such as the date,
 * may differ). The cookie jar of `-c jar` / `-b jar` is kept in memory.
 *
 * The walk-through's ids are fixed (entity_1, sue, ada, …): run it once per store.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface WalkStep {
  command: string;
  expected: string;
}

const README = fileURLToPath(new URL('../../README.md', import.meta.url));

/** The steps of every ```console block of the README that talks to localhost:400N with curl. */
export function readmeWalkthrough(readme = readFileSync(README, 'utf8')): WalkStep[] {
  const steps: WalkStep[] = [];
  for (const block of readme.matchAll(/```console\n([\s\S]*?)```/g)) {
    const lines = block[1]!.split('\n');
    let current: WalkStep | null = null;
    for (const line of lines) {
      if (line.startsWith('$ ')) {
        if (current) steps.push(current);
        current = { command: line.slice(2), expected: '' };
      } else if (current) {
        current.expected += current.expected === '' ? line : `\n${line}`;
      }
    }
    if (current) steps.push(current);
  }
  return steps
    .filter((step) => /^curl .*localhost:400\d/.test(step.command))
    .map((step) => ({ ...step, expected: step.expected.replace(/\n+$/, '') }));
}

/** Shell words of a command line: single quotes and whitespace, as the README uses them. */
function words(command: string): string[] {
  const out: string[] = [];
  const pattern = /'([^']*)'|(\S+)/g;
  for (const match of command.matchAll(pattern)) out.push(match[1] ?? match[2]!);
  return out;
}

interface Curl {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
  include: boolean;
  saveCookies: boolean;
  sendCookies: boolean;
}

function parseCurl(command: string): Curl {
  const args = words(command).slice(1);
  const curl: Curl = { method: '', url: '', headers: {}, include: false, saveCookies: false, sendCookies: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '-s') continue;
    if (arg === '-i') curl.include = true;
    else if (arg === '-X') curl.method = args[++i]!;
    else if (arg === '-H') {
      const header = args[++i]!;
      const colon = header.indexOf(':');
      curl.headers[header.slice(0, colon).trim().toLowerCase()] = header.slice(colon + 1).trim();
    } else if (arg === '-d') curl.body = args[++i]!;
    else if (arg === '-c' || arg === '-b') {
      // The jar's file name does not matter: the jar is kept in memory.
      if (arg === '-c') curl.saveCookies = true;
      else curl.sendCookies = true;
      i++;
    } else if (arg.startsWith('-')) throw new Error(`walk-through: unsupported curl flag ${arg} in: ${command}`);
    else curl.url = arg;
  }
  curl.method ||= curl.body === undefined ? 'GET' : 'POST';
  return curl;
}

/**
 * Replay the walk-through. `nodes[i]` answers for localhost:400(i+1). Returns the steps run; throws
 * on the first answer that differs from the README, saying which.
 */
export async function runWalkthrough(nodes: readonly { url: string }[], steps = readmeWalkthrough()): Promise<number> {
  if (steps.length === 0) throw new Error('the README has no curl walk-through');
  const jar = new Map<string, string>();
  for (const step of steps) {
    const curl = parseCurl(step.command);
    const target = /^(?:http:\/\/)?localhost:400(\d)(\/.*)$/.exec(curl.url);
    if (!target) throw new Error(`walk-through: unexpected URL ${curl.url}`);
    const node = nodes[Number(target[1]) - 1];
    if (!node) throw new Error(`walk-through: no node for localhost:400${target[1]}`);
    // A person types the next command a second or two later: a GET (it changes nothing) is asked
    // again for up to 2 s, for what the README calls eventually consistent (GET /teams/:id).
    const deadline = Date.now() + (curl.method === 'GET' ? 2000 : 0);
    for (;;) {
      const problem = await runStep(step, curl, `${node.url}${target[2]}`, jar);
      if (problem === null) break;
      if (Date.now() >= deadline) {
        throw new Error(
          `walk-through step \`${step.command}\` against ${node.url}: ${problem}\nREADME:\n${step.expected}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return steps.length;
}

/** Send one step's request; null when the answer is the README's, else what differs. */
async function runStep(step: WalkStep, curl: Curl, url: string, jar: Map<string, string>): Promise<string | null> {
  const headers = { ...curl.headers };
  if (curl.sendCookies && jar.size > 0) {
    headers['cookie'] = [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
  }
  const response = await fetch(url, {
    method: curl.method,
    headers,
    body: curl.body,
    signal: AbortSignal.timeout(10_000),
  });
  const body = await response.text();
  if (curl.saveCookies) {
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(';');
      const eq = pair!.indexOf('=');
      jar.set(pair!.slice(0, eq), pair!.slice(eq + 1));
    }
  }
  if (!curl.include) return body === step.expected ? null : `answered ${response.status} ${body}`;
  const [head, expectedBody = ''] = step.expected.split('\n\n');
  const [statusLine, ...headerLines] = head!.split('\n');
  const actualStatus = `HTTP/1.1 ${response.status} ${response.statusText}`;
  if (statusLine !== actualStatus) return `answered ${actualStatus}`;
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    const value = response.headers.get(line.slice(0, colon));
    if (value !== line.slice(colon + 1).trim()) return `header ${line.slice(0, colon)} was ${value}`;
  }
  return body === expectedBody ? null : `body ${body}`;
}
