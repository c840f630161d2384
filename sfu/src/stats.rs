//! A snapshot of the core's counters, for REST `/colibri/stats`, `/metrics` and brewery presence.

/// Counters are totals since start; gauges are current values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub conferences: usize,
    pub endpoints: usize,
    /// Endpoints whose DTLS handshake completed.
    pub endpoints_connected: usize,
    pub rtp_packets_received: u64,
    pub rtp_packets_sent: u64,
    pub rtcp_packets_received: u64,
    pub rtcp_packets_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub dtls_failures: u64,
    /// DTLS handshakes failed because the peer's certificate matched none of the signalled
    /// fingerprints (robustness.md case 18); also counted in `dtls_failures`.
    pub dtls_fingerprint_mismatches: u64,
    pub ice_failures: u64,
    /// Endpoints whose media moved to a new ICE-authenticated address (NAT rebinding,
    /// robustness.md case 17).
    pub ice_rebinds: u64,
    /// PLI/FIR forwarded to a media sender.
    pub keyframe_requests_forwarded: u64,
    /// PLI/FIR suppressed by the per-SSRC rate limit (not counted as drops).
    pub keyframe_requests_suppressed: u64,
    /// NACKs the bridge sent toward senders (uplink loss).
    pub nacks_sent: u64,
    /// Packets the bridge retransmitted to receivers from its cache.
    pub retransmissions: u64,
    /// Bridge-channel messages received / sent.
    pub channel_messages_received: u64,
    pub channel_messages_sent: u64,
    /// Video packets a receiver's projection did not forward (layers it does not get).
    pub projection_drops: u64,
    /// Padding-only packets sent for probing (not counted in `rtp_packets_sent`, nor are
    /// retransmissions: that one counts forwarded media).
    pub padding_packets_sent: u64,
    /// Dropped datagrams by reason (stable snake_case names, e.g. `unknown_source`,
    /// `malformed_rtp`, `srtp_auth_failed`, `srtp_replay`, `not_ice_validated`).
    pub drops: Vec<(&'static str, u64)>,
    /// Panics caught in per-conference processing (each tore its conference down).
    pub task_panics: u64,
    /// Per endpoint (Colibri2 id): the downlink estimate the allocator uses, in bps
    /// (transport-cc estimate, else the receiver's REMB, else none). For `/debug`.
    pub endpoint_bwe: Vec<(String, Option<u64>)>,
}

impl Stats {
    /// The total of all drop counters.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}
