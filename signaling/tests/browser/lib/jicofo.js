// The Jicofo side of a meeting, spoken to the bridge as Colibri2 JSON over its private REST port
// (colibri.md §3.13) in the order Jicofo uses (colibri.md §4.1): allocate each endpoint, forward
// each client's session-accept (transport + sources), and, for a failed client, nothing else.

/** Jicofo's default audio offer (colibri.md §3.4): opus 111 + telephone-event 126. */
export const AUDIO_PAYLOAD_TYPES = [
  {
    name: 'opus', id: '111', clockrate: '48000', channels: '2',
    parameters: { minptime: '10', useinbandfec: '1' },
    'rtcp-fbs': [{ type: 'transport-cc' }],
  },
  { name: 'telephone-event', id: '126', clockrate: '8000' },
];

const VIDEO_FB = [
  { type: 'ccm', subtype: 'fir' },
  { type: 'nack' },
  { type: 'nack', subtype: 'pli' },
  { type: 'goog-remb' },
  { type: 'transport-cc' },
];

/**
 * Jicofo's default video offer (colibri.md §3.4), VP8 first so that the browsers send VP8
 * simulcast (the order "follows config"; a Jicofo configured VP8-first offers exactly this).
 */
export const VIDEO_PAYLOAD_TYPES = [
  { name: 'VP8', id: '100', clockrate: '90000', 'rtcp-fbs': VIDEO_FB },
  { name: 'rtx', id: '96', clockrate: '90000', parameters: { apt: '100' } },
  { name: 'AV1', id: '41', clockrate: '90000', 'rtcp-fbs': VIDEO_FB },
  { name: 'rtx', id: '42', clockrate: '90000', parameters: { apt: '41' } },
  { name: 'VP9', id: '101', clockrate: '90000', parameters: { 'profile-id': '0' }, 'rtcp-fbs': VIDEO_FB },
  { name: 'rtx', id: '97', clockrate: '90000', parameters: { apt: '101' } },
  {
    name: 'H264', id: '107', clockrate: '90000',
    parameters: { 'level-asymmetry-allowed': '1', 'packetization-mode': '1', 'profile-level-id': '42e01f' },
    'rtcp-fbs': VIDEO_FB,
  },
  { name: 'rtx', id: '99', clockrate: '90000', parameters: { apt: '107' } },
];

export const URI = {
  audioLevel: 'urn:ietf:params:rtp-hdrext:ssrc-audio-level',
  absSendTime: 'http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time',
  tcc: 'http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01',
  mid: 'urn:ietf:params:rtp-hdrext:sdes:mid',
  av1dd: 'https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension',
};

/** Jicofo's enabled header extensions with its fixed ids (colibri.md §3.4). */
export const AUDIO_HDREXTS = [
  { id: 1, uri: URI.audioLevel },
  { id: 5, uri: URI.tcc },
  { id: 10, uri: URI.mid },
];
export const VIDEO_HDREXTS = [
  { id: 3, uri: URI.absSendTime },
  { id: 5, uri: URI.tcc },
  { id: 10, uri: URI.mid },
  { id: 11, uri: URI.av1dd },
];

export const ICE_UDP_NS = 'urn:xmpp:jingle:transports:ice-udp:1';

/** The `medias` array of an endpoint create, as Jicofo sends it. */
export function jicofoMedias() {
  return [
    { type: 'audio', 'payload-types': AUDIO_PAYLOAD_TYPES, 'rtp-hdrexts': AUDIO_HDREXTS, 'extmap-allow-mixed': true },
    { type: 'video', 'payload-types': VIDEO_PAYLOAD_TYPES, 'rtp-hdrexts': VIDEO_HDREXTS, 'extmap-allow-mixed': true },
  ];
}

/**
 * Body of the allocation request for one endpoint (colibri.md §4.1 step 1/2).
 * `createConference` is true only for the first endpoint of the meeting.
 */
export function allocateRequest({ meetingId, roomName, endpointId, statsId, createConference }) {
  const body = { 'meeting-id': meetingId };
  if (createConference) {
    body.name = roomName;
    body.create = true;
  }
  body.endpoints = [{
    id: endpointId,
    create: true,
    'stats-id': statsId,
    medias: jicofoMedias(),
    transport: { 'ice-controlling': true, sctp: {} },
    sources: [],
    capabilities: ['source-names'],
  }];
  return body;
}

/**
 * Body of the update Jicofo sends when a client's session-accept arrives (colibri.md §4.1 step 3,
 * §4.2): the client's ICE transport and its complete source set.
 * `answer` is the output of sdp.parseAnswer(); `endpointId` names the sources `<ep>-a0`/`<ep>-v0`.
 */
export function sessionAcceptRequest({ meetingId, endpointId, statsId, answer }) {
  const ice = {
    xmlns: ICE_UDP_NS,
    ufrag: answer.ufrag,
    pwd: answer.pwd,
    'rtcp-mux': true,
    fingerprints: [{ fingerprint: answer.fingerprint.value, hash: answer.fingerprint.hash, setup: answer.setup }],
    candidates: answer.candidates.map((c, i) => ({
      component: String(c.component),
      foundation: c.foundation,
      generation: '0',
      id: `${endpointId}-c${i}`,
      network: '0',
      priority: String(c.priority),
      protocol: c.protocol,
      type: c.type,
      ip: c.ip,
      port: String(c.port),
    })),
  };
  return {
    'meeting-id': meetingId,
    endpoints: [{
      id: endpointId,
      'stats-id': statsId,
      transport: { transport: ice },
      sources: colibriSources(endpointId, answer),
      'initial-last-n': { value: -1 },
    }],
  };
}

/** The endpoint's sources in Colibri2 JSON, named as Jicofo names them (colibri.md §3.6). */
export function colibriSources(endpointId, answer) {
  const out = [];
  if (answer.audio && answer.audio.ssrcs.length > 0) {
    const name = `${endpointId}-a0`;
    out.push({ type: 'audio', id: name, sources: answer.audio.ssrcs.map((ssrc) => ({ ssrc, name })) });
  }
  if (answer.video && answer.video.ssrcs.length > 0) {
    const name = `${endpointId}-v0`;
    out.push({
      type: 'video',
      id: name,
      sources: answer.video.ssrcs.map((ssrc) => ({ ssrc, name, videoType: 'camera' })),
      'ssrc-groups': answer.video.groups.map((g) => ({ semantics: g.semantics, sources: g.ssrcs })),
    });
  }
  return out;
}

/** What Jicofo takes from an allocation answer: the bridge's ICE transport, SCTP port, feedback sources. */
export function parseAllocation(endpointId, response) {
  const ep = (response.endpoints || []).find((e) => e.id === endpointId);
  if (!ep) throw new Error(`allocation answer has no endpoint ${endpointId}: ${JSON.stringify(response)}`);
  const wrapper = ep.transport;
  const ice = wrapper && wrapper.transport;
  if (!ice || !ice.ufrag || !ice.pwd) {
    throw new Error(`allocation answer for ${endpointId} has no ICE transport (Jicofo: "failed to parse transport"): ${JSON.stringify(ep)}`);
  }
  const fps = ice.fingerprints || [];
  if (fps.length === 0) throw new Error(`allocation answer for ${endpointId} has no DTLS fingerprint`);
  const sctpPort = wrapper.sctp && wrapper.sctp.port;
  if (sctpPort === undefined || sctpPort === null) {
    throw new Error(`allocation answer for ${endpointId} has no sctp port although SCTP was requested`);
  }
  const feedback = { audio: null, video: null };
  for (const ms of response.sources || []) {
    const first = (ms.sources || [])[0];
    const ssrc = typeof first === 'object' && first !== null ? first.ssrc : first;
    if (ms.type === 'audio' && ms.id === 'jvb-a0') feedback.audio = Number(ssrc);
    if (ms.type === 'video' && ms.id === 'jvb-v0') feedback.video = Number(ssrc);
  }
  return {
    ufrag: ice.ufrag,
    pwd: ice.pwd,
    fingerprints: fps.map((f) => ({ hash: f.hash, value: f.fingerprint, setup: f.setup })),
    candidates: (ice.candidates || []).map((c) => ({
      foundation: String(c.foundation), component: Number(c.component), protocol: String(c.protocol).toLowerCase(),
      priority: Number(c.priority), ip: c.ip, port: Number(c.port), type: c.type,
      relAddr: c['rel-addr'], relPort: c['rel-port'] !== undefined ? Number(c['rel-port']) : undefined,
    })),
    sctpPort: Number(sctpPort),
    feedback,
  };
}

/** A minimal Colibri2-over-REST client (the bridge's private HTTP port). */
export class ColibriRest {
  constructor(baseUrl, { log = () => {} } = {}) {
    this.base = baseUrl.replace(/\/+$/, '');
    this.log = log;
  }

  async #send(method, path, body) {
    const url = this.base + path;
    this.log(`→ ${method} ${path} ${JSON.stringify(body)}`);
    const res = await fetch(url, {
      method,
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(15000), // Jicofo's reply timeout
    });
    const text = await res.text();
    this.log(`← ${res.status} ${text}`);
    if (!res.ok) throw new Error(`${method} ${path} → HTTP ${res.status}: ${text}`);
    try {
      return text.length ? JSON.parse(text) : {};
    } catch (e) {
      throw new Error(`${method} ${path} → HTTP ${res.status} with non-JSON body: ${text}`);
    }
  }

  /** POST /colibri/v2/conferences: used for the request that creates the conference. */
  post(body) {
    return this.#send('POST', '/colibri/v2/conferences', body);
  }

  /** PATCH /colibri/v2/conferences/{meeting-id}: every later modification. */
  patch(meetingId, body) {
    return this.#send('PATCH', `/colibri/v2/conferences/${encodeURIComponent(meetingId)}`, body);
  }

  /** The request Jicofo sends at the end of a meeting (colibri.md §4.1 step 9). */
  expire(meetingId) {
    return this.patch(meetingId, { 'meeting-id': meetingId, expire: true });
  }
}
