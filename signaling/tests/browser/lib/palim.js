// Finding (or starting) the Palim bridge whose private REST port the test talks to.
//
//   PALIM_REST=http://127.0.0.1:8080   use a bridge that is already running;
//   PALIM_BIN=/path/to/palim           spawn it with env PALIM_CONFIG (default: palim-test.toml
//                                      beside this folder: media on 127.0.0.1) and, unless
//                                      PALIM_REST is set, `--rest-bind 127.0.0.1:<free port>`;
//                                      PALIM_ARGS adds arguments (split on spaces);
//   PALIM_CMD='shell command'          spawn it through `sh -c` (for anything else); the REST
//                                      base URL is then PALIM_REST, else http://127.0.0.1:8080.
// Readiness = GET /about/health answers 200.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const TEST_CONFIG = join(dirname(fileURLToPath(import.meta.url)), '..', 'palim-test.toml');

const DEFAULT_REST = 'http://127.0.0.1:8080';

/** Describe what the environment asks for, or null when no bridge is configured. */
export function bridgeConfig(env = process.env) {
  const rest = env.PALIM_REST;
  if (env.PALIM_BIN) {
    return {
      kind: 'bin', rest, bin: env.PALIM_BIN, config: env.PALIM_CONFIG || TEST_CONFIG,
      args: (env.PALIM_ARGS || '').split(/\s+/).filter(Boolean),
    };
  }
  if (env.PALIM_CMD) return { kind: 'cmd', rest: rest || DEFAULT_REST, cmd: env.PALIM_CMD };
  if (rest) return { kind: 'external', rest };
  return null;
}

export async function waitHealthy(rest, timeoutMs = 30000, isDead = () => null) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    const dead = isDead();
    if (dead) throw new Error(`palim exited before it became healthy: ${dead}`);
    try {
      const res = await fetch(`${rest.replace(/\/+$/, '')}/about/health`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status} ${await res.text()}`;
    } catch (e) {
      last = e.cause ? String(e.cause.code || e.cause.message) : e.message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`palim REST at ${rest} not healthy within ${timeoutMs} ms (last: ${last})`);
}

/**
 * Start (or attach to) the bridge. Returns { rest, stop(), output() }.
 * The child's stdout/stderr are kept (last 400 lines) for the failure report and mirrored when
 * PALIM_LOG=1.
 */
export async function startBridge(cfg) {
  if (cfg.kind === 'external') {
    await waitHealthy(cfg.rest);
    return { rest: cfg.rest, stop: async () => {}, output: () => '' };
  }
  const env = { ...process.env };
  let args = cfg.args || [];
  if (cfg.kind === 'bin') {
    env.PALIM_CONFIG = cfg.config;
    if (!cfg.rest) {
      const port = await freeTcpPort();
      args = ['--rest-bind', `127.0.0.1:${port}`, ...args];
      cfg = { ...cfg, rest: `http://127.0.0.1:${port}` };
    }
  }
  const child = cfg.kind === 'bin'
    ? spawn(cfg.bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('sh', ['-c', cfg.cmd], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const lines = [];
  const keep = (prefix) => (chunk) => {
    for (const l of chunk.toString().split('\n')) {
      if (!l) continue;
      lines.push(l);
      if (lines.length > 400) lines.shift();
      if (process.env.PALIM_LOG === '1') console.log(`[palim ${prefix}] ${l}`);
    }
  };
  child.stdout.on('data', keep('out'));
  child.stderr.on('data', keep('err'));
  let exited = null;
  child.on('exit', (code, signal) => { exited = `code ${code} signal ${signal}`; });
  child.on('error', (e) => { exited = `spawn error ${e.message}`; });
  try {
    await waitHealthy(cfg.rest, 60000, () => exited);
  } catch (e) {
    stopChild(child, cfg.kind === 'cmd');
    throw new Error(`${e.message}\n--- palim output ---\n${lines.join('\n')}`);
  }
  return {
    rest: cfg.rest,
    output: () => lines.join('\n'),
    stop: async () => {
      if (exited) return;
      const done = new Promise((r) => child.once('exit', r));
      stopChild(child, cfg.kind === 'cmd');
      await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
      if (!exited) {
        try {
          if (cfg.kind === 'cmd') process.kill(-child.pid, 'SIGKILL'); else child.kill('SIGKILL');
        } catch { /* already gone */ }
      }
    },
  };
}

function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Stop only the process (group) this test started, by its id.
function stopChild(child, group) {
  try {
    if (group) process.kill(-child.pid, 'SIGTERM'); else child.kill('SIGTERM');
  } catch { /* already gone */ }
}
