// Real browsers through the real bridge: headless Chromium pages join a meeting on Palim, driven
// the way Jicofo drives JVB (Colibri2 JSON over the private REST port) and the way lib-jitsi-meet
// drives Chromium (remote offer from Jingle, simulcast munging, bridge channel).
//
// Needs a bridge: PALIM_REST (running), PALIM_BIN or PALIM_CMD (spawned); see README.md.
// Without one, every test here is skipped (and says why).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser } from '../lib/browser.js';
import { ColibriRest } from '../lib/jicofo.js';
import { Focus } from '../lib/focus.js';
import { bridgeConfig, startBridge } from '../lib/palim.js';

const CFG = bridgeConfig();
const SKIP = CFG ? false : 'no bridge configured: set PALIM_REST, PALIM_BIN or PALIM_CMD (see README.md)';
const TIMEOUT_MS = Number(process.env.PALIM_TEST_TIMEOUT_MS || 30000);
const MIN_FRAMES = 50;
const SETUP_TIMEOUT_MS = 120000;
const VERBOSE = process.env.PALIM_TEST_VERBOSE === '1';
const log = (...a) => console.log('[browser-test]', ...a);
// Tests for known Palim bugs are `todo` (run and reported, not fatal) unless PALIM_TEST_STRICT=1.
const STRICT = process.env.PALIM_TEST_STRICT === '1';
const knownBug = (why) => (SKIP || STRICT ? false : `known Palim bug: ${why}`);
const SIMULCAST_BUG = 'forwards every simulcast encoding under its own SSRC (media.md §3.3/§3.5: one encoding, projected onto the primary SSRC)';

let bridge = null;
let browser = null;

before(async () => {
  if (!CFG) return;
  bridge = await startBridge(CFG);
  log(`bridge REST at ${bridge.rest} (${CFG.kind})`);
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (bridge) await bridge.stop();
});

function rest() {
  return new ColibriRest(bridge.rest, { log: VERBOSE ? (l) => log(l) : () => {} });
}

/** One line per participant with the stats the brief asks to see. */
function describeStats(name, s) {
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
      parts.push(`out video ssrc=${o.ssrc} ${o.codec} frames=${o.framesEncoded} ${o.frameWidth ?? 0}x${o.frameHeight ?? 0} pkts=${o.packetsSent} limit=${o.qualityLimitationReason} pli=${o.pliCount} nack=${o.nackCount}`);
    } else {
      parts.push(`out audio ssrc=${o.ssrc} pkts=${o.packetsSent}`);
    }
  }
  return parts.join(' | ');
}

/** Poll a participant's stats until `check(stats)` is true or the timeout passes. */
async function waitStats(p, check, timeoutMs = TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let s = await p.stats();
  while (!check(s) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    s = await p.stats();
  }
  return s;
}

function inboundFor(stats, kind, ssrc) {
  return stats.inbound.find((i) => i.kind === kind && i.ssrc === ssrc);
}

/**
 * Jicofo + LJM for N participants: allocate each and send each its session-initiate. Then, per
 * participant, its session-accept goes to the bridge (transport + sources) and its sources go to
 * everybody else as a Jingle source-add. The two messages are independent, and `order` picks
 * which one lands first:
 *  - 'sources-first' (default): the other pages know the sources before the bridge forwards any
 *    media of them. The media checks then do not depend on what the bridge does with media that
 *    nobody has been told about.
 *  - 'late': all accepts first, then the source-adds `lateMs` later, so the bridge is already
 *    forwarding media that the receivers have not been told about (a slow client).
 */
async function meeting(focus, names, { bad = new Set(), order = 'sources-first', lateMs = 3000 } = {}) {
  const ps = [];
  for (const name of names) {
    const page = await browser.newPage(name);
    ps.push(await focus.join(page, name));
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
function signalled(p) {
  const out = new Set();
  for (const r of p.remotes) {
    if (r.audio) out.add(r.audio.ssrc);
    if (r.video) {
      out.add(r.video.ssrc);
      if (r.video.rtx) out.add(r.video.rtx);
    }
  }
  return out;
}

async function dumpOnFailure(t, ps) {
  for (const p of ps) {
    t.diagnostic(describeStats(p.endpointId, await p.stats()));
    if (VERBOSE) t.diagnostic(`${p.endpointId} page log: ${(await p.pageLog()).join(' | ')}`);
  }
}

async function expectDecodes(t, receiver, sender) {
  const remote = receiver.remotes.find((r) => r.endpointId === sender.endpointId);
  assert.ok(remote && remote.video, `${receiver.endpointId} was told ${sender.endpointId}'s video source`);
  const s = await waitStats(receiver, (st) => (inboundFor(st, 'video', remote.video.ssrc)?.framesDecoded ?? 0) > MIN_FRAMES);
  t.diagnostic(describeStats(receiver.endpointId, s));
  const v = inboundFor(s, 'video', remote.video.ssrc);
  assert.ok(v, `${receiver.endpointId} has an inbound-rtp for ${sender.endpointId}'s primary video SSRC ${remote.video.ssrc} (inbound: ${JSON.stringify(s.inbound.map((i) => [i.kind, i.ssrc]))})`);
  assert.ok(v.framesDecoded > MIN_FRAMES, `${receiver.endpointId} decoded ${v.framesDecoded} frames of ${sender.endpointId}'s video within ${TIMEOUT_MS} ms (need > ${MIN_FRAMES})`);
  assert.ok(v.frameWidth > 0 && v.frameHeight > 0);
}

async function expectAudio(t, receiver, sender) {
  const remote = receiver.remotes.find((r) => r.endpointId === sender.endpointId);
  assert.ok(remote && remote.audio);
  const s = await waitStats(receiver, (st) => (inboundFor(st, 'audio', remote.audio.ssrc)?.packetsReceived ?? 0) > 0);
  const a = inboundFor(s, 'audio', remote.audio.ssrc);
  t.diagnostic(`${receiver.endpointId} ← ${sender.endpointId} audio ssrc=${remote.audio.ssrc}: packetsReceived=${a && a.packetsReceived} lost=${a && a.packetsLost}`);
  assert.ok(a && a.packetsReceived > 0, `${receiver.endpointId} received audio packets from ${sender.endpointId}`);
}

function expectTransport(s, name) {
  const t = s.transport || {};
  assert.equal(t.dtlsState, 'connected', `${name} dtlsState`);
  assert.equal(t.dtlsRole, 'client', `${name} is the DTLS client (a=setup:active)`);
  assert.equal(t.iceRole, 'controlled', `${name} is ICE-controlled (the bridge controls)`);
  assert.ok(t.srtpCipher, `${name} negotiated an SRTP profile`);
  assert.equal(s.connectionState, 'connected', `${name} connectionState`);
}

describe('two Chromium pages talk through Palim', () => {
  let focus;
  let ps = [];

  before(async () => {
    if (SKIP) return;
    focus = new Focus(rest());
    ps = await meeting(focus, ['a1b2c3d4', 'b2c3d4e5']);
    log(`meeting ${focus.meetingId} set up: ${ps.map((p) => p.endpointId).join(', ')}`);
  }, { timeout: SETUP_TIMEOUT_MS });

  after(async () => {
    if (focus && focus.participants.length) await focus.expire().catch((e) => log(`expire failed: ${e.message}`));
    for (const p of ps) await p.page.close().catch(() => {});
  });

  test('transport: ICE + DTLS up, browser is DTLS client and ICE-controlled', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    for (const p of ps) {
      const s = await waitStats(p, (st) => st.transport?.dtlsState === 'connected' && st.connectionState === 'connected');
      try {
        expectTransport(s, p.endpointId);
      } catch (e) {
        await dumpOnFailure(t, ps);
        throw e;
      }
    }
  });

  test('bridge channel (SCTP data channel) opens', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    for (const p of ps) {
      const s = await waitStats(p, (st) => st.bridgeChannel === 'open');
      t.diagnostic(`${p.endpointId} bridge channel ${s.bridgeChannel}, received ${JSON.stringify(s.bridgeMessages)}`);
      assert.equal(s.bridgeChannel, 'open', `${p.endpointId} bridge channel state`);
    }
  });

  test('A decodes B\'s video', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    try { await expectDecodes(t, ps[0], ps[1]); } catch (e) { await dumpOnFailure(t, ps); throw e; }
  });

  test('B decodes A\'s video', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    try { await expectDecodes(t, ps[1], ps[0]); } catch (e) { await dumpOnFailure(t, ps); throw e; }
  });

  test('audio flows both ways', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    await expectAudio(t, ps[0], ps[1]);
    await expectAudio(t, ps[1], ps[0]);
  });

  test('receivers get only the SSRCs signalled to them', {
    skip: SKIP, todo: knownBug(SIMULCAST_BUG), timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    for (const p of ps) {
      const s = await p.stats();
      const known = signalled(p);
      const extra = s.inbound.filter((i) => (i.packetsReceived ?? 0) > 0 && !known.has(i.ssrc));
      for (const i of extra) t.diagnostic(`${p.endpointId}: unsignalled ${i.kind} SSRC ${i.ssrc} arrived on mid=${i.mid} (${i.packetsReceived} packets, ${i.framesDecoded ?? '-'} frames)`);
      assert.equal(extra.length, 0, `${p.endpointId} received media on SSRCs never signalled to it: ${extra.map((i) => i.ssrc).join(', ')}`);
    }
  });

  // Reported, not required (a `todo` failure does not fail the run): with transport-cc/REMB
  // feedback from the bridge (media.md §4.1) Chrome's estimate grows and it sends more than the
  // lowest simulcast layer; without it the estimate collapses (notes/chromium-interop.md §3.12).
  test('uplink: senders ramp up beyond the lowest simulcast layer', {
    skip: SKIP, todo: SKIP ? false : 'depends on the bridge\'s uplink feedback', timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    for (const p of ps) {
      const sent = (st) => st.outbound.filter((o) => o.kind === 'video' && (o.framesEncoded ?? 0) > 0).length;
      const s = await waitStats(p, (st) => sent(st) >= 2);
      const layers = s.outbound.filter((o) => o.kind === 'video')
        .map((o) => `${o.ssrc}:${o.frameWidth ?? 0}x${o.frameHeight ?? 0}/${o.framesEncoded ?? 0}f`);
      t.diagnostic(`${p.endpointId} video layers [${layers.join(' ')}] outBwe=${s.pair && s.pair.availableOutgoingBitrate}`);
      assert.ok(sent(s) >= 2, `${p.endpointId} sends ${sent(s)} simulcast layer(s)`);
    }
  });
});

describe('a page with a corrupted fingerprint fails alone', () => {
  let focus;
  let ps = [];
  const BAD = 'c3d4e5f6';

  before(async () => {
    if (SKIP) return;
    focus = new Focus(rest());
    ps = await meeting(focus, ['a1b2c3d4', 'b2c3d4e5', BAD], { bad: new Set([BAD]) });
    log(`meeting ${focus.meetingId} set up with ${BAD}'s fingerprint corrupted`);
  }, { timeout: SETUP_TIMEOUT_MS });

  after(async () => {
    if (focus && focus.participants.length) await focus.expire().catch((e) => log(`expire failed: ${e.message}`));
    for (const p of ps) await p.page.close().catch(() => {});
  });

  test('the corrupted page ends in DTLS failed / connection failed', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    const bad = ps[2];
    const s = await waitStats(bad, (st) => st.transport?.dtlsState === 'failed' || st.connectionState === 'failed');
    t.diagnostic(describeStats(bad.endpointId, s));
    assert.ok(s.transport?.dtlsState === 'failed' || s.connectionState === 'failed',
      `dtlsState=${s.transport?.dtlsState} connectionState=${s.connectionState}`);
    assert.notEqual(s.transport?.dtlsState, 'connected');
  });

  test('the two good pages keep decoding each other', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    try {
      await expectDecodes(t, ps[0], ps[1]);
      await expectDecodes(t, ps[1], ps[0]);
      // Still decoding now that the third page has failed: frames keep coming.
      const before = await Promise.all(ps.slice(0, 2).map((p) => p.stats()));
      await new Promise((r) => setTimeout(r, 3000));
      const later = await Promise.all(ps.slice(0, 2).map((p) => p.stats()));
      for (const [i, p] of ps.slice(0, 2).entries()) {
        const other = ps[1 - i];
        const ssrc = p.remotes.find((r) => r.endpointId === other.endpointId).video.ssrc;
        const f0 = inboundFor(before[i], 'video', ssrc).framesDecoded;
        const f1 = inboundFor(later[i], 'video', ssrc).framesDecoded;
        t.diagnostic(`${p.endpointId} ← ${other.endpointId}: framesDecoded ${f0} → ${f1} over 3 s`);
        assert.ok(f1 > f0, `${p.endpointId} still decodes ${other.endpointId}'s video`);
      }
    } catch (e) { await dumpOnFailure(t, ps); throw e; }
  });
});

// Jicofo's source-add can reach a page after the bridge has started forwarding that sender's
// media (it does whenever the page is slower than the bridge). A JVB-compatible bridge strips the
// sender's MID extension, so Chromium drops the not-yet-signalled SSRCs and accepts the source-add.
describe('source-add arriving after the media', () => {
  let focus;
  let ps = [];
  let setupError = null;

  before(async () => {
    if (SKIP) return;
    focus = new Focus(rest());
    try {
      ps = await meeting(focus, ['d4e5f6a7', 'e5f6a7b8'], { order: 'late' });
    } catch (e) {
      setupError = e;
      ps = focus.participants;
    }
  }, { timeout: SETUP_TIMEOUT_MS });

  after(async () => {
    if (focus && focus.participants.length) await focus.expire().catch((e) => log(`expire failed: ${e.message}`));
    for (const p of ps) await p.page.close().catch(() => {});
  });

  test('late source-add is accepted and both pages decode', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    if (setupError) {
      for (const p of ps) {
        const s = await p.stats();
        t.diagnostic(`${p.endpointId} inbound before the failed source-add: ${JSON.stringify(s.inbound.map((i) => ({ kind: i.kind, ssrc: i.ssrc, mid: i.mid, packets: i.packetsReceived })))}`);
      }
      throw setupError;
    }
    await expectDecodes(t, ps[0], ps[1]);
    await expectDecodes(t, ps[1], ps[0]);
  });
});
