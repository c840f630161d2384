//! NAT rebinding (robustness.md case 17): the endpoint's NAT gave it a new public address, so
//! its packets arrive from a new 5-tuple. An ICE-authenticated Binding request from there
//! moves the endpoint's media to it, keeping the DTLS association and the SRTP contexts.
//!
//! rtc-ice cannot do this itself: its selected pair never moves (the controlling side ignores
//! USE-CANDIDATE, refusing such a request before it checks MESSAGE-INTEGRITY, and
//! `set_selected_pair` is crate-private). So the shard decides ([`should_rebind`]), and
//! [`rebind`] replaces the endpoint's agent with a fresh one that knows only the new address.
//!
//! Why a fresh agent rather than keeping the old one and overriding the address we send to:
//! the old agent still believes in the old pair, sends its consent checks there and, with no
//! answers, goes Disconnected and then Failed, which expires the endpoint 45 s later. The new
//! agent has the same local and remote credentials (the peer sees nothing new: same ufrag, same
//! password, same candidates), the new address as its only remote candidate, and the same role;
//! as controlling it checks and nominates that pair, and its consent freshness (RFC 7675) runs
//! on it. The old agent is closed and dropped at once, so nothing it would have reported (the
//! Failed of the old pair in particular) can reach the shard. The new agent's
//! `SelectedCandidatePairChange` names the address the endpoint already sends to and does not
//! announce `IceConnected` again (`drive` announces only the first selection).

use super::*;

/// How long the selected address must have been silent (nothing authenticated from it: no
/// STUN, SRTP, SRTCP or DTLS) before an authenticated Binding request *without* USE-CANDIDATE
/// from another address moves the media there. A browser is the ICE-controlled side and never
/// nominates, so after a NAT rebinding its consent checks from the new mapping are all the
/// bridge gets. A live endpoint is never silent that long: audio alone is 50 packets a second,
/// a receive-only endpoint sends transport-cc feedback or RTCP receiver reports at least every
/// second, and consent checks come every 5 s on average. 2 s is well under the 15 s after which
/// the agent calls the old pair disconnected, and long enough that a check on a second,
/// still-unselected path (Chrome pings backup connections) does not pull media away from a
/// working one.
pub(super) const REBIND_SILENCE: Duration = Duration::from_secs(2);

use crate::wire::stun::{self, ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME, ATTR_USE_CANDIDATE};

/// The attributes of a well-formed STUN message that precede MESSAGE-INTEGRITY (RFC 8489
/// §14.5: what follows it, but FINGERPRINT, is ignored), each as (type, offset of the
/// attribute header, value). Yields MESSAGE-INTEGRITY itself last, if present.
struct Attrs<'a> {
    buf: &'a [u8],
    at: usize,
    end: usize,
    done: bool,
}

fn attrs(buf: &[u8]) -> Attrs<'_> {
    let end = match buf.get(2..4) {
        Some(l) => 20 + usize::from(u16::from_be_bytes([l[0], l[1]])),
        None => 0,
    };
    let ok = demux::stun_type(buf).is_some() && end == buf.len();
    Attrs {
        buf,
        at: 20,
        end,
        done: !ok,
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at + 4 > self.end {
            return None;
        }
        let h = self.buf.get(self.at..self.at + 4)?;
        let typ = u16::from_be_bytes([h[0], h[1]]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        let start = self.at;
        let Some(value) = self.buf.get(start + 4..start + 4 + len) else {
            self.done = true;
            return None;
        };
        self.at = start + 4 + len.div_ceil(4) * 4;
        if typ == ATTR_MESSAGE_INTEGRITY {
            self.done = true;
        }
        Some((typ, start, value))
    }
}

/// Whether a Binding request carries USE-CANDIDATE (before MESSAGE-INTEGRITY).
pub(super) fn use_candidate(buf: &[u8]) -> bool {
    demux::stun_type(buf) == Some(demux::STUN_BINDING_REQUEST) && attrs(buf).any(|(t, _, _)| t == ATTR_USE_CANDIDATE)
}

/// Whether a STUN message carries ICE-CONTROLLING (before MESSAGE-INTEGRITY).
pub(super) fn ice_controlling(buf: &[u8]) -> bool {
    attrs(buf).any(|(t, _, _)| t == ATTR_ICE_CONTROLLING)
}

/// Whether `buf` is a Binding request for this endpoint, authenticated as rtc-ice would check
/// it (RFC 8445 §7.3, RFC 8489 §14.5): USERNAME exactly `<local ufrag>:<remote ufrag>` and a
/// MESSAGE-INTEGRITY (HMAC-SHA1 keyed with the local password) that verifies. Used for the
/// nominating requests the controlling agent refuses unchecked. No allocation.
pub(super) fn authenticate(buf: &[u8], local_ufrag: &str, remote_ufrag: &str, local_pwd: &str) -> bool {
    if demux::stun_type(buf) != Some(demux::STUN_BINDING_REQUEST) {
        return false;
    }
    let mut user_ok = false;
    let mut integrity = None;
    for (typ, at, value) in attrs(buf) {
        match typ {
            ATTR_USERNAME => {
                user_ok = value.len() == local_ufrag.len() + 1 + remote_ufrag.len()
                    && value.starts_with(local_ufrag.as_bytes())
                    && value[local_ufrag.len()] == b':'
                    && value.ends_with(remote_ufrag.as_bytes());
            }
            ATTR_MESSAGE_INTEGRITY => integrity = Some((at, value)),
            _ => {}
        }
    }
    user_ok && integrity.is_some_and(|(at, tag)| integrity_ok(buf, at, tag, local_pwd))
}

/// Whether `tag`, the MESSAGE-INTEGRITY value of the attribute at offset `at` of `buf`, is the
/// HMAC-SHA1 keyed with `pwd` of the message before it, the header's length field counting up
/// to and including MESSAGE-INTEGRITY (RFC 8489 §14.5). Constant-time compare.
fn integrity_ok(buf: &[u8], at: usize, tag: &[u8], pwd: &str) -> bool {
    if tag.len() != 20 || at < 20 || at > buf.len() {
        return false;
    }
    let len = (at - 20 + 24) as u16;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(&buf[0..2]);
    ctx.update(&len.to_be_bytes());
    ctx.update(&buf[4..at]);
    let expected = ctx.sign();
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), tag).is_ok()
}

/// The Binding success answering the request `req` from `from` ([`stun::binding_success`]
/// for its transaction), written into `out`.
pub(super) fn binding_success(req: &[u8], from: SocketAddr, local_pwd: &str, out: &mut BytesMut) {
    let mut txid = [0u8; 12];
    if let Some(t) = req.get(8..20) {
        txid.copy_from_slice(t);
    }
    stun::binding_success(&txid, from, local_pwd, out);
}

/// Whether an ICE-authenticated Binding request from `from` (with USE-CANDIDATE when
/// `nominated`) moves `ep`'s media there: only once a pair was selected, only to another
/// address, and without nomination only when the selected address has been silent for
/// [`REBIND_SILENCE`].
pub(super) fn should_rebind(ep: &Endpoint, from: SocketAddr, nominated: bool, now: Instant) -> bool {
    let Some(selected) = ep.selected else {
        return false;
    };
    if selected == from || !ep.ice_connected {
        return false;
    }
    nominated
        || ep
            .last_heard(selected)
            .is_none_or(|t| now.saturating_duration_since(t) >= REBIND_SILENCE)
}

/// Move `ep`'s media to `to` (already validated and in the demux map): a fresh agent with the
/// same credentials and role and `to` as its only remote candidate replaces the current one
/// (see the module docs). What the old agent still had queued for `to` (the response to the
/// request that triggered this) is sent first; the rest, consent checks toward the old
/// address, is dropped with it. Returns the previous address. On error nothing changed.
pub(super) fn rebind(
    now: Instant,
    ep: &mut Endpoint,
    to: SocketAddr,
    hosts: &[SocketAddr],
    provider: &Arc<dyn RTCCryptoProvider>,
    io: &mut Io,
) -> Result<Option<SocketAddr>, String> {
    let (Some(ru), Some(rp)) = (ep.remote.ufrag.clone(), ep.remote.pwd.clone()) else {
        return Err("no remote ICE credentials".into());
    };
    let local = ep.ice.get_local_credentials().clone();
    let mut agent = new_agent(
        now,
        local.ufrag,
        local.pwd,
        ep.ice_controlling,
        hosts,
        ep.consent,
        provider.clone(),
    )?;
    agent
        .add_remote_candidate(remote_host_candidate(to)?)
        .map_err(|e| e.to_string())?;
    agent
        .start_connectivity_checks(now, ep.ice_controlling, ru, rp)
        .map_err(|e| e.to_string())?;
    while let Some(t) = ep.ice.poll_write() {
        if t.transport.peer_addr == to {
            io.send(to, t.message);
        }
    }
    let mut old = std::mem::replace(&mut ep.ice, agent);
    let _ = old.close();
    drop(old);
    let previous = ep.selected.replace(to);
    io.c.ice_rebinds += 1;
    tracing::info!(parent: &ep.span, old = ?previous, new = %to, "NAT rebinding: media moved");
    Ok(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1: the sample request (username "evtj:h6vY") authenticates with its
    /// password and with nothing else; one flipped bit anywhere before the tag breaks it.
    #[test]
    fn rfc5769_request_authenticates() {
        let req = crate::wire::demux::tests::RFC5769_REQUEST;
        let pwd = "VOkJxbRl1RmTxUk/WvJxBt";
        assert!(authenticate(&req, "evtj", "h6vY", pwd));
        assert!(
            !authenticate(&req, "evtj", "h6vY", "VOkJxbRl1RmTxUk/WvJxBu"),
            "wrong password"
        );
        assert!(!authenticate(&req, "evtj", "h6v", pwd), "wrong remote ufrag");
        assert!(!authenticate(&req, "evt", "jh6vY", pwd), "wrong split");
        for i in 0..80 {
            let mut bad = req;
            bad[i] ^= 0x01;
            assert!(!authenticate(&bad, "evtj", "h6vY", pwd), "bit flipped at byte {i}");
        }
        assert!(!authenticate(&req[..100], "evtj", "h6vY", pwd), "truncated");
        assert!(!use_candidate(&req));
    }

    /// A check built by the test builder with USE-CANDIDATE is recognised and authenticates;
    /// the response it gets is a well-formed success the client's credentials verify.
    #[test]
    fn nominating_check_and_response() {
        let m = crate::testing::ice_check_nominating(&[3; 12], "bridge:client", "secretpassword123456");
        assert!(use_candidate(&m));
        assert!(authenticate(&m, "bridge", "client", "secretpassword123456"));
        let plain = crate::testing::ice_check(&[3; 12], "bridge:client", "secretpassword123456");
        assert!(!use_candidate(&plain));
        assert!(authenticate(&plain, "bridge", "client", "secretpassword123456"));

        for from in ["198.51.100.7:40000", "[2001:db8::7]:40000"] {
            let from: SocketAddr = from.parse().expect("literal");
            let mut out = BytesMut::new();
            binding_success(&m, from, "secretpassword123456", &mut out);
            assert_eq!(demux::stun_type(&out), Some(demux::STUN_BINDING_SUCCESS));
            assert_eq!(&out[8..20], &[3; 12]);
            // The response's own attributes parse and its integrity verifies with the same key.
            let found: Vec<u16> = attrs(&out).map(|(t, _, _)| t).collect();
            assert_eq!(found, vec![stun::ATTR_XOR_MAPPED_ADDRESS, ATTR_MESSAGE_INTEGRITY]);
            let (_, at, xor) = attrs(&out).next().expect("xor-mapped-address");
            assert_eq!(at, 20);
            let port = u16::from_be_bytes([xor[2], xor[3]]) ^ 0x2112;
            assert_eq!(port, from.port());
            assert_eq!(xor[0..2], [0, if from.is_ipv4() { 1 } else { 2 }]);
            let (_, at, tag) = attrs(&out).last().expect("message-integrity");
            assert!(integrity_ok(&out, at, tag, "secretpassword123456"));
            assert!(!integrity_ok(&out, at, tag, "secretpassword123457"));
            let n = out.len();
            let fp = u32::from_be_bytes([out[n - 4], out[n - 3], out[n - 2], out[n - 1]]);
            assert_eq!(fp, stun::crc32(&out[..n - 8]) ^ stun::FINGERPRINT_XOR);
        }
    }
}
