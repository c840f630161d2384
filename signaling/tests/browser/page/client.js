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
    receivedAt: [], // performance.now() of each entry of `received`
    remoteVideoSources: [], // source names of remote video, for ReceiverVideoConstraints
    constraints: null, // the ReceiverVideoConstraints to send on open (null: the 2-person default)
    simulcastApplied: false,
    codec: 'VP8', // preferred video codec (put first in the offer by the test)
    scalabilityMode: null, // SVC mode on the one active encoding (AV1/VP9), as LJM in full-SVC mode
    senderConstraints: [], // SenderSourceConstraints maxHeight values applied, in order
    applySenderConstraints: true,
    monitor: null,
    log,

    /**
     * getUserMedia (fake devices), the PeerConnection, the local tracks and the data channel.
     * `codec` ('VP8' | 'VP9' | 'AV1') is the codec the test put first in the offer (lib/sdp.js,
     * as LJM's codec-order munging does; it sets the SVC bitrate); `scalabilityMode` (e.g.
     * 'L3T3_KEY') makes the first encoding an SVC stream and the other two inactive (LJM's full
     * SVC mode); `constraints` replaces the ReceiverVideoConstraints sent on channel open;
     * `source: 'canvas'` replaces the fake camera by canvasTrack(); `audioEnabled: false` mutes
     * the mic (silence is sent).
     */
    async init({
      endpointId, width = 640, height = 360, frameRate = 30, codec = 'VP8', scalabilityMode = null,
      constraints = null, applySenderConstraints = true, source = 'camera', audioEnabled = true,
    }) {
      this.endpointId = endpointId;
      this.codec = codec;
      this.scalabilityMode = scalabilityMode;
      this.constraints = constraints;
      this.applySenderConstraints = applySenderConstraints;
      document.getElementById('who').textContent = endpointId;
      if (source === 'canvas') {
        const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
        this.stream = new MediaStream([...mic.getAudioTracks(), this.canvasTrack(width, height, frameRate)]);
      } else {
        this.stream = await navigator.mediaDevices.getUserMedia({
          audio: true,
          video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } },
        });
      }
      // A muted mic (track disabled) sends silence, so it never becomes the dominant speaker.
      for (const t of this.stream.getAudioTracks()) t.enabled = audioEnabled;
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
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (e) {
          msg = { raw: String(ev.data).slice(0, 200) };
        }
        this.received.push(msg);
        this.receivedAt.push(performance.now());
        if (msg && msg.colibriClass === 'SenderSourceConstraints' && msg.sourceName === `${endpointId}-v0`) {
          this.onSenderConstraints(msg.maxHeight).catch((e) => note(`applying SenderSourceConstraints failed: ${e.message}`));
        }
      });
      return true;
    },

    /**
     * A width×height canvas track at frameRate with enough detail that the encoder needs the
     * bitrate LJM allows a 720p layer (Chromium's fake camera is too easy to compress: its 720p
     * layer stays near 0.8 Mbps). Each frame: a moving gradient, moving bars, and a region of
     * fresh random 10×10 blocks; about a quarter of the picture is new every frame.
     */
    canvasTrack(width, height, frameRate) {
      const canvas = document.createElement('canvas');
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext('2d');
      const tile = document.createElement('canvas');
      tile.width = Math.max(1, Math.round(width / 20));
      tile.height = Math.max(1, Math.round(height / 20));
      const tctx = tile.getContext('2d');
      const img = tctx.createImageData(tile.width, tile.height);
      let n = 0;
      const draw = () => {
        n += 1;
        const g = ctx.createLinearGradient(0, 0, width, height);
        g.addColorStop(0, `hsl(${(n * 3) % 360},70%,50%)`);
        g.addColorStop(1, `hsl(${(n * 3 + 180) % 360},70%,50%)`);
        ctx.fillStyle = g;
        ctx.fillRect(0, 0, width, height);
        for (let i = 0; i < 12; i++) {
          ctx.fillStyle = `hsl(${(i * 30 + n) % 360},80%,${30 + (i % 3) * 20}%)`;
          ctx.fillRect(((n * (i + 2) * 3) % (width + 200)) - 100, (i * height) / 12, 80, height / 14);
        }
        const d = img.data;
        for (let i = 0; i < d.length; i += 4) {
          const v = (Math.random() * 256) | 0;
          d[i] = v;
          d[i + 1] = (v * 7) & 255;
          d[i + 2] = 255 - v;
          d[i + 3] = 255;
        }
        tctx.putImageData(img, 0, 0);
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(tile, 0, 0, tile.width, tile.height, width / 4, height / 4, width / 2, height / 2);
        ctx.fillStyle = '#fff';
        ctx.font = `${Math.round(height / 10)}px monospace`;
        ctx.fillText(`${this.endpointId} ${n}`, 20, height - 20);
      };
      draw();
      setInterval(draw, 1000 / frameRate);
      return canvas.captureStream(frameRate).getVideoTracks()[0];
    },

    sendBridge(obj) {
      if (this.dc && this.dc.readyState === 'open') {
        this.dc.send(JSON.stringify(obj));
        note(`sent ${obj.colibriClass}`);
        return true;
      }
      return false;
    },

    /** Send any string (or a string of `repeat` × `text`) on the bridge channel; throws if the browser refuses. */
    sendRaw(text, repeat = 1) {
      if (!this.dc || this.dc.readyState !== 'open') return false;
      this.dc.send(repeat > 1 ? text.repeat(repeat) : text);
      note(`sent raw (${text.length * repeat} chars)`);
      return true;
    },

    /** Replace the constraints this page sends (now and on every later open/renegotiation). */
    setConstraints(c) {
      this.constraints = c;
      return this.sendConstraints();
    },

    /**
     * LJM applies the bridge's SenderSourceConstraints to its own encodings: simulcast layers
     * whose height exceeds maxHeight are deactivated (the lowest stays on while maxHeight > 0),
     * -1 = all, 0 = none. In full-SVC mode the one encoding is on while maxHeight != 0.
     */
    async onSenderConstraints(maxHeight) {
      this.senderConstraints.push(maxHeight);
      note(`SenderSourceConstraints maxHeight=${maxHeight}`);
      if (!this.applySenderConstraints || !this.simulcastApplied) return;
      const sender = this.pc.getSenders().find((s) => s.track && s.track.kind === 'video');
      if (!sender) return;
      const params = sender.getParameters();
      const full = this.stream.getVideoTracks()[0].getSettings().height || 720;
      params.encodings.forEach((e, i) => {
        if (this.scalabilityMode) {
          e.active = i === 0 && maxHeight !== 0;
        } else {
          const h = full / (e.scaleResolutionDownBy || 1);
          e.active = maxHeight < 0 || (maxHeight > 0 && (i === 0 || h <= maxHeight));
        }
      });
      await sender.setParameters(params);
    },

    /** ReceiverVideoConstraints as jitsi-meet sends it for a 2-person call (the other on stage). */
    sendConstraints() {
      if (this.constraints) return this.sendBridge({ colibriClass: 'ReceiverVideoConstraints', ...this.constraints });
      const constraints = {};
      for (const s of this.remoteVideoSources) constraints[s] = { maxHeight: 720 };
      return this.sendBridge({
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
          if (this.scalabilityMode) {
            // LJM's full-SVC mode (AV1/VP9): one encoding at full resolution carries all the
            // spatial layers; the other two SIM SSRCs stay signalled but inactive.
            const maxBitrate = { AV1: 1000000, VP9: 1200000 }[this.codec] || 1500000;
            params.encodings.forEach((e, i) => {
              e.active = i === 0;
              e.scaleResolutionDownBy = 1;
              if (i === 0) {
                e.scalabilityMode = this.scalabilityMode;
                e.maxBitrate = maxBitrate;
              }
            });
          } else {
            const scale = [4, 2, 1];
            const maxBitrate = [200000, 500000, 1500000];
            params.encodings.forEach((e, i) => {
              e.scaleResolutionDownBy = scale[i];
              e.maxBitrate = maxBitrate[i];
              e.active = true;
            });
          }
          // Keep the resolution when the (shared, 2-core) CPU is busy: the tests check heights.
          params.degradationPreference = 'maintain-resolution';
          await sender.setParameters(params);
          this.simulcastApplied = true;
        }
        encodings = sender.getParameters().encodings.map((e) => ({
          active: e.active, scaleResolutionDownBy: e.scaleResolutionDownBy, maxBitrate: e.maxBitrate,
          scalabilityMode: e.scalabilityMode,
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

    /**
     * Sample the inbound-rtp of `ssrc` every `periodMs` (in the page, so that the samples are
     * evenly spaced): { t (ms), framesDecoded, frameHeight, bytesReceived, freezeCount,
     * totalFreezesDuration }. stopMonitor() returns the samples.
     */
    async startMonitor(ssrc, periodMs = 100) {
      this.stopMonitor();
      const samples = [];
      const sample = async () => {
        const report = await this.pc.getStats();
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.ssrc === ssrc) {
            samples.push({
              t: performance.now(), framesDecoded: s.framesDecoded || 0, frameHeight: s.frameHeight || 0,
              bytesReceived: s.bytesReceived || 0, freezeCount: s.freezeCount || 0,
              totalFreezesDuration: s.totalFreezesDuration || 0, framesReceived: s.framesReceived || 0,
              packetsReceived: s.packetsReceived || 0, pliCount: s.pliCount || 0,
              keyFramesDecoded: s.keyFramesDecoded || 0, framesDropped: s.framesDropped || 0,
            });
          }
        });
      };
      // The first sample before returning: a caller that changes something right after (new
      // constraints) sees the state before it in samples[0], however fast the change is.
      await sample();
      const timer = setInterval(sample, periodMs);
      this.monitor = { timer, samples };
      return true;
    },

    stopMonitor() {
      if (!this.monitor) return [];
      clearInterval(this.monitor.timer);
      const { samples } = this.monitor;
      this.monitor = null;
      return samples;
    },

    /** Bridge-channel messages received since index `from`, with their page time. */
    messages(from = 0) {
      return this.received.slice(from).map((m, i) => ({ t: this.receivedAt[from + i], msg: m }));
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
        now: performance.now(),
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
            freezeCount: s.freezeCount, totalFreezesDuration: s.totalFreezesDuration,
            codec: s.codecId && byId.get(s.codecId) ? byId.get(s.codecId).mimeType : undefined,
          });
        } else if (s.type === 'outbound-rtp') {
          out.outbound.push({
            kind: s.kind, ssrc: s.ssrc, mid: s.mid, packetsSent: s.packetsSent, bytesSent: s.bytesSent,
            framesEncoded: s.framesEncoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
            qualityLimitationReason: s.qualityLimitationReason,
            qualityLimitationResolutionChanges: s.qualityLimitationResolutionChanges, pliCount: s.pliCount, nackCount: s.nackCount,
            firCount: s.firCount, active: s.active, rid: s.rid, scalabilityMode: s.scalabilityMode,
            targetBitrate: s.targetBitrate, encoderImplementation: s.encoderImplementation,
            codec: s.codecId && byId.get(s.codecId) ? byId.get(s.codecId).mimeType : undefined,
          });
        }
      });
      return out;
    },
  };

  window.palimClient = client;
})();
