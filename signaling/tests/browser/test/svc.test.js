// SVC through Palim (issue 5): a page prefers AV1 (then VP9) as LJM desktop does and sends one
// L3T3_KEY encoding at 720p (LJM's full-SVC mode: the SIM group is still munged, encodings 1 and
// 2 are inactive). A receiver asking 180 decodes ≤ 180p and receives well under the sender's
// bitrate; asking 720 it decodes 720p (media.md §2.5 "Codecs", §3.3, §10.49, §10.50).
//
// Needs a bridge (PALIM_BIN, PALIM_REST or PALIM_CMD); see README.md.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Focus } from '../lib/focus.js';
import {
  SKIP, TIMEOUT_MS, SETUP_TIMEOUT_MS, log, fixtures, meeting, waitStats, describeStats,
  sendConstraints, constraintsFor, primaryVideoSsrc, monitor, longestStall, allowedStall, describeSamples, knownBug, sleep,
} from '../lib/harness.js';

const fx = fixtures();

// Per codec: the reason a test is still `todo` against main (false: required).
const STALL = knownBug('the 180 → 720 up-switch of an L3T3_KEY stream stalls under load: VP9 0.5–1.5 s in 8 of 17 svc runs after the K-SVC fixes (0 of 10 before them, at load average 5–7 instead of 10–12; 3 of 4 with the K-SVC bitrate change reverted at load 10–12, so load, not that change): the keyframe is asked 1 ms after the target change and comes, then +139–238 packets, +6–12 frames received, no keyframe decoded, no loss/NACK/PLI. AV1 0.3–1.0 s, within its allowance in every run (docs/projection.md)');
// VP9_UP was a `todo` until the allocator stopped offering an SVC source's empty SIM encodings
// (shard.rs `svc_encodings`): 16 of 17 runs passed before, 3 of 3 after (720p in 181 ms each).
// AV1_DOWN (720p coming back at "asking 180", 77–98 % of the bytes) matched a projection made
// Generic before the codec was known; fixed by Projection::set_codec; passed 23 of 23 runs.
const PENDING = { AV1: { down: false, up: false, stall: STALL }, VP9: { down: false, up: false, stall: STALL } };
const UP_MS = 5000; // the brief asks "decodes 720" for SVC; 3 s is the simulcast bound
const SCALABILITY_MODE = 'L3T3_KEY';

for (const codec of ['AV1', 'VP9']) {
  describe(`${codec} ${SCALABILITY_MODE} 720p`, () => {
    let focus;
    let ps = [];
    let a;
    let b;
    let unsupported = false;
    const SENDER = codec === 'AV1' ? 'a1000001' : 'a9000001';
    const RECEIVER = codec === 'AV1' ? 'b1000001' : 'b9000001';

    before(async () => {
      if (SKIP) return;
      // Chromium must be able to encode the codec, else the whole group is skipped with the reason.
      const probe = await fx.browser.newPage(`${codec}-probe`);
      const caps = await probe.evaluate(() => RTCRtpSender.getCapabilities('video').codecs.map((c) => c.mimeType.toLowerCase()));
      await probe.close();
      if (!caps.includes(`video/${codec.toLowerCase()}`)) {
        unsupported = `this Chromium cannot encode ${codec} (RTCRtpSender.getCapabilities: ${[...new Set(caps)].join(', ')})`;
        return;
      }
      focus = new Focus(fx.rest());
      ps = await meeting(fx.browser, focus, [SENDER, RECEIVER], {
        opts: {
          [SENDER]: { width: 1280, height: 720, frameRate: 30, source: 'canvas', codec, scalabilityMode: SCALABILITY_MODE },
          [RECEIVER]: { width: 320, height: 180, frameRate: 15 },
        },
      });
      [a, b] = ps;
      log(`meeting ${focus.meetingId} set up: ${SENDER} sends ${codec} ${SCALABILITY_MODE}, ${RECEIVER} receives`);
    }, { timeout: SETUP_TIMEOUT_MS });

    after(async () => {
      if (focus && focus.participants.length) await focus.expire().catch((e) => log(`expire failed: ${e.message}`));
      for (const p of ps) await p.page.close().catch(() => {});
    });

    test(`the sender encodes ${codec} ${SCALABILITY_MODE} at 720p`, { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
      if (unsupported) return t.skip(unsupported);
      const primary = a.simulcastState.sim[0];
      const s = await waitStats(a, (st) => {
        const o = st.outbound.find((x) => x.kind === 'video' && x.ssrc === primary);
        return o && o.frameHeight === 720 && (o.framesEncoded ?? 0) > 30;
      });
      t.diagnostic(describeStats(SENDER, s));
      const o = s.outbound.find((x) => x.kind === 'video' && x.ssrc === primary);
      assert.ok(o, `outbound-rtp on the primary SSRC ${primary}`);
      assert.equal(o.codec, `video/${codec}`, `encodes ${codec}`);
      assert.equal(o.scalabilityMode, SCALABILITY_MODE, 'scalabilityMode');
      assert.equal(o.frameHeight, 720, 'top spatial layer is 720p');
      // (An inactive encoding may still show one packet: Chromium sends one before setParameters.)
      const others = s.outbound.filter((x) => x.kind === 'video' && x.ssrc !== primary && (x.framesEncoded ?? 0) > 0);
      assert.equal(others.length, 0, `encodings 1 and 2 encode nothing (${others.map((x) => x.ssrc)})`);
    });

    test('receiver decodes the SVC stream', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
      if (unsupported) return t.skip(unsupported);
      const ssrc = primaryVideoSsrc(b, a);
      const s = await waitStats(b, (st) => (st.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc)?.framesDecoded ?? 0) > 30);
      t.diagnostic(describeStats(RECEIVER, s));
      const i = s.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc);
      assert.ok(i && i.framesDecoded > 30, `${RECEIVER} decoded ${i && i.framesDecoded} frames of ${SENDER} (need > 30)`);
      assert.equal(i.codec, `video/${codec}`);
    });

    test('receiver asking 180 decodes ≤ 180p and gets well under the sender\'s bitrate', {
      skip: SKIP, todo: PENDING[codec].down, timeout: 3 * TIMEOUT_MS,
    }, async (t) => {
      if (unsupported) return t.skip(unsupported);
      const ssrc = primaryVideoSsrc(b, a);
      const primary = a.simulcastState.sim[0];
      await sendConstraints(b, constraintsFor(`${SENDER}-v0`, 180));
      await waitStats(b, (st) => {
        const i = st.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc);
        return i && i.frameHeight > 0 && i.frameHeight <= 180;
      }, 8000);
      await sleep(1000); // frames of the higher layers in flight drain
      const [a0, b0] = [await a.stats(), await b.stats()];
      const { samples } = await monitor(b, ssrc, 3000);
      const [a1, b1] = [await a.stats(), await b.stats()];
      const sent = (a1.outbound.find((x) => x.ssrc === primary)?.bytesSent ?? 0) - (a0.outbound.find((x) => x.ssrc === primary)?.bytesSent ?? 0);
      const got = (b1.inbound.find((x) => x.ssrc === ssrc)?.bytesReceived ?? 0) - (b0.inbound.find((x) => x.ssrc === ssrc)?.bytesReceived ?? 0);
      t.diagnostic(describeSamples(samples));
      t.diagnostic(`over ~3 s: ${SENDER} sent ${sent} bytes, ${RECEIVER} received ${got} bytes (${sent ? ((100 * got) / sent).toFixed(0) : '-'} %)`);
      assert.ok(samples.length > 5 && samples.every((x) => x.frameHeight > 0 && x.frameHeight <= 180),
        `decoded heights ${[...new Set(samples.map((x) => x.frameHeight))]} (need ≤ 180)`);
      assert.ok(samples[samples.length - 1].framesDecoded > samples[0].framesDecoded, 'frames keep being decoded');
      assert.ok(sent > 0, 'the sender sends');
      assert.ok(got < 0.5 * sent, `received ${got} bytes of the ${sent} sent (need < 50 %)`);
    });

    let upSwitch = null; // { t0, samples } of the 720 test, for the freeze test

    test('receiver asking 720 decodes 720p', { skip: SKIP, todo: PENDING[codec].up, timeout: 3 * TIMEOUT_MS }, async (t) => {
      if (unsupported) return t.skip(unsupported);
      const ssrc = primaryVideoSsrc(b, a);
      upSwitch = await monitor(b, ssrc, UP_MS, {
        during: () => sendConstraints(b, constraintsFor(`${SENDER}-v0`, 720)),
      });
      const { t0, samples } = upSwitch;
      t.diagnostic(describeSamples(samples));
      t.diagnostic(describeStats(RECEIVER, await b.stats()));
      assert.ok(samples.length > 0 && samples[0].frameHeight > 0 && samples[0].frameHeight <= 180,
        `starts from ≤ 180p (the previous test's constraint); decoding ${samples[0] && samples[0].frameHeight}p`);
      const hd = samples.find((x) => x.t >= t0 && x.frameHeight >= 720);
      if (!hd) {
        // Diagnose: slow (e.g. the downlink estimate ramps) or never?
        const more = await monitor(b, ssrc, 10000, { periodMs: 250 });
        const late = more.samples.find((x) => x.frameHeight >= 720);
        t.diagnostic(`no 720p within ${UP_MS} ms; next 10 s: ${describeSamples(more.samples)}; 720p ${late ? `after ${(late.t - t0).toFixed(0)} ms` : 'never'}`);
        t.diagnostic(describeStats(SENDER, await a.stats()));
      }
      assert.ok(hd, `720p decoded within ${UP_MS} ms (heights ${[...new Set(samples.map((x) => x.frameHeight))]})`);
      t.diagnostic(`720p after ${(hd.t - t0).toFixed(0)} ms; longest stall ${longestStall(samples).toFixed(0)} ms`);
    });

    test('the up-switch to 720 has no freeze > 500 ms (or 3 frame intervals)', { skip: SKIP, todo: PENDING[codec].stall, timeout: TIMEOUT_MS }, async (t) => {
      if (unsupported) return t.skip(unsupported);
      assert.ok(upSwitch && upSwitch.samples.length > 10, 'the 720 test recorded the switch');
      const stall = longestStall(upSwitch.samples);
      const allowed = allowedStall(upSwitch.samples);
      t.diagnostic(`longest stall ${stall.toFixed(0)} ms during the ${UP_MS} ms after asking 720 (allowed ${allowed.toFixed(0)})`);
      assert.ok(stall <= allowed, `longest stall ${stall.toFixed(0)} ms (need ≤ ${allowed.toFixed(0)}: 500 ms or 3 mean frame intervals)`);
    });
  });
}
