// A test focus: plays Jicofo (Colibri2 JSON to the bridge) and, for each participant, the Jingle
// half of lib-jitsi-meet (remote offer from session-initiate/source-add, local answer → session-accept).

import { randomUUID } from 'node:crypto';
import { allocateRequest, sessionAcceptRequest, parseAllocation } from './jicofo.js';
import { buildOffer, mungeSimulcast, parseAnswer, remoteSourcesOf, corruptFingerprint } from './sdp.js';

export class Participant {
  constructor(focus, page, endpointId) {
    this.focus = focus;
    this.page = page;
    this.endpointId = endpointId;
    this.statsId = `${endpointId}-stats`;
    this.bridge = null; // parseAllocation() output
    this.answer = null; // parseAnswer() of the current local description
    this.localSdp = null;
    this.offerSdp = null;
    this.version = 0;
    this.remotes = []; // remote sources currently signalled to this participant
    this.simulcastState = null;
    this.encodings = null;
    this.maxMessageSize = undefined; // a=max-message-size of the offer (undefined: LJM's 262144)
    this.videoCodec = null; // codec put first on the offer's video m-lines (null: Jicofo's order)
  }

  /** Jingle offer → page: setRemoteDescription, createAnswer, LJM munging, setLocalDescription. */
  async negotiate() {
    this.version += 1;
    const bridge = { ...this.bridge, feedback: this.focus.feedback };
    this.offerSdp = buildOffer({ bridge, version: this.version, remotes: this.remotes, maxMessageSize: this.maxMessageSize, videoCodec: this.videoCodec });
    const raw = await this.page.evaluate((sdp) => window.palimClient.applyOffer(sdp), this.offerSdp);
    const munged = this.focus.simulcast ? mungeSimulcast(raw, this.simulcastState) : { sdp: raw, state: null };
    this.simulcastState = munged.state;
    const local = await this.page.evaluate(
      ([sdp, simulcast]) => window.palimClient.setLocal(sdp, { simulcast }),
      [munged.sdp, this.focus.simulcast],
    );
    this.localSdp = local.sdp;
    this.encodings = local.encodings;
    this.answer = parseAnswer(local.sdp);
    return this.answer;
  }

  /** The focus receives session-accept and forwards transport + sources to the bridge. */
  async sessionAccept({ badFingerprint = false } = {}) {
    const answer = badFingerprint
      ? { ...this.answer, fingerprint: { ...this.answer.fingerprint, value: corruptFingerprint(this.answer.fingerprint.value) } }
      : this.answer;
    const body = sessionAcceptRequest({
      meetingId: this.focus.meetingId, endpointId: this.endpointId, statsId: this.statsId, answer,
    });
    return this.focus.rest.patch(this.focus.meetingId, body);
  }

  /** Jingle source-add to this participant: renegotiate with the other participants' sources. */
  async sourceAdd(others) {
    for (const o of others) {
      if (!this.remotes.some((r) => r.endpointId === o.endpointId)) this.remotes.push(remoteSourcesOf(o.endpointId, o.answer));
    }
    await this.negotiate();
    await this.page.evaluate(
      (names) => window.palimClient.setRemoteVideoSources(names),
      this.remotes.filter((r) => r.video).map((r) => `${r.endpointId}-v0`),
    );
  }

  stats() {
    return this.page.evaluate(() => window.palimClient.stats());
  }

  pageLog() {
    return this.page.evaluate(() => window.palimClient.log.slice());
  }
}

export class Focus {
  constructor(rest, { simulcast = true } = {}) {
    this.rest = rest;
    this.meetingId = randomUUID();
    this.roomName = `palimtest${this.meetingId.slice(0, 8)}@conference.localhost`;
    this.feedback = null; // the bridge's jvb-a0 / jvb-v0 SSRCs, from the response that created the session
    this.participants = [];
    this.simulcast = simulcast;
  }

  /**
   * Allocate a participant on the bridge (the first one creates the conference), then prepare its
   * page. `opts` go to the page's init(): width, height, frameRate, codec, scalabilityMode,
   * constraints, applySenderConstraints; `maxMessageSize` (not LJM: a client that lets itself send
   * bigger bridge-channel messages) goes into this participant's offers.
   */
  async join(page, endpointId, opts = {}) {
    const { maxMessageSize, ...pageOpts } = opts;
    const p = new Participant(this, page, endpointId);
    p.maxMessageSize = maxMessageSize;
    p.videoCodec = opts.codec && opts.codec !== 'VP8' ? opts.codec : null;
    const first = this.feedback === null;
    const body = allocateRequest({
      meetingId: this.meetingId, roomName: this.roomName, endpointId, statsId: p.statsId, createConference: first,
    });
    const res = first ? await this.rest.post(body) : await this.rest.patch(this.meetingId, body);
    p.bridge = parseAllocation(endpointId, res);
    if (first) {
      if (p.bridge.feedback.audio === null || p.bridge.feedback.video === null) {
        throw new Error(`the response that created the conference has no feedback sources jvb-a0/jvb-v0: ${JSON.stringify(res)}`);
      }
      this.feedback = p.bridge.feedback;
    }
    await page.evaluate((o) => window.palimClient.init(o), { ...pageOpts, endpointId });
    this.participants.push(p);
    return p;
  }

  async expire() {
    return this.rest.expire(this.meetingId);
  }
}
