// The in-page half of a participant: what lib-jitsi-meet's TraceablePeerConnection and
// BridgeChannel do in Chromium (media.md §2.5), reduced to what the test needs. The SDP work
// (building the offer from Jingle, munging simulcast, reading the answer) is done by the test in
// node (lib/sdp.js); this page only owns the RTCPeerConnection, the tracks and the bridge channel.
'use strict';

(function () {
  const log = [];
  const note = (msg) => log.push(`${(performance.now() / 1000).toFixed(3)} ${msg}`);

  const client = {
    endpointId: null,
    pc: null,
    dc: null,
    stream: null,
    received: [], // bridge-channel messages (parsed JSON, or {raw} when not JSON)
    remoteVideoSources: [], // source names of remote video, for ReceiverVideoConstraints
    simulcastApplied: false,
    log,

    /** getUserMedia (fake devices), the PeerConnection, the local tracks and the data channel. */
    async init({ endpointId, width = 640, height = 360, frameRate = 30 }) {
      this.endpointId = endpointId;
      document.getElementById('who').textContent = endpointId;
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: true,
        video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } },
      });
      document.getElementById('local').srcObject = this.stream;
      const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', iceServers: [] });
      this.pc = pc;
      // Local tracks first, so that they take the first audio and video m-lines of the offer.
      for (const track of this.stream.getTracks()) pc.addTrack(track, this.stream);
      pc.addEventListener('connectionstatechange', () => note(`connectionState ${pc.connectionState}`));
      pc.addEventListener('iceconnectionstatechange', () => note(`iceConnectionState ${pc.iceConnectionState}`));
      pc.addEventListener('track', (ev) => {
        note(`track ${ev.track.kind} ${ev.track.id} mid=${ev.transceiver && ev.transceiver.mid}`);
        const el = document.createElement(ev.track.kind === 'video' ? 'video' : 'audio');
        el.autoplay = true;
        el.muted = true;
        el.playsInline = true;
        el.srcObject = new MediaStream([ev.track]);
        document.getElementById('remotes').appendChild(el);
        el.play().catch(() => {});
      });
      // LJM opens the bridge channel before applying the remote offer (in-band DCEP, ordered).
      const dc = pc.createDataChannel('JVB data channel', { protocol: 'http://jitsi.org/protocols/colibri' });
      this.dc = dc;
      dc.addEventListener('open', () => {
        note('bridge channel open');
        this.sendBridge({ colibriClass: 'SourceVideoTypeMessage', sourceName: `${endpointId}-v0`, videoType: 'camera' });
        this.sendConstraints();
      });
      dc.addEventListener('close', () => note('bridge channel closed'));
      dc.addEventListener('error', (e) => note(`bridge channel error ${e.error && e.error.message}`));
      dc.addEventListener('message', (ev) => {
        try {
          this.received.push(JSON.parse(ev.data));
        } catch (e) {
          this.received.push({ raw: String(ev.data).slice(0, 200) });
        }
      });
      return true;
    },

    sendBridge(obj) {
      if (this.dc && this.dc.readyState === 'open') {
        this.dc.send(JSON.stringify(obj));
        note(`sent ${obj.colibriClass}`);
      }
    },

    /** ReceiverVideoConstraints as jitsi-meet sends it for a 2-person call (the other on stage). */
    sendConstraints() {
      const constraints = {};
      for (const s of this.remoteVideoSources) constraints[s] = { maxHeight: 720 };
      this.sendBridge({
        colibriClass: 'ReceiverVideoConstraints',
        lastN: -1,
        assumedBandwidthBps: -1,
        defaultConstraints: { maxHeight: 360 },
        constraints,
        onStageSources: this.remoteVideoSources.slice(0, 1),
        selectedSources: [],
      });
    },

    setRemoteVideoSources(names) {
      this.remoteVideoSources = names;
      this.sendConstraints();
    },

    /** setRemoteDescription(offer) + createAnswer; returns the raw answer for munging in node. */
    async applyOffer(sdp) {
      await this.pc.setRemoteDescription({ type: 'offer', sdp });
      const answer = await this.pc.createAnswer();
      return answer.sdp;
    },

    /**
     * setLocalDescription(munged answer); on the first call with `simulcast`, set LJM's encodings
     * (scaleResolutionDownBy 4/2/1, VP8 max bitrates 200k/500k/1.5M). Waits for ICE gathering
     * (bounded) and returns the local description with its candidates.
     */
    async setLocal(sdp, { simulcast = true, gatherTimeoutMs = 5000 } = {}) {
      await this.pc.setLocalDescription({ type: 'answer', sdp });
      let encodings = null;
      const sender = this.pc.getSenders().find((s) => s.track && s.track.kind === 'video');
      if (sender) {
        const params = sender.getParameters();
        if (simulcast && !this.simulcastApplied && params.encodings && params.encodings.length === 3) {
          const scale = [4, 2, 1];
          const maxBitrate = [200000, 500000, 1500000];
          params.encodings.forEach((e, i) => {
            e.scaleResolutionDownBy = scale[i];
            e.maxBitrate = maxBitrate[i];
            e.active = true;
          });
          await sender.setParameters(params);
          this.simulcastApplied = true;
        }
        encodings = sender.getParameters().encodings.map((e) => ({
          active: e.active, scaleResolutionDownBy: e.scaleResolutionDownBy, maxBitrate: e.maxBitrate,
        }));
      }
      if (this.pc.iceGatheringState !== 'complete') {
        await new Promise((resolve) => {
          const t = setTimeout(resolve, gatherTimeoutMs);
          this.pc.addEventListener('icegatheringstatechange', () => {
            if (this.pc.iceGatheringState === 'complete') {
              clearTimeout(t);
              resolve();
            }
          });
        });
      }
      return { sdp: this.pc.localDescription.sdp, encodings };
    },

    /** The getStats() fields the test prints and checks. */
    async stats() {
      const report = await this.pc.getStats();
      const byId = new Map();
      report.forEach((s) => byId.set(s.id, s));
      const out = {
        connectionState: this.pc.connectionState,
        iceConnectionState: this.pc.iceConnectionState,
        bridgeChannel: this.dc ? this.dc.readyState : 'none',
        bridgeMessages: this.received.map((m) => m.colibriClass || 'raw'),
        transport: null,
        pair: null,
        inbound: [],
        outbound: [],
      };
      report.forEach((s) => {
        if (s.type === 'transport') {
          out.transport = {
            dtlsState: s.dtlsState, dtlsRole: s.dtlsRole, iceRole: s.iceRole, iceState: s.iceState,
            srtpCipher: s.srtpCipher, dtlsCipher: s.dtlsCipher, tlsVersion: s.tlsVersion,
          };
          const pair = byId.get(s.selectedCandidatePairId);
          if (pair) {
            const l = byId.get(pair.localCandidateId);
            const r = byId.get(pair.remoteCandidateId);
            out.pair = {
              state: pair.state, nominated: pair.nominated,
              local: l && `${l.address}:${l.port}/${l.candidateType}`,
              remote: r && `${r.address}:${r.port}/${r.candidateType}`,
              availableOutgoingBitrate: pair.availableOutgoingBitrate,
              currentRoundTripTime: pair.currentRoundTripTime,
            };
          }
        } else if (s.type === 'inbound-rtp') {
          out.inbound.push({
            kind: s.kind, ssrc: s.ssrc, mid: s.mid, packetsReceived: s.packetsReceived, packetsLost: s.packetsLost,
            bytesReceived: s.bytesReceived, framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded,
            frameWidth: s.frameWidth, frameHeight: s.frameHeight, decoderImplementation: s.decoderImplementation,
            nackCount: s.nackCount, pliCount: s.pliCount, firCount: s.firCount, jitter: s.jitter,
            codec: s.codecId && byId.get(s.codecId) ? byId.get(s.codecId).mimeType : undefined,
          });
        } else if (s.type === 'outbound-rtp') {
          out.outbound.push({
            kind: s.kind, ssrc: s.ssrc, mid: s.mid, packetsSent: s.packetsSent, bytesSent: s.bytesSent,
            framesEncoded: s.framesEncoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
            qualityLimitationReason: s.qualityLimitationReason, pliCount: s.pliCount, nackCount: s.nackCount,
            firCount: s.firCount, active: s.active,
            codec: s.codecId && byId.get(s.codecId) ? byId.get(s.codecId).mimeType : undefined,
          });
        }
      });
      return out;
    },
  };

  window.palimClient = client;
})();
