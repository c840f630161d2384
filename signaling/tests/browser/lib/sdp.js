// SDP as lib-jitsi-meet (LJM) builds and munges it in Chromium (media.md §2.5):
//  * buildOffer(): the remote OFFER that LJM derives from Jicofo's Jingle session-initiate (and,
//    later, source-add): one BUNDLE group, bridge ICE/DTLS, the bridge's own feedback SSRCs on the
//    first audio/video m-lines (sendrecv), one sendonly m-line per remote source, and SCTP.
//  * mungeSimulcast(): LJM's SIM/FID munging of the local answer (3 layers, low → high).
//  * parseAnswer(): what LJM puts into session-accept (ICE, fingerprint, sources).

import { AUDIO_PAYLOAD_TYPES, VIDEO_PAYLOAD_TYPES, AUDIO_HDREXTS, VIDEO_HDREXTS } from './jicofo.js';

const LOOPBACK = new Set(['127.0.0.1', '::1']);

/** True for the only addresses this test may hand to anybody as a network target. */
export function isLoopback(ip) {
  return LOOPBACK.has(ip) || /^127\./.test(ip);
}

function candidateLine(c) {
  let s = `a=candidate:${c.foundation} ${c.component} ${c.protocol} ${c.priority} ${c.ip} ${c.port} typ ${c.type}`;
  if (c.relAddr !== undefined && c.type !== 'host') s += ` raddr ${c.relAddr} rport ${c.relPort}`;
  return `${s} generation 0`;
}

function payloadLines(pts) {
  const out = [];
  for (const pt of pts) {
    const channels = pt.channels && pt.channels !== '1' ? `/${pt.channels}` : '';
    out.push(`a=rtpmap:${pt.id} ${pt.name}/${pt.clockrate}${channels}`);
    for (const fb of pt['rtcp-fbs'] || []) {
      out.push(`a=rtcp-fb:${pt.id} ${fb.type}${fb.subtype ? ' ' + fb.subtype : ''}`);
    }
    const params = Object.entries(pt.parameters || {});
    if (params.length) out.push(`a=fmtp:${pt.id} ${params.map(([k, v]) => (k === 'null' ? v : `${k}=${v}`)).join(';')}`);
  }
  return out;
}

/**
 * The bridge transport as it appears in every m-line of the offer. Only loopback UDP candidates
 * are kept: this test never points a browser at another address. Throws when none is left.
 */
function transportLines(bridge) {
  const fp = bridge.fingerprints.find((f) => f.hash === 'sha-256') || bridge.fingerprints[0];
  const cands = bridge.candidates.filter((c) => c.protocol === 'udp' && isLoopback(c.ip));
  if (cands.length === 0) {
    throw new Error(`the bridge offered no loopback UDP candidate: ${JSON.stringify(bridge.candidates)}`);
  }
  return [
    `a=ice-ufrag:${bridge.ufrag}`,
    `a=ice-pwd:${bridge.pwd}`,
    `a=fingerprint:${fp.hash} ${fp.value}`,
    'a=setup:actpass',
    ...cands.map(candidateLine),
  ];
}

function ssrcLines(ssrc, cname, msid) {
  return [`a=ssrc:${ssrc} cname:${cname}`, `a=ssrc:${ssrc} msid:${msid}`];
}

/**
 * Build the remote offer.
 * @param {object} o
 * @param {object} o.bridge       parseAllocation() output (ICE, fingerprints, candidates, sctpPort, feedback)
 * @param {number} o.version      o= session version (increment on every renegotiation)
 * @param {number} o.maxMessageSize a=max-message-size of the data m-line (LJM: 262144)
 * @param {string} o.videoCodec   put this codec (and its rtx) first on the video m-lines, as LJM
 *        does to the remote description for its preferred codec (null: Jicofo's order)
 * @param {Array}  o.remotes      remote participants' sources, in join order:
 *        { endpointId, audio: {ssrc, msid}|null, video: {ssrc, rtx, msid}|null }
 */
export function buildOffer({ bridge, version = 1, remotes = [], maxMessageSize = 262144, videoCodec = null }) {
  const tl = transportLines(bridge);
  const audioPts = AUDIO_PAYLOAD_TYPES;
  const videoPts = preferCodec(VIDEO_PAYLOAD_TYPES, videoCodec);
  const audioFmt = audioPts.map((p) => p.id).join(' ');
  const videoFmt = videoPts.map((p) => p.id).join(' ');
  const ext = (list) => list.map((e) => `a=extmap:${e.id} ${e.uri}`);

  const sections = [];
  const mids = [];
  const mediaSection = (kind, mid, direction, sources) => {
    mids.push(mid);
    const lines = [
      kind === 'audio' ? `m=audio 9 UDP/TLS/RTP/SAVPF ${audioFmt}` : `m=video 9 UDP/TLS/RTP/SAVPF ${videoFmt}`,
      'c=IN IP4 0.0.0.0',
      'a=rtcp:9 IN IP4 0.0.0.0',
      ...tl,
      `a=mid:${mid}`,
      ...ext(kind === 'audio' ? AUDIO_HDREXTS : VIDEO_HDREXTS),
      `a=${direction}`,
      'a=rtcp-mux',
      ...(kind === 'video' ? ['a=rtcp-rsize'] : []),
      ...payloadLines(kind === 'audio' ? audioPts : videoPts),
      ...sources,
    ];
    sections.push(lines);
  };

  // Jicofo's session-initiate contents: audio, video, data; the bridge's feedback sources carry
  // owner "jvb" and msid "mixedmslabel mixedlabel{audio,video}0".
  const fb = bridge.feedback || {};
  mediaSection('audio', 'audio', 'sendrecv',
    fb.audio ? ['a=msid:mixedmslabel mixedlabelaudio0', ...ssrcLines(fb.audio, 'mixed', 'mixedmslabel mixedlabelaudio0')] : []);
  mediaSection('video', 'video', 'sendrecv',
    fb.video ? ['a=msid:mixedmslabel mixedlabelvideo0', ...ssrcLines(fb.video, 'mixed', 'mixedmslabel mixedlabelvideo0')] : []);
  mids.push('data');
  sections.push([
    'm=application 9 UDP/DTLS/SCTP webrtc-datachannel',
    'c=IN IP4 0.0.0.0',
    ...tl,
    'a=mid:data',
    `a=sctp-port:${bridge.sctpPort}`,
    `a=max-message-size:${maxMessageSize}`,
  ]);

  // Each remote source on its own m-line, appended in the order the sources were added (LJM in
  // unified plan). Jicofo signals a receiver only the primary (first SIM) SSRC and its RTX.
  for (const r of remotes) {
    if (r.audio) {
      const cname = `${r.endpointId}-cname`;
      mediaSection('audio', `${r.endpointId}-a0`.slice(0, 16), 'sendonly',
        [`a=msid:${r.audio.msid}`, ...ssrcLines(r.audio.ssrc, cname, r.audio.msid)]);
    }
    if (r.video) {
      const cname = `${r.endpointId}-cname`;
      const lines = [`a=msid:${r.video.msid}`];
      if (r.video.rtx) lines.push(`a=ssrc-group:FID ${r.video.ssrc} ${r.video.rtx}`);
      lines.push(...ssrcLines(r.video.ssrc, cname, r.video.msid));
      if (r.video.rtx) lines.push(...ssrcLines(r.video.rtx, cname, r.video.msid));
      mediaSection('video', `${r.endpointId}-v0`.slice(0, 16), 'sendonly', lines);
    }
  }

  const head = [
    'v=0',
    `o=- 1923518516 ${version} IN IP4 0.0.0.0`,
    's=-',
    't=0 0',
    `a=group:BUNDLE ${mids.join(' ')}`,
    'a=extmap-allow-mixed',
    'a=msid-semantic: WMS *',
  ];
  return [...head, ...sections.flat()].join('\r\n') + '\r\n';
}

/** `pts` with codec `name` and its rtx moved to the front (unchanged when name is null). */
export function preferCodec(pts, name) {
  if (!name) return pts;
  const main = pts.filter((p) => p.name.toLowerCase() === name.toLowerCase());
  if (main.length === 0) throw new Error(`codec ${name} is not in the offer`);
  const ids = new Set(main.map((p) => p.id));
  const rtx = pts.filter((p) => p.name === 'rtx' && p.parameters && ids.has(p.parameters.apt));
  return [...main, ...rtx, ...pts.filter((p) => !main.includes(p) && !rtx.includes(p))];
}

/** Split an SDP into its session part and its media sections (arrays of lines). */
export function splitSdp(sdp) {
  const lines = sdp.split(/\r?\n/).filter((l) => l.length > 0);
  const session = [];
  const media = [];
  for (const l of lines) {
    if (l.startsWith('m=')) media.push([l]);
    else if (media.length) media[media.length - 1].push(l);
    else session.push(l);
  }
  return { session, media };
}

function joinSdp({ session, media }) {
  return [...session, ...media.flat()].join('\r\n') + '\r\n';
}

function attr(lines, name) {
  const p = `a=${name}:`;
  const l = lines.find((x) => x.startsWith(p));
  return l === undefined ? undefined : l.slice(p.length);
}

function parseCandidate(value) {
  const f = value.split(/\s+/);
  const c = {
    foundation: f[0], component: Number(f[1]), protocol: f[2].toLowerCase(), priority: Number(f[3]),
    ip: f[4], port: Number(f[5]), type: f[7],
  };
  for (let i = 8; i + 1 < f.length; i += 2) {
    if (f[i] === 'raddr') c.relAddr = f[i + 1];
    if (f[i] === 'rport') c.relPort = Number(f[i + 1]);
  }
  return c;
}

function sectionSources(lines) {
  const ssrcs = [];
  const attrs = new Map();
  for (const l of lines) {
    const m = /^a=ssrc:(\d+) (.*)$/.exec(l);
    if (!m) continue;
    const ssrc = Number(m[1]);
    if (!attrs.has(ssrc)) {
      attrs.set(ssrc, []);
      ssrcs.push(ssrc);
    }
    attrs.get(ssrc).push(m[2]);
  }
  const groups = lines
    .filter((l) => l.startsWith('a=ssrc-group:'))
    .map((l) => {
      const [semantics, ...rest] = l.slice('a=ssrc-group:'.length).split(/\s+/);
      return { semantics, ssrcs: rest.map(Number) };
    });
  const msid = attr(lines, 'msid');
  return { ssrcs, groups, attrs, msid };
}

/**
 * Read a local answer the way LJM fills session-accept: ICE credentials, the DTLS fingerprint and
 * setup, the gathered candidates (only loopback UDP ones are kept: they are handed to the bridge
 * as targets), and the SSRCs/groups/msid of the first audio and first video m-line.
 */
export function parseAnswer(sdp) {
  const { session, media } = splitSdp(sdp);
  const first = media[0] || [];
  const pick = (name) => attr(first, name) ?? attr(session, name);
  const fpRaw = pick('fingerprint');
  if (!fpRaw) throw new Error('answer has no a=fingerprint');
  const [hash, value] = fpRaw.split(/\s+/);
  const candidates = [];
  const seen = new Set();
  for (const sec of media) {
    for (const l of sec) {
      if (!l.startsWith('a=candidate:')) continue;
      const c = parseCandidate(l.slice('a=candidate:'.length));
      const key = `${c.protocol} ${c.ip} ${c.port}`;
      if (c.protocol !== 'udp' || !isLoopback(c.ip) || seen.has(key)) continue;
      seen.add(key);
      candidates.push(c);
    }
  }
  const find = (kind) => media.find((s) => s[0].startsWith(`m=${kind} `) && !/^m=\w+ 0 /.test(s[0]));
  const audio = find('audio');
  const video = find('video');
  return {
    ufrag: pick('ice-ufrag'),
    pwd: pick('ice-pwd'),
    fingerprint: { hash, value },
    setup: pick('setup'),
    candidates,
    audio: audio ? { mid: attr(audio, 'mid'), ...sectionSources(audio) } : null,
    video: video ? { mid: attr(video, 'mid'), ...sectionSources(video) } : null,
  };
}

/** What a receiver needs of a sender's answer (Jicofo strips simulcast towards receivers). */
export function remoteSourcesOf(endpointId, answer) {
  const r = { endpointId, audio: null, video: null };
  if (answer.audio && answer.audio.ssrcs.length) {
    r.audio = { ssrc: answer.audio.ssrcs[0], msid: answer.audio.msid || `${endpointId}-audio ${endpointId}-audio-0` };
  }
  if (answer.video && answer.video.ssrcs.length) {
    const sim = answer.video.groups.find((g) => g.semantics === 'SIM');
    const primary = sim ? sim.ssrcs[0] : answer.video.ssrcs[0];
    const fid = answer.video.groups.find((g) => g.semantics === 'FID' && g.ssrcs[0] === primary);
    r.video = {
      ssrc: primary,
      rtx: fid ? fid.ssrcs[1] : undefined,
      msid: answer.video.msid || `${endpointId}-video ${endpointId}-video-0`,
    };
  }
  return r;
}

function randomSsrc(taken) {
  for (;;) {
    const s = (Math.floor(Math.random() * 0xfffffffe) + 1) >>> 0;
    if (!taken.has(s)) {
      taken.add(s);
      return s;
    }
  }
}

/**
 * LJM's simulcast munging of the local answer (media.md §2.5): the first video m-line gets
 * `a=ssrc-group:SIM p s1 s2` (lowest layer first) and one FID group per layer. `state` keeps the
 * generated SSRCs so that a renegotiation munges the same ones again (returned, pass it back).
 */
export function mungeSimulcast(sdp, state = null, layers = 3) {
  const parsed = splitSdp(sdp);
  const idx = parsed.media.findIndex((s) => s[0].startsWith('m=video ') && !/^m=video 0 /.test(s[0]));
  if (idx < 0) return { sdp, state };
  const sec = parsed.media[idx];
  const dir = sec.find((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l));
  if (dir !== 'a=sendrecv' && dir !== 'a=sendonly') return { sdp, state };
  const src = sectionSources(sec);
  if (src.ssrcs.length === 0) return { sdp, state };
  const fid = src.groups.find((g) => g.semantics === 'FID');
  const primary = fid ? fid.ssrcs[0] : src.ssrcs[0];
  const primaryRtx = fid ? fid.ssrcs[1] : undefined;
  const baseAttrs = src.attrs.get(primary) || [];

  let st = state;
  if (!st || st.primary !== primary) {
    const taken = new Set(src.ssrcs);
    const sim = [primary];
    const rtx = [primaryRtx ?? randomSsrc(taken)];
    for (let i = 1; i < layers; i++) {
      sim.push(randomSsrc(taken));
      rtx.push(randomSsrc(taken));
    }
    st = { primary, sim, rtx };
  }
  const kept = sec.filter((l) => !l.startsWith('a=ssrc:') && !l.startsWith('a=ssrc-group:'));
  const add = [];
  for (let i = 0; i < st.sim.length; i++) {
    for (const s of [st.sim[i], st.rtx[i]]) for (const a of baseAttrs) add.push(`a=ssrc:${s} ${a}`);
  }
  for (let i = 0; i < st.sim.length; i++) add.push(`a=ssrc-group:FID ${st.sim[i]} ${st.rtx[i]}`);
  add.push(`a=ssrc-group:SIM ${st.sim.join(' ')}`);
  parsed.media[idx] = [...kept, ...add];
  return { sdp: joinSdp(parsed), state: st };
}

/** Flip one byte of an SDP-style fingerprint ("AB:CD:…"), for the bad-fingerprint test. */
export function corruptFingerprint(value) {
  const parts = value.split(':');
  const i = Math.floor(parts.length / 2);
  parts[i] = ((parseInt(parts[i], 16) ^ 0xff) & 0xff).toString(16).toUpperCase().padStart(2, '0');
  return parts.join(':');
}
