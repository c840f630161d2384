// Headless Chromium, launched the way notes/chromium-interop.md verified: the system binary (no
// browser download), a fresh profile, fake media devices, literal loopback candidates.

import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const PAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'page');

/** Origin the participant page is served from (intercepted, never fetched: no network). */
export const PAGE_ORIGIN = 'http://localhost';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  // Headless pages in the background must not be throttled: they encode and decode video.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export function chromiumPath() {
  return process.env.CHROMIUM_BIN || '/usr/bin/chromium';
}

/**
 * Launch one Chromium with a fresh --user-data-dir. Returns { context, newPage(), close() }.
 * Every participant gets its own page (its own RTCPeerConnection), as a separate tab would.
 */
export async function launchBrowser() {
  const userDataDir = mkdtempSync(join(tmpdir(), 'palim-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath(),
    headless: true,
    args: CHROMIUM_ARGS,
  });
  // The page is served from memory, so it is a secure context (getUserMedia needs one) with no
  // web server and no network traffic.
  await context.route(`${PAGE_ORIGIN}/**`, async (route) => {
    const path = new URL(route.request().url()).pathname;
    const file = normalize(join(PAGE_DIR, path === '/' ? 'index.html' : path));
    if (!file.startsWith(PAGE_DIR)) return route.fulfill({ status: 403, body: 'forbidden' });
    try {
      const body = readFileSync(file);
      const contentType = file.endsWith('.js') ? 'text/javascript' : 'text/html';
      return route.fulfill({ status: 200, contentType, body });
    } catch {
      return route.fulfill({ status: 404, body: 'not found' });
    }
  });
  return {
    context,
    async newPage(label) {
      const page = await context.newPage();
      page.on('console', (msg) => {
        if (msg.type() === 'error' || msg.type() === 'warning') console.log(`[${label} console.${msg.type()}] ${msg.text()}`);
      });
      page.on('pageerror', (err) => console.log(`[${label} pageerror] ${err.message}`));
      await page.goto(`${PAGE_ORIGIN}/index.html`);
      await page.waitForFunction(() => window.palimClient !== undefined);
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
