// Tests that need Chromium but no bridge: the offer LJM would build from Jicofo's Jingle (here
// from a hand-written Colibri2 allocation answer, colibri.md §3.13) is accepted by Chromium, the
// simulcast munging is accepted, and the session-accept the focus derives has the right shape.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser } from '../lib/browser.js';
import { parseAllocation, sessionAcceptRequest, allocateRequest } from '../lib/jicofo.js';
import { buildOffer, mungeSimulcast, parseAnswer, remoteSourcesOf, corruptFingerprint, splitSdp } from '../lib/sdp.js';

// A Colibri2 JSON allocation answer in the shape of colibri.md §3.13 (values made up; the
// fingerprint only needs to be well-formed for setRemoteDescription).
const FP = Array.from({ length: 32 }, (_, i) => ((i * 37 + 11) & 0xff).toString(16).toUpperCase().padStart(2, '0')).join(':');
const ALLOCATION = {
  endpoints: [{
    id: 'a1b2c3d4',
    transport: {
      transport: {
        xmlns: 'urn:xmpp:jingle:transports:ice-udp:1',
        ufrag: '3kq9e1', pwd: '7c0f2d9b4a1e6c3f8d5b2a90', 'rtcp-mux': true,
        fingerprints: [{ fingerprint: FP, hash: 'sha-256', setup: 'actpass' }],
        candidates: [
          { component: '1', foundation: '1', generation: '0', id: 'c1', network: '0', priority: '2130706431', protocol: 'udp', type: 'host', ip: '127.0.0.1', port: '10000' },
          { component: '1', foundation: '2', generation: '0', id: 'c2', network: '0', priority: '1694498815', protocol: 'udp', type: 'srflx', ip: '203.0.113.7', port: '10000', 'rel-addr': '127.0.0.1', 'rel-port': '10000' },
        ],
      },
      sctp: { port: 5000, role: 'server' },
    },
  }],
  sources: [
    { type: 'audio', id: 'jvb-a0', sources: [{ ssrc: 1938271645, name: 'jvb-a0' }] },
    { type: 'video', id: 'jvb-v0', sources: [{ ssrc: 2718281828, name: 'jvb-v0' }] },
  ],
};

describe('offline: LJM-style SDP against Chromium (no bridge)', () => {
  let browser;
  let page;
  const bridge = parseAllocation('a1b2c3d4', ALLOCATION);

  before(async () => {
    browser = await launchBrowser();
    page = await browser.newPage('offline');
    await page.evaluate(() => window.palimClient.init({ endpointId: 'a1b2c3d4' }));
  });
  after(async () => { if (browser) await browser.close(); });

  test('allocation request has the Jicofo shape', () => {
    const req = allocateRequest({ meetingId: 'm', roomName: 'r@c', endpointId: 'e1', statsId: 's', createConference: true });
    assert.equal(req.create, true);
    const ep = req.endpoints[0];
    assert.equal(ep.create, true);
    assert.deepEqual(ep.transport, { 'ice-controlling': true, sctp: {} });
    assert.deepEqual(ep.capabilities, ['source-names']);
    const video = ep.medias.find((m) => m.type === 'video');
    assert.ok(video['payload-types'].some((p) => p.name === 'VP8' && p.id === '100'));
    assert.ok(video['payload-types'].some((p) => p.name === 'rtx' && p.id === '96' && p.parameters.apt === '100'));
    assert.ok(video['rtp-hdrexts'].every((h) => typeof h.id === 'number'));
    const second = allocateRequest({ meetingId: 'm', roomName: 'r@c', endpointId: 'e2', statsId: 's', createConference: false });
    assert.equal(second.create, undefined);
    assert.equal(second.name, undefined);
  });

  test('parseAllocation reads transport, sctp port and feedback sources', () => {
    assert.equal(bridge.ufrag, '3kq9e1');
    assert.equal(bridge.sctpPort, 5000);
    assert.equal(bridge.feedback.audio, 1938271645);
    assert.equal(bridge.feedback.video, 2718281828);
    assert.equal(bridge.candidates.length, 2);
  });

  test('offer keeps only loopback candidates', () => {
    const sdp = buildOffer({ bridge });
    assert.match(sdp, /a=candidate:1 1 udp 2130706431 127\.0\.0\.1 10000 typ host/);
    assert.doesNotMatch(sdp, /203\.0\.113\.7/);
    assert.match(sdp, /a=group:BUNDLE audio video data\r\n/);
    assert.throws(() => buildOffer({ bridge: { ...bridge, candidates: [bridge.candidates[1]] } }), /no loopback/);
  });

  let first;
  test('Chromium accepts the session-initiate offer and answers as DTLS client', async () => {
    const offer = buildOffer({ bridge: { ...bridge }, version: 1 });
    const raw = await page.evaluate((sdp) => window.palimClient.applyOffer(sdp), offer);
    const { media } = splitSdp(raw);
    assert.equal(media.length, 3);
    assert.match(media[0][0], /^m=audio 9 /);
    assert.match(media[1][0], /^m=video 9 /);
    assert.match(media[2][0], /^m=application 9 UDP\/DTLS\/SCTP webrtc-datachannel/);
    assert.ok(media.every((s) => s.includes('a=setup:active')), 'answer is a=setup:active in every m-line');
    assert.ok(media[0].includes('a=sendrecv') && media[1].includes('a=sendrecv'));
    // VP8 stays first (the browser will send VP8, which the simulcast munging is for).
    assert.match(media[1][0], /^m=video 9 UDP\/TLS\/RTP\/SAVPF 100 /);

    const munged = mungeSimulcast(raw, null);
    assert.equal(munged.state.sim.length, 3);
    const local = await page.evaluate((sdp) => window.palimClient.setLocal(sdp, { simulcast: true }), munged.sdp);
    assert.deepEqual(local.encodings.map((e) => e.scaleResolutionDownBy), [4, 2, 1]);
    first = { state: munged.state, answer: parseAnswer(local.sdp) };
    const a = first.answer;
    assert.equal(a.setup, 'active');
    assert.match(a.fingerprint.value, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.ok(a.ufrag && a.pwd);
    assert.ok(a.candidates.length > 0, 'a loopback host candidate was gathered');
    assert.ok(a.candidates.every((c) => c.ip === '127.0.0.1' || c.ip === '::1'));
    assert.equal(a.audio.ssrcs.length, 1);
    assert.equal(a.video.ssrcs.length, 6);
    const sim = a.video.groups.filter((g) => g.semantics === 'SIM');
    const fid = a.video.groups.filter((g) => g.semantics === 'FID');
    assert.equal(sim.length, 1);
    assert.equal(fid.length, 3);
    assert.deepEqual(sim[0].ssrcs, munged.state.sim);
  });

  test('session-accept request carries transport and sources in Colibri2 JSON', () => {
    const req = sessionAcceptRequest({ meetingId: 'm', endpointId: 'a1b2c3d4', statsId: 's', answer: first.answer });
    const ep = req.endpoints[0];
    assert.equal(ep.create, undefined);
    const ice = ep.transport.transport;
    assert.equal(ice.xmlns, 'urn:xmpp:jingle:transports:ice-udp:1');
    assert.equal(ice.fingerprints[0].setup, 'active');
    assert.ok(ice.candidates.every((c) => typeof c.port === 'string' && typeof c.priority === 'string'));
    const v = ep.sources.find((s) => s.type === 'video');
    assert.equal(v.id, 'a1b2c3d4-v0');
    assert.equal(v.sources.length, 6);
    assert.ok(v.sources.every((s) => typeof s.ssrc === 'number' && s.videoType === 'camera'));
    assert.equal(v['ssrc-groups'].length, 4);
    const au = ep.sources.find((s) => s.type === 'audio');
    assert.equal(au.id, 'a1b2c3d4-a0');
  });

  test('source-add renegotiation: remote m-lines accepted, local SSRCs stable', async () => {
    // A made-up second participant, in the shape parseAnswer() gives.
    const other = {
      audio: { ssrcs: [111111], groups: [], msid: 'streamB trackBa' },
      video: {
        ssrcs: [221, 222, 223, 331, 332, 333], msid: 'streamB trackBv',
        groups: [{ semantics: 'SIM', ssrcs: [221, 222, 223] }, { semantics: 'FID', ssrcs: [221, 331] },
          { semantics: 'FID', ssrcs: [222, 332] }, { semantics: 'FID', ssrcs: [223, 333] }],
      },
    };
    const remote = remoteSourcesOf('b2c3d4e5', other);
    assert.deepEqual(remote.video, { ssrc: 221, rtx: 331, msid: 'streamB trackBv' });
    const offer = buildOffer({ bridge, version: 2, remotes: [remote] });
    assert.match(offer, /a=group:BUNDLE audio video data b2c3d4e5-a0 b2c3d4e5-v0\r\n/);
    const raw = await page.evaluate((sdp) => window.palimClient.applyOffer(sdp), offer);
    const { media } = splitSdp(raw);
    assert.equal(media.length, 5);
    assert.ok(media[3].includes('a=recvonly') && media[4].includes('a=recvonly'));
    const munged = mungeSimulcast(raw, first.state);
    assert.deepEqual(munged.state, first.state);
    const local = await page.evaluate((sdp) => window.palimClient.setLocal(sdp, { simulcast: true }), munged.sdp);
    const a = parseAnswer(local.sdp);
    assert.deepEqual(a.video.groups.find((g) => g.semantics === 'SIM').ssrcs, first.state.sim);
    assert.equal(a.ufrag, first.answer.ufrag);
    assert.equal(a.fingerprint.value, first.answer.fingerprint.value);
    const log = await page.evaluate(() => window.palimClient.log.slice());
    assert.ok(log.some((l) => / track video .* mid=b2c3d4e5-v0/.test(l)), `remote video track created: ${log.join(' | ')}`);
  });

  test('corruptFingerprint flips exactly one byte', () => {
    const bad = corruptFingerprint(FP);
    const a = FP.split(':');
    const b = bad.split(':');
    assert.equal(b.length, a.length);
    assert.equal(a.filter((x, i) => x !== b[i]).length, 1);
  });
});
