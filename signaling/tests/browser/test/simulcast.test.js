// VP8 simulcast through Palim, driven over the bridge channel as lib-jitsi-meet drives JVB
// (media.md §2, §3, §10): uplink ramp-up to the 720p layer (issue 6), the messages the bridge
// sends, per-receiver layer selection by ReceiverVideoConstraints (180 → 720 without a freeze),
// bad input on the channel (issue 4), and lastN with three senders.
//
// Needs a bridge (PALIM_BIN, PALIM_REST or PALIM_CMD); see README.md.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Focus } from '../lib/focus.js';
import {
  SKIP, TIMEOUT_MS, SETUP_TIMEOUT_MS, log, fixtures, meeting, waitStats, describeStats,
  BRIDGE_TO_CLIENT, shapeProblems, messagesOf, waitMessage, sendConstraints, constraintsFor, primaryVideoSsrc, monitor,
  longestStall, allowedStall, rateBps, describeSamples, sleep, bridgeDrops,
} from '../lib/harness.js';

const fx = fixtures();

const SENDER = 'a1b2c3d4';
const RECEIVER = 'b2c3d4e5';
const UPLINK_MS = 10000;
const UPLINK_BPS = 1000000;

/**
 * Issue 6: once connected, the sender's 720p simulcast layer (third SIM SSRC) sends > 1 Mbps over
 * some 1 s window within 10 s. Prints the per-second series and the bridge's drop counters.
 */
async function expectUplink(t, a) {
  const name = a.endpointId;
  const up = await waitStats(a, (st) => st.connectionState === 'connected');
  assert.equal(up.connectionState, 'connected', `${name} connected`);
  const top = a.simulcastState.sim[2];
  const pick = (st) => st.outbound.find((o) => o.kind === 'video' && o.ssrc === top);
  const deadline = Date.now() + UPLINK_MS;
  let prev = await a.stats();
  let best = 0;
  let last = prev;
  const series = []; // per second: top-layer Mbps / Chrome's outgoing estimate Mbps
  while (Date.now() < deadline) {
    await sleep(1000);
    const cur = await a.stats();
    const bps = rateBps(prev, cur, pick, 'bytesSent');
    series.push(`${(bps / 1e6).toFixed(2)}/${((cur.pair?.availableOutgoingBitrate ?? 0) / 1e6).toFixed(2)}`);
    best = Math.max(best, bps);
    prev = cur;
    last = cur;
    if (bps > UPLINK_BPS) break;
  }
  const o = pick(last) || {};
  t.diagnostic(`${name} top layer ssrc=${top} ${o.frameWidth ?? 0}x${o.frameHeight ?? 0} best ${(best / 1e6).toFixed(2)} Mbps over 1 s, limit=${o.qualityLimitationReason} target=${o.targetBitrate} outBwe=${last.pair && last.pair.availableOutgoingBitrate}`);
  t.diagnostic(`per second, top layer / outgoing estimate (Mbps): ${series.join(' ')}`);
  const ssc = (await messagesOf(a)).filter((x) => x.msg.colibriClass === 'SenderSourceConstraints').map((x) => x.msg.maxHeight);
  t.diagnostic(`${name} SenderSourceConstraints so far: ${JSON.stringify(ssc)} (applied by the page: ${await a.page.evaluate(() => window.palimClient.applySenderConstraints)})`);
  t.diagnostic(`bridge drop counters: ${JSON.stringify(await bridgeDrops(fx.bridge.rest))}`);
  t.diagnostic(describeStats(name, last));
  assert.ok(best > UPLINK_BPS, `${name}'s 720p layer (ssrc ${top}) reached ${(best / 1e6).toFixed(2)} Mbps within ${UPLINK_MS / 1000} s (need > 1 Mbps)`);
  assert.equal(o.frameHeight, 720, 'the top layer encodes 720p');
}

describe('VP8 simulcast 720p: uplink, layer selection, bridge channel', () => {
  let focus;
  let ps = [];
  let a;
  let b;

  before(async () => {
    if (SKIP) return;
    focus = new Focus(fx.rest());
    ps = await meeting(fx.browser, focus, [SENDER, RECEIVER], {
      opts: {
        // The sender does not apply SenderSourceConstraints here (LJM does): see the last
        // describe for why the layer checks need a sender whose top layer is reliably on.
        [SENDER]: { width: 1280, height: 720, frameRate: 30, source: 'canvas', applySenderConstraints: false },
        // The receiver sends a small picture of its own; the 1 MiB test needs a bigger
        // a=max-message-size than LJM's 262144 (a hostile client is not bound by it).
        [RECEIVER]: { width: 320, height: 180, maxMessageSize: 4 * 1024 * 1024 },
      },
    });
    [a, b] = ps;
    log(`meeting ${focus.meetingId} set up: ${SENDER} sends 720p simulcast, ${RECEIVER} receives`);
  }, { timeout: SETUP_TIMEOUT_MS });

  after(async () => {
    if (focus && focus.participants.length) await focus.expire().catch((e) => log(`expire failed: ${e.message}`));
    for (const p of ps) await p.page.close().catch(() => {});
  });

  test('uplink: the 720p simulcast layer exceeds 1 Mbps within 10 s', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    await expectUplink(t, a);
  });

  test('bridge channel: ForwardedSources arrives after open without being asked', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const m = await waitMessage(b, (x) => x.colibriClass === 'ForwardedSources', 5000);
    t.diagnostic(`${RECEIVER} got ${JSON.stringify(m && m.msg)}`);
    assert.ok(m, `${RECEIVER} received a ForwardedSources (media.md §10.24)`);
    assert.ok(Array.isArray(m.msg.forwardedSources), 'forwardedSources is an array');
  });

  test('bridge channel: every message from the bridge is JSON with a bridge→client colibriClass and its fields', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const all = [...(await messagesOf(a)), ...(await messagesOf(b))];
    t.diagnostic(`classes: ${JSON.stringify(all.map((x) => x.msg.colibriClass || 'raw'))}`);
    assert.ok(all.length > 0, 'the bridge sent at least one message on the channel');
    for (const { msg } of all) {
      assert.ok(!('raw' in msg), `not JSON: ${msg.raw}`);
      assert.equal(typeof msg.colibriClass, 'string', `has colibriClass: ${JSON.stringify(msg)}`);
      assert.ok(BRIDGE_TO_CLIENT.has(msg.colibriClass), `bridge→client class: ${msg.colibriClass}`);
      assert.deepEqual(shapeProblems(msg), [], `shape of ${JSON.stringify(msg)}`);
    }
  });

  // Chrome scales every simulcast encoding with its input (bandwidth and CPU adaptation, see
  // the sender's resChanges below): encoding 2 may carry 180p for a while and 720p again
  // after the next keyframe. The bridge cuts such an encoding at its larger keyframe
  // (sfu shard.rs `cut_outgrown`); before, this test saw 720p/360p frames in 2 of 16 runs.
  test('receiver asking maxHeight 180 decodes ≤ 180p', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    const ssrc = primaryVideoSsrc(b, a);
    await sendConstraints(b, constraintsFor(`${SENDER}-v0`, 180));
    // Allow the switch (down-switch waits for a keyframe of the lowest layer), then watch 2 s.
    const settled = await waitStats(b, (st) => {
      const i = st.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc);
      return i && i.framesDecoded > 0 && i.frameHeight > 0 && i.frameHeight <= 180;
    }, 8000);
    t.diagnostic(describeStats(RECEIVER, settled));
    t.diagnostic(`before: ${describeStats(SENDER, await a.stats())}`);
    const { samples } = await monitor(b, ssrc, 2000);
    t.diagnostic(describeSamples(samples));
    t.diagnostic(`after: ${describeStats(SENDER, await a.stats())}`);
    assert.ok(samples.length > 5, `inbound-rtp for ${SENDER}'s primary SSRC ${ssrc} exists`);
    const over = samples.filter((s) => s.frameHeight > 180);
    assert.equal(over.length, 0, `decoded heights ${[...new Set(samples.map((s) => s.frameHeight))]} (need ≤ 180)`);
    assert.ok(samples[samples.length - 1].framesDecoded > samples[0].framesDecoded, 'frames keep being decoded');
  });

  test('sender is told the receivers\' max height (SenderSourceConstraints)', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const m = await waitMessage(a, (x) => x.colibriClass === 'SenderSourceConstraints' && x.sourceName === `${SENDER}-v0`, 3000);
    const all = (await messagesOf(a)).filter((x) => x.msg.colibriClass === 'SenderSourceConstraints').map((x) => x.msg.maxHeight);
    t.diagnostic(`${SENDER} SenderSourceConstraints maxHeight sequence: ${JSON.stringify(all)}`);
    assert.ok(m, `${SENDER} received SenderSourceConstraints for ${SENDER}-v0`);
    assert.equal(all[all.length - 1], 180, 'the latest equals the only receiver\'s constraint (180)');
  });

  test('receiver asking 720 decodes 720p within 3 s, no freeze > 500 ms (or 3 frame intervals)', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const ssrc = primaryVideoSsrc(b, a);
    const { t0, samples } = await monitor(b, ssrc, 4500, {
      during: () => sendConstraints(b, constraintsFor(`${SENDER}-v0`, 720)),
    });
    t.diagnostic(describeSamples(samples));
    assert.ok(samples.length > 0 && samples[0].frameHeight > 0 && samples[0].frameHeight <= 180,
      `the switch starts from ≤ 180p (the previous test's constraint); decoding ${samples[0] && samples[0].frameHeight}p`);
    const hd = samples.find((s) => s.t >= t0 && s.frameHeight >= 720);
    const after = await b.stats();
    t.diagnostic(describeStats(RECEIVER, after));
    t.diagnostic(describeStats(SENDER, await a.stats()));
    assert.ok(hd, `${RECEIVER} decoded 720p of ${SENDER} within 4.5 s (heights: ${[...new Set(samples.map((s) => s.frameHeight))]})`);
    t.diagnostic(`720p decoded ${(hd.t - t0).toFixed(0)} ms after the constraints; longest stall ${longestStall(samples).toFixed(0)} ms`);
    assert.ok(hd.t - t0 <= 3000, `720p decoded ${(hd.t - t0).toFixed(0)} ms after the constraints (need ≤ 3000)`);
    const stall = longestStall(samples);
    const allowed = allowedStall(samples);
    assert.ok(stall <= allowed, `longest stall ${stall.toFixed(0)} ms (need ≤ ${allowed.toFixed(0)}: 500 ms or 3 mean frame intervals)`);
    const f0 = samples[0];
    const f1 = samples[samples.length - 1];
    assert.ok(f1.totalFreezesDuration - f0.totalFreezesDuration <= 0.5, `freeze time ${(f1.totalFreezesDuration - f0.totalFreezesDuration).toFixed(3)} s`);
  });

  test('bad input on the channel (malformed JSON, unknown class, 1 MiB): channel, association and media survive', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const ssrc = primaryVideoSsrc(b, a);
    const garbage = [
      '{"colibriClass":"ReceiverVideoConstraints",', // truncated JSON
      'not json at all',
      '[]',
      '{"colibriClass":"NoSuchClass","x":1}',
      '{"noClass":true}',
      '{"colibriClass":"ReceiverVideoConstraints","lastN":"many"}',
      // The next three would stop this page's video if the bridge took them: each must be
      // dropped whole (duplicate key: media.md §2.2, §10.19; maxHeight -7: §2.4; lastN type).
      `{"colibriClass":"ReceiverVideoConstraints","lastN":0,"lastN":0}`,
      `{"colibriClass":"ReceiverVideoConstraints","lastN":0,"defaultConstraints":{"maxHeight":-7}}`,
      '{"colibriClass":"LastNChangedEvent","lastN":"zero"}',
      '\u0000\u0001\u0002',
    ];
    for (const g of garbage) await b.page.evaluate((x) => window.palimClient.sendRaw(x), g);
    // 1 MiB of JSON. Chromium sends at most pc.sctp.maxMessageSize (256 KiB in Chromium 156,
    // whatever the offer says), so when 1 MiB does not fit in one message it sends one message
    // of the largest size plus 1 MiB of JSON cut into max-size pieces (each invalid on its own).
    // The bridge refuses what exceeds its limit (64 KiB) and must keep the association.
    const big = await b.page.evaluate(() => {
      const c = window.palimClient;
      const max = c.pc.sctp ? c.pc.sctp.maxMessageSize : 0;
      const MIB = 1024 * 1024;
      const json = (n) => {
        const head = '{"colibriClass":"EndpointMessage","to":"","msgPayload":{"pad":"';
        const tail = '"}}';
        return head + 'x'.repeat(n - head.length - tail.length) + tail;
      };
      const sent = [];
      if (max >= MIB) {
        c.sendRaw(json(MIB));
        sent.push(MIB);
      } else {
        c.sendRaw(json(max));
        sent.push(max);
        const whole = json(MIB);
        for (let i = 0; i < whole.length; i += max) {
          c.sendRaw(whole.slice(i, i + max));
          sent.push(Math.min(max, whole.length - i));
        }
      }
      return { max, sent, buffered: c.dc.bufferedAmount };
    });
    t.diagnostic(`sent ${garbage.length} malformed messages, then big ones (maxMessageSize ${big.max}): ${JSON.stringify(big.sent)}, bufferedAmount ${big.buffered}`);
    // Wait until SCTP has delivered it all (the bridge acknowledged every chunk), then a little.
    const drained = Date.now() + 10000;
    let buffered = big.buffered;
    while (buffered > 0 && Date.now() < drained) {
      await sleep(200);
      buffered = await b.page.evaluate(() => window.palimClient.dc.bufferedAmount);
    }
    t.diagnostic(`bufferedAmount ${buffered} (0 = the bridge took every byte)`);
    assert.equal(buffered, 0, 'the bridge acknowledged all the data (SCTP still flowing)');
    await sleep(1000);
    const mid = await b.stats();
    t.diagnostic(describeStats(RECEIVER, mid));
    assert.equal(mid.bridgeChannel, 'open', 'the bridge channel is still open');
    assert.equal(mid.connectionState, 'connected', 'the PeerConnection is still connected');
    const health = await fetch(`${fx.bridge.rest}/about/health`).then((r) => r.status).catch((e) => e.message);
    assert.equal(health, 200, 'the bridge is healthy');
    // Media still flows to the page that sent the garbage (none of the lastN-0 messages took).
    const ssrcNow = mid.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc);
    const later = await waitStats(b, (st) => (st.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc)?.framesDecoded ?? 0) > (ssrcNow?.framesDecoded ?? 0) + 5, 5000);
    assert.ok((later.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc)?.framesDecoded ?? 0) > (ssrcNow?.framesDecoded ?? 0), 'video still decoded');
  });

  test('after the bad input, valid constraints still take effect', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const ssrc = primaryVideoSsrc(b, a);
    // Ask for the other end of 180/720 from the height decoded now, and see it move there.
    const now = await b.stats();
    const cur = now.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc);
    assert.ok(cur, `inbound for ${ssrc}`);
    const up = (cur.frameHeight ?? 0) <= 180;
    await sendConstraints(b, constraintsFor(`${SENDER}-v0`, up ? 720 : 180));
    const s = await waitStats(b, (st) => {
      const i = st.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc);
      return i && (up ? i.frameHeight >= 720 : i.frameHeight > 0 && i.frameHeight <= 180);
    }, 8000);
    const i = s.inbound.find((x) => x.kind === 'video' && x.ssrc === ssrc);
    t.diagnostic(`decoding ${cur.frameHeight}p, asked ${up ? 720 : 180}: now ${i && i.frameHeight}p`);
    if (up) assert.ok(i.frameHeight >= 720, `decodes ${i.frameHeight}p after asking 720`);
    else assert.ok(i.frameHeight > 0 && i.frameHeight <= 180, `decodes ${i.frameHeight}p after asking 180`);
    assert.equal(s.bridgeChannel, 'open');
  });

  test('ClientHello is answered with ServerHello on the same channel', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const from = (await messagesOf(b)).length;
    await b.page.evaluate(() => window.palimClient.sendBridge({ colibriClass: 'ClientHello' }));
    const m = await waitMessage(b, (x) => x.colibriClass === 'ServerHello', 3000, from);
    t.diagnostic(`reply: ${JSON.stringify(m && m.msg)}`);
    assert.ok(m, 'ServerHello received (media.md §10.15)');
  });
});

// Three senders, one receiver with lastN = 1: one video forwarded (media.md §3.2 step 2, §10.27).
describe('lastN with three senders', () => {
  let focus;
  let ps = [];
  const R = 'c0ffee01';
  const SENDERS = ['c0ffee02', 'c0ffee03', 'c0ffee04'];

  before(async () => {
    if (SKIP) return;
    focus = new Focus(fx.rest());
    const small = { width: 320, height: 180, frameRate: 15 };
    // The senders want no video themselves (lastN 0), to spare the 2-core box the decoding.
    const quiet = { ...small, constraints: { lastN: 0, assumedBandwidthBps: -1, defaultConstraints: { maxHeight: 0 }, constraints: {}, onStageSources: [], selectedSources: [] } };
    // Only the first sender's mic is on, so the speech-activity order (dominant speaker first,
    // media.md §3.2 step 1) is stable: lastN 1 must pick that sender.
    const muted = { ...quiet, audioEnabled: false };
    ps = await meeting(fx.browser, focus, [R, ...SENDERS], {
      opts: { [R]: { ...small, audioEnabled: false }, [SENDERS[0]]: quiet, [SENDERS[1]]: muted, [SENDERS[2]]: muted },
    });
    log(`meeting ${focus.meetingId} set up: ${R} receives from ${SENDERS.join(', ')}`);
  }, { timeout: SETUP_TIMEOUT_MS });

  after(async () => {
    if (focus && focus.participants.length) await focus.expire().catch((e) => log(`expire failed: ${e.message}`));
    for (const p of ps) await p.page.close().catch(() => {});
  });

  /** Bytes received on each sender's primary SSRC over `ms`. */
  async function growth(r, senders, ms) {
    const s0 = await r.stats();
    await sleep(ms);
    const s1 = await r.stats();
    return senders.map((snd) => {
      const ssrc = primaryVideoSsrc(r, snd);
      const b0 = s0.inbound.find((x) => x.ssrc === ssrc)?.bytesReceived ?? 0;
      const b1 = s1.inbound.find((x) => x.ssrc === ssrc)?.bytesReceived ?? 0;
      return { ep: snd.endpointId, ssrc, bytes: b1 - b0 };
    });
  }

  test('all three senders reach the receiver with lastN -1', { skip: SKIP, timeout: 3 * TIMEOUT_MS }, async (t) => {
    const [r, ...senders] = ps;
    await sendConstraints(r, { lastN: -1, assumedBandwidthBps: -1, defaultConstraints: { maxHeight: 180 }, constraints: {}, onStageSources: [], selectedSources: [] });
    const ssrcs = senders.map((snd) => primaryVideoSsrc(r, snd));
    const s = await waitStats(r, (st) => ssrcs.every((x) => (st.inbound.find((i) => i.ssrc === x)?.framesDecoded ?? 0) > 10));
    t.diagnostic(describeStats(R, s));
    for (const x of ssrcs) assert.ok((s.inbound.find((i) => i.ssrc === x)?.framesDecoded ?? 0) > 10, `${R} decodes SSRC ${x}`);
  });

  test('lastN 1: only the dominant speaker\'s video is forwarded (ForwardedSources and inbound bytes)', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const [r, ...senders] = ps;
    const speaker = SENDERS[0];
    const from = (await messagesOf(r)).length;
    await sendConstraints(r, { lastN: 1, assumedBandwidthBps: -1, defaultConstraints: { maxHeight: 180 }, constraints: {}, onStageSources: [], selectedSources: [] });
    await r.page.evaluate(() => window.palimClient.sendBridge({ colibriClass: 'LastNChangedEvent', lastN: 1 }));
    await sleep(2000); // one allocation; frames in flight drain
    const g = await growth(r, senders, 3000);
    const msgs = (await messagesOf(r, from)).map((x) => x.msg);
    const fwd = msgs.filter((m) => m.colibriClass === 'ForwardedSources').map((m) => m.forwardedSources);
    const speakers = msgs.filter((m) => m.colibriClass === 'DominantSpeakerEndpointChangeEvent').map((m) => m.dominantSpeakerEndpoint);
    t.diagnostic(`bytes over 3 s per sender: ${JSON.stringify(g)}; ForwardedSources since: ${JSON.stringify(fwd)}; dominant speakers since: ${JSON.stringify(speakers)}`);
    const flowing = g.filter((x) => x.bytes > 5000);
    const stopped = g.filter((x) => x.bytes < 2000);
    assert.deepEqual(flowing.map((x) => x.ep), [speaker], `exactly one sender's video flows, the only one with its mic on (${speaker})`);
    assert.equal(stopped.length, 2, 'the other two are not forwarded');
    assert.ok(fwd.length > 0, 'a ForwardedSources was sent after the change');
    for (const f of fwd) assert.ok(f.length <= 1, `ForwardedSources never lists more than lastN = 1: ${JSON.stringify(f)}`);
    assert.deepEqual(fwd[fwd.length - 1], [`${speaker}-v0`], 'ForwardedSources names the forwarded one');
  });

  test('lastN 0 (LastNChangedEvent): no video, ForwardedSources []', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    const [r, ...senders] = ps;
    const from = (await messagesOf(r)).length;
    await r.page.evaluate(() => window.palimClient.sendBridge({ colibriClass: 'LastNChangedEvent', lastN: 0 }));
    await sleep(2000);
    const g = await growth(r, senders, 3000);
    const fwd = (await messagesOf(r, from)).filter((x) => x.msg.colibriClass === 'ForwardedSources').map((x) => x.msg.forwardedSources);
    t.diagnostic(`bytes over 3 s per sender: ${JSON.stringify(g)}; ForwardedSources since: ${JSON.stringify(fwd)}`);
    for (const x of g) assert.ok(x.bytes < 2000, `${x.ep}'s video stopped (${x.bytes} bytes in 3 s)`);
    assert.ok(fwd.length > 0 && fwd[fwd.length - 1].length === 0, 'ForwardedSources became []');
  });
});

// The same uplink check with a page that applies SenderSourceConstraints as LJM does
// (media.md §2.5). The bridge first sends maxHeight 0 for the new source (no receiver has asked
// yet), the page turns all its encodings off, then on again when 720 arrives. This was a known
// bug (in about half of the runs Chrome's outgoing estimate restarted at 0.3–0.5 Mbps and grew
// ~8 %/s, so the 720p layer stayed off for > 10 s). It passed 12 of 12 runs on 2026-11-30 (4 CI
// runs, 8 local), the top layer above 1 Mbps within 1–2 s and Chrome's estimate at 4.3–6.8
// Mbps; the transport-cc and estimator work of issue 6 came in between, the one change that
// fixed it was not isolated. Required again.
describe('uplink with LJM\'s handling of SenderSourceConstraints', () => {
  let focus;
  let ps = [];

  before(async () => {
    if (SKIP) return;
    focus = new Focus(fx.rest());
    ps = await meeting(fx.browser, focus, ['d0d0d0d1', 'd0d0d0d2'], {
      opts: {
        d0d0d0d1: { width: 1280, height: 720, frameRate: 30, source: 'canvas', applySenderConstraints: true },
        d0d0d0d2: { width: 320, height: 180, audioEnabled: false },
      },
    });
    log(`meeting ${focus.meetingId} set up: d0d0d0d1 (720p, applies SenderSourceConstraints) → d0d0d0d2`);
  }, { timeout: SETUP_TIMEOUT_MS });

  after(async () => {
    if (focus && focus.participants.length) await focus.expire().catch((e) => log(`expire failed: ${e.message}`));
    for (const p of ps) await p.page.close().catch(() => {});
  });

  test('uplink: the 720p layer exceeds 1 Mbps within 10 s although the page applied maxHeight 0 first', {
    skip: SKIP, timeout: 3 * TIMEOUT_MS,
  }, async (t) => {
    await expectUplink(t, ps[0]);
  });
});
