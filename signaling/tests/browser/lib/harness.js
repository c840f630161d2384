// Shared by the bridge test files: the bridge and browser fixtures, the meeting set-up (Jicofo +
// LJM for N pages) and the stats helpers the checks are written with.

import assert from 'node:assert/strict';
import { before, after } from 'node:test';
import { launchBrowser } from './browser.js';
import { ColibriRest } from './jicofo.js';
import { bridgeConfig, startBridge } from './palim.js';

export const CFG = bridgeConfig();
export const SKIP = CFG ? false : 'no bridge configured: set PALIM_REST, PALIM_BIN or PALIM_CMD (see README.md)';
export const TIMEOUT_MS = Number(process.env.PALIM_TEST_TIMEOUT_MS || 30000);
export const MIN_FRAMES = 50;
export const SETUP_TIMEOUT_MS = 120000;
export const VERBOSE = process.env.PALIM_TEST_VERBOSE === '1';
export const log = (...a) => console.log('[browser-test]', ...a);
// Tests for known Palim bugs are `todo` (run and reported, not fatal) unless PALIM_TEST_STRICT=1.
export const STRICT = process.env.PALIM_TEST_STRICT === '1';
export const knownBug = (why) => (SKIP || STRICT ? false : `known Palim bug: ${why}`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Register the file-level before/after hooks: start (or attach to) the bridge and launch one
 * Chromium. Returns an object whose `bridge`/`browser` are set once `before` has run.
 */
export function fixtures() {
  const fx = { bridge: null, browser: null, rest: null };
  before(async () => {
    if (!CFG) return;
    fx.bridge = await startBridge(CFG);
    log(`bridge REST at ${fx.bridge.rest} (${CFG.kind})`);
    fx.browser = await launchBrowser();
    fx.rest = () => new ColibriRest(fx.bridge.rest, { log: VERBOSE ? (l) => log(l) : () => {} });
  });
  after(async () => {
    if (fx.browser) await fx.browser.close();
    if (fx.bridge) await fx.bridge.stop();
  });
  return fx;
}

/** One line per participant with the stats the brief asks to see. */
export function describeStats(name, s) {
  const t = s.transport || {};
  const parts = [
    `${name}: pc=${s.connectionState} ice=${s.iceConnectionState}`,
    `dtls=${t.dtlsState}/${t.dtlsRole} iceRole=${t.iceRole} srtp=${t.srtpCipher} dtlsCipher=${t.dtlsCipher} tls=${t.tlsVersion}`,
    s.pair ? `pair=${s.pair.local}→${s.pair.remote} rtt=${s.pair.currentRoundTripTime} outBwe=${s.pair.availableOutgoingBitrate}` : 'pair=none',
    `bridgeChannel=${s.bridgeChannel} msgs=[${[...new Set(s.bridgeMessages)].join(',')}](${s.bridgeMessages.length})`,
  ];
  for (const i of s.inbound) {
    if (i.kind === 'video') {
      parts.push(`in video ssrc=${i.ssrc} mid=${i.mid} ${i.codec} frames=${i.framesDecoded} key=${i.keyFramesDecoded} ${i.frameWidth}x${i.frameHeight} pkts=${i.packetsReceived} lost=${i.packetsLost} nack=${i.nackCount} pli=${i.pliCount} dec=${i.decoderImplementation}`);
    } else {
      parts.push(`in audio ssrc=${i.ssrc} mid=${i.mid} ${i.codec} pkts=${i.packetsReceived} lost=${i.packetsLost} jitter=${i.jitter}`);
    }
  }
  for (const o of s.outbound) {
    if (o.kind === 'video') {
      parts.push(`out video ssrc=${o.ssrc}${o.rid ? ` rid=${o.rid}` : ''} ${o.codec} frames=${o.framesEncoded} ${o.frameWidth ?? 0}x${o.frameHeight ?? 0} pkts=${o.packetsSent} limit=${o.qualityLimitationReason} resChanges=${o.qualityLimitationResolutionChanges} pli=${o.pliCount} nack=${o.nackCount}`);
    } else {
      parts.push(`out audio ssrc=${o.ssrc} pkts=${o.packetsSent}`);
    }
  }
  return parts.join(' | ');
}

/** Poll a participant's stats until `check(stats)` is true or the timeout passes. */
export async function waitStats(p, check, timeoutMs = TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let s = await p.stats();
  while (!check(s) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    s = await p.stats();
  }
  return s;
}

export function inboundFor(stats, kind, ssrc) {
  return stats.inbound.find((i) => i.kind === kind && i.ssrc === ssrc);
}

/**
 * Jicofo + LJM for N participants (pages opened in `browser`; `opts[name]` goes to the page's init()): allocate each and send each its session-initiate. Then, per
 * participant, its session-accept goes to the bridge (transport + sources) and its sources go to
 * everybody else as a Jingle source-add. The two messages are independent, and `order` picks
 * which one lands first:
 *  - 'sources-first' (default): the other pages know the sources before the bridge forwards any
 *    media of them. The media checks then do not depend on what the bridge does with media that
 *    nobody has been told about.
 *  - 'late': all accepts first, then the source-adds `lateMs` later, so the bridge is already
 *    forwarding media that the receivers have not been told about (a slow client).
 */
export async function meeting(browser, focus, names, { bad = new Set(), order = 'sources-first', lateMs = 3000, opts = {} } = {}) {
  const ps = [];
  for (const name of names) {
    const page = await browser.newPage(name);
    ps.push(await focus.join(page, name, opts[name] || {}));
  }
  for (const p of ps) await p.negotiate(); // session-initiate → page → answer
  const accept = (p) => p.sessionAccept({ badFingerprint: bad.has(p.endpointId) });
  if (order === 'late') {
    for (const p of ps) await accept(p);
    await new Promise((r) => setTimeout(r, lateMs));
    for (const p of ps) await p.sourceAdd(ps.filter((o) => o !== p));
    return ps;
  }
  for (const p of ps) {
    for (const o of ps) if (o !== p) await o.sourceAdd([p]);
    await accept(p);
  }
  return ps;
}

/** The SSRCs a page has been told about for remote participants (primary video, its RTX, audio). */
export function signalled(p) {
  const out = new Set();
  // The bridge's own SSRCs (jvb-a0/jvb-v0) are on the offer's sendrecv m-lines: the bridge may
  // send on them (padding probes, media.md §10.57).
  const fb = p.focus.feedback || {};
  if (fb.audio) out.add(fb.audio);
  if (fb.video) out.add(fb.video);
  for (const r of p.remotes) {
    if (r.audio) out.add(r.audio.ssrc);
    if (r.video) {
      out.add(r.video.ssrc);
      if (r.video.rtx) out.add(r.video.rtx);
    }
  }
  return out;
}

export async function dumpOnFailure(t, ps) {
  for (const p of ps) {
    t.diagnostic(describeStats(p.endpointId, await p.stats()));
    if (VERBOSE) t.diagnostic(`${p.endpointId} page log: ${(await p.pageLog()).join(' | ')}`);
  }
}

export async function expectDecodes(t, receiver, sender) {
  const remote = receiver.remotes.find((r) => r.endpointId === sender.endpointId);
  assert.ok(remote && remote.video, `${receiver.endpointId} was told ${sender.endpointId}'s video source`);
  const s = await waitStats(receiver, (st) => (inboundFor(st, 'video', remote.video.ssrc)?.framesDecoded ?? 0) > MIN_FRAMES);
  t.diagnostic(describeStats(receiver.endpointId, s));
  const v = inboundFor(s, 'video', remote.video.ssrc);
  assert.ok(v, `${receiver.endpointId} has an inbound-rtp for ${sender.endpointId}'s primary video SSRC ${remote.video.ssrc} (inbound: ${JSON.stringify(s.inbound.map((i) => [i.kind, i.ssrc]))})`);
  assert.ok(v.framesDecoded > MIN_FRAMES, `${receiver.endpointId} decoded ${v.framesDecoded} frames of ${sender.endpointId}'s video within ${TIMEOUT_MS} ms (need > ${MIN_FRAMES})`);
  assert.ok(v.frameWidth > 0 && v.frameHeight > 0);
}

export async function expectAudio(t, receiver, sender) {
  const remote = receiver.remotes.find((r) => r.endpointId === sender.endpointId);
  assert.ok(remote && remote.audio);
  const s = await waitStats(receiver, (st) => (inboundFor(st, 'audio', remote.audio.ssrc)?.packetsReceived ?? 0) > 0);
  const a = inboundFor(s, 'audio', remote.audio.ssrc);
  t.diagnostic(`${receiver.endpointId} ← ${sender.endpointId} audio ssrc=${remote.audio.ssrc}: packetsReceived=${a && a.packetsReceived} lost=${a && a.packetsLost}`);
  assert.ok(a && a.packetsReceived > 0, `${receiver.endpointId} received audio packets from ${sender.endpointId}`);
}

export function expectTransport(s, name) {
  const t = s.transport || {};
  assert.equal(t.dtlsState, 'connected', `${name} dtlsState`);
  assert.equal(t.dtlsRole, 'client', `${name} is the DTLS client (a=setup:active)`);
  assert.equal(t.iceRole, 'controlled', `${name} is ICE-controlled (the bridge controls)`);
  assert.ok(t.srtpCipher, `${name} negotiated an SRTP profile`);
  assert.equal(s.connectionState, 'connected', `${name} connectionState`);
}


// ---- bridge channel and layer checks (simulcast / SVC / lastN tests) ----

/** Classes the bridge may send to a client (media.md §2.3, B→C). */
export const BRIDGE_TO_CLIENT = new Set([
  'ServerHello', 'EndpointMessage', 'EndpointStats', 'SenderSourceConstraints', 'ForwardedSources',
  'DominantSpeakerEndpointChangeEvent', 'EndpointConnectivityStatusChangeEvent', 'ConnectionStats',
  'VideoSourcesMap', 'AudioSourcesMap', 'SyntheticSourceSendingChangeEvent',
]);

/**
 * Shape problems of one bridge→client message (media.md §2.4), as strings; [] when it is fine.
 * Only the fields LJM reads are checked; unknown classes are reported by the caller.
 */
export function shapeProblems(m) {
  const p = [];
  const str = (k) => { if (typeof m[k] !== 'string') p.push(`${k} is not a string`); };
  const strArray = (k) => { if (!Array.isArray(m[k]) || !m[k].every((x) => typeof x === 'string')) p.push(`${k} is not an array of strings`); };
  const int = (k) => { if (!Number.isInteger(m[k])) p.push(`${k} is not an integer`); };
  switch (m.colibriClass) {
    case 'ServerHello': if ('version' in m) str('version'); break;
    case 'ForwardedSources': strArray('forwardedSources'); break;
    case 'SenderSourceConstraints': str('sourceName'); int('maxHeight'); if (m.maxHeight < -1) p.push('maxHeight < -1'); break;
    case 'DominantSpeakerEndpointChangeEvent':
      str('dominantSpeakerEndpoint');
      if ('previousSpeakers' in m) {
        strArray('previousSpeakers');
        if (Array.isArray(m.previousSpeakers) && m.previousSpeakers.length > 10) p.push('more than 10 previousSpeakers');
      }
      if ('silence' in m && typeof m.silence !== 'boolean') p.push('silence is not a boolean');
      break;
    case 'EndpointConnectivityStatusChangeEvent':
      str('endpoint');
      if (m.active !== 'true' && m.active !== 'false') p.push('active is not the string "true"/"false" (media.md §10.33)');
      break;
    case 'ConnectionStats': if (typeof m.estimatedDownlinkBandwidth !== 'number') p.push('estimatedDownlinkBandwidth is not a number'); break;
    case 'EndpointMessage': case 'EndpointStats': str('from'); break;
    default: break;
  }
  return p;
}

/** The bridge-channel messages a page has received: [{ t (page ms), msg }]. */
export function messagesOf(p, from = 0) {
  return p.page.evaluate((f) => window.palimClient.messages(f), from);
}

/** Wait until the page received a message for which `pred(msg)` holds; returns it or null. */
export async function waitMessage(p, pred, timeoutMs = 5000, from = 0) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = (await messagesOf(p, from)).find((x) => pred(x.msg));
    if (m || Date.now() >= deadline) return m || null;
    await sleep(200);
  }
}

/**
 * Send a ReceiverVideoConstraints (media.md §2.4 shape) from page `p`; it also becomes what the
 * page re-sends on renegotiation. Returns the page time of the send (ms).
 */
export function sendConstraints(p, c) {
  return p.page.evaluate((cc) => {
    const t = performance.now();
    if (!window.palimClient.setConstraints(cc)) throw new Error('bridge channel not open');
    return t;
  }, c);
}

/** Constraints asking `maxHeight` for `source` (on stage when > 180), default 180, lastN -1. */
export function constraintsFor(source, maxHeight, { lastN = -1, defaultMaxHeight = 180 } = {}) {
  return {
    lastN,
    assumedBandwidthBps: -1,
    defaultConstraints: { maxHeight: defaultMaxHeight },
    constraints: { [source]: { maxHeight } },
    onStageSources: maxHeight > 180 ? [source] : [],
    selectedSources: [],
  };
}

/** The primary (first SIM) video SSRC of `sender` as signalled to `receiver`. */
export function primaryVideoSsrc(receiver, sender) {
  const r = receiver.remotes.find((x) => x.endpointId === sender.endpointId);
  assert.ok(r && r.video, `${receiver.endpointId} was told ${sender.endpointId}'s video source`);
  return r.video.ssrc;
}

/** Sample the page's inbound-rtp of `ssrc` every 100 ms (in the page) for `ms`; returns the samples. */
export async function monitor(p, ssrc, ms, { periodMs = 100, during = null } = {}) {
  await p.page.evaluate(([s, per]) => window.palimClient.startMonitor(s, per), [ssrc, periodMs]);
  const t0 = during ? await during() : null;
  await sleep(ms);
  const samples = await p.page.evaluate(() => window.palimClient.stopMonitor());
  return { t0, samples };
}

/** The longest run of `samples` during which framesDecoded did not grow: { ms, from, to } (sample indexes). */
export function stallOf(samples) {
  let worst = { ms: 0, from: 0, to: 0 };
  let lastChange = 0;
  for (let i = 1; i < samples.length; i++) {
    if (samples[i].framesDecoded > samples[i - 1].framesDecoded) lastChange = i;
    const ms = samples[i].t - samples[lastChange].t;
    if (ms > worst.ms) worst = { ms, from: lastChange, to: i };
  }
  return worst;
}

/**
 * The stall a window of `samples` may have without counting as a freeze: 500 ms, or three mean
 * frame intervals when the frame rate is low (the shared 2-core box often decodes 720p at
 * 4–8 fps; Chrome's own freeze rule is max(3 × mean, mean + 150 ms)).
 */
export function allowedStall(samples) {
  if (samples.length < 2) return 500;
  const frames = samples[samples.length - 1].framesDecoded - samples[0].framesDecoded;
  const ms = samples[samples.length - 1].t - samples[0].t;
  const mean = frames > 0 ? ms / frames : Infinity;
  return Math.max(500, 3 * mean);
}

/** Longest time (ms) in `samples` during which framesDecoded did not grow. */
export function longestStall(samples) {
  return stallOf(samples).ms;
}

/** Bytes per second over two stats snapshots for one inbound/outbound entry picked by `pick`. */
export function rateBps(s0, s1, pick, field) {
  const a = pick(s0);
  const b = pick(s1);
  if (!a || !b) return 0;
  return ((b[field] - a[field]) * 8 * 1000) / Math.max(1, s1.now - s0.now);
}

/** A compact summary of a monitor window, for diagnostics. */
export function describeSamples(samples) {
  if (!samples.length) return 'no samples';
  const heights = [...new Set(samples.map((s) => s.frameHeight))].join('/');
  const first = samples[0];
  const last = samples[samples.length - 1];
  return `${samples.length} samples over ${(last.t - first.t).toFixed(0)} ms: heights ${heights}, frames ${first.framesDecoded}→${last.framesDecoded}, `
    + `freezes ${first.freezeCount}→${last.freezeCount} (${(last.totalFreezesDuration - first.totalFreezesDuration).toFixed(3)} s), longest stall ${longestStall(samples).toFixed(0)} ms`
    + `${describeStall(samples)}`;
}

/** What arrived during the longest stall (frames received but not decoded, or nothing at all?). */
function describeStall(samples) {
  const st = stallOf(samples);
  if (st.ms < 300) return '';
  const a = samples[st.from];
  const b = samples[st.to];
  return ` [during it: +${b.packetsReceived - a.packetsReceived} packets, +${b.framesReceived - a.framesReceived} frames received, `
    + `+${b.framesDropped - a.framesDropped} dropped, +${b.pliCount - a.pliCount} PLI sent, keyframes decoded ${a.keyFramesDecoded}→${b.keyFramesDecoded}, `
    + `height ${a.frameHeight}→${b.frameHeight}]`;
}

/** The bridge's drop counters from GET /colibri/stats (drops_* keys), or a string saying why not. */
export async function bridgeDrops(rest) {
  try {
    const res = await fetch(`${rest.replace(/\/+$/, '')}/colibri/stats`, { signal: AbortSignal.timeout(3000) });
    if (!res.ok) return `GET /colibri/stats → HTTP ${res.status}`;
    const j = await res.json();
    return Object.fromEntries(Object.entries(j).filter(([k]) => k.startsWith('drops_')));
  } catch (e) {
    return `GET /colibri/stats failed: ${e.message}`;
  }
}
