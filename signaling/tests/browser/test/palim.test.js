// Real browsers through the real bridge: headless Chromium pages join a meeting on Palim, driven
// the way Jicofo drives JVB (Colibri2 JSON over the private REST port) and the way lib-jitsi-meet
// drives Chromium (remote offer from Jingle, simulcast munging, bridge channel).
//
// Needs a bridge: PALIM_REST (running), PALIM_BIN or PALIM_CMD (spawned); see README.md.
// Without one, every test here is skipped (and says why).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Focus } from '../lib/focus.js';
import {
  SKIP, TIMEOUT_MS, SETUP_TIMEOUT_MS, log, fixtures, meeting as meetingIn, waitStats, inboundFor,
  describeStats, signalled, dumpOnFailure, expectDecodes, expectAudio, expectTransport,
} from '../lib/harness.js';

const fx = fixtures();
const rest = () => fx.rest();
const meeting = (focus, names, o) => meetingIn(fx.browser, focus, names, o);

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
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    for (const p of ps) {
      const s = await p.stats();
      const known = signalled(p);
      t.diagnostic(`${p.endpointId}: signalled SSRCs ${[...known].join(' ')} (bridge's own: ${focus.feedback.audio} ${focus.feedback.video})`);
      const extra = s.inbound.filter((i) => (i.packetsReceived ?? 0) > 0 && !known.has(i.ssrc));
      for (const i of extra) t.diagnostic(`${p.endpointId}: unsignalled ${i.kind} SSRC ${i.ssrc} arrived on mid=${i.mid} (${i.packetsReceived} packets, ${i.framesDecoded ?? '-'} frames)`);
      assert.equal(extra.length, 0, `${p.endpointId} received media on SSRCs never signalled to it: ${extra.map((i) => i.ssrc).join(', ')}`);
    }
  });

  // With transport-cc feedback from the bridge (media.md §4.1) Chrome's estimate grows and it
  // sends more than the lowest simulcast layer; without it the estimate collapses
  // (notes/chromium-interop.md §3.12). test/simulcast.test.js checks the 720p layer's bitrate.
  test('uplink: senders ramp up beyond the lowest simulcast layer', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
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
