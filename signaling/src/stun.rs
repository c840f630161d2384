//! Public address discovery with a STUN binding request (RFC 8489), as JVB's
//! `StunMappingCandidateHarvester` (docker `JVB_STUN_SERVERS`): asked once at start, from the
//! media port itself when it is free, so a port-preserving NAT maps exactly the port clients
//! will use. The mapped IP is advertised with the media port, as ice4j's mapping harvesters do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

const MAGIC: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Why no mapping was learnt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    #[error("STUN server {server:?}: {reason}")]
    Resolve { server: String, reason: String },
    #[error("STUN: {0}")]
    Io(#[from] std::io::Error),
    #[error("no STUN server answered within {0:?}")]
    Timeout(Duration),
    #[error("no STUN server configured for this address family")]
    NoServer,
}

/// A 20-byte binding request with transaction id `txid`.
pub fn binding_request(txid: [u8; 12]) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // length 0
    b[4..8].copy_from_slice(&MAGIC.to_be_bytes());
    b[8..20].copy_from_slice(&txid);
    b
}

/// The mapped address of a binding success response to `txid`; `None` for anything else
/// (another transaction, an error response, malformed bytes).
pub fn parse_binding_response(data: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if data.len() < 20 {
        return None;
    }
    let ty = u16::from_be_bytes([data[0], data[1]]);
    let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if ty != BINDING_SUCCESS || data[4..8] != MAGIC.to_be_bytes() || &data[8..20] != txid {
        return None;
    }
    let body = data.get(20..20 + len)?;
    let mut plain = None;
    let mut i = 0;
    while i + 4 <= body.len() {
        let at = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[i + 2], body[i + 3]]));
        let value = body.get(i + 4..i + 4 + alen)?;
        match at {
            ATTR_XOR_MAPPED_ADDRESS => {
                if let Some(a) = parse_address(value, Some(txid)) {
                    return Some(a);
                }
            }
            ATTR_MAPPED_ADDRESS => plain = plain.or_else(|| parse_address(value, None)),
            _ => {}
        }
        // Attributes are padded to 4 bytes.
        i += 4 + alen.div_ceil(4) * 4;
    }
    plain
}

/// (XOR-)MAPPED-ADDRESS value: reserved, family, port, address.
fn parse_address(v: &[u8], xor: Option<&[u8; 12]>) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let family = v[1];
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    let cookie = MAGIC.to_be_bytes();
    if xor.is_some() {
        port ^= (MAGIC >> 16) as u16;
    }
    match family {
        0x01 => {
            let a: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            let a = match xor {
                Some(_) => std::array::from_fn(|i| a[i] ^ cookie[i]),
                None => a,
            };
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        0x02 => {
            let a: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            let a = match xor {
                Some(txid) => {
                    let mut key = [0u8; 16];
                    key[..4].copy_from_slice(&cookie);
                    key[4..].copy_from_slice(txid);
                    std::array::from_fn(|i| a[i] ^ key[i])
                }
                None => a,
            };
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// Encode a binding success response carrying XOR-MAPPED-ADDRESS `mapped` (for test
/// responders).
pub fn binding_success(txid: &[u8; 12], mapped: SocketAddr) -> Vec<u8> {
    let cookie = MAGIC.to_be_bytes();
    let mut value = vec![0u8];
    let port = mapped.port() ^ (MAGIC >> 16) as u16;
    match mapped.ip() {
        IpAddr::V4(v4) => {
            value.push(0x01);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(v4.octets().iter().zip(cookie).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(v6) => {
            value.push(0x02);
            value.extend_from_slice(&port.to_be_bytes());
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&cookie);
            key[4..].copy_from_slice(txid);
            value.extend(v6.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
    // `value` is at most 20 bytes, so the lengths fit in u16.
    let mut out = Vec::with_capacity(24 + value.len());
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
    out.extend_from_slice(&cookie);
    out.extend_from_slice(txid);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(&value);
    out
}

/// Ask `servers` (`host:port`, tried together) for the address `local` maps to. Binds
/// `local` itself when it can (the media port, before the media core takes it), else an
/// ephemeral port on the same IP. Retransmits every 500 ms until `within` passes.
pub async fn discover(local: SocketAddr, servers: &[String], within: Duration) -> Result<SocketAddr, StunError> {
    let mut targets = Vec::new();
    for s in servers {
        let addrs = tokio::net::lookup_host(s.as_str())
            .await
            .map_err(|e| StunError::Resolve {
                server: s.clone(),
                reason: e.to_string(),
            })?;
        targets.extend(addrs.filter(|a| a.is_ipv4() == local.is_ipv4()));
    }
    if targets.is_empty() {
        return Err(StunError::NoServer);
    }
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%local, error = %e, "STUN from an ephemeral port instead of the media port");
            UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?
        }
    };
    let txid: [u8; 12] = rand::random();
    let req = binding_request(txid);
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1500];
    loop {
        for t in &targets {
            if let Err(e) = socket.send_to(&req, t).await {
                tracing::debug!(server = %t, error = %e, "STUN send failed");
            }
        }
        let retry = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        loop {
            match tokio::time::timeout_at(retry, socket.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    // ICMP unreachable from one server; others may still answer.
                    tracing::debug!(error = %e, "STUN receive error");
                    tokio::time::sleep_until(retry).await;
                    break;
                }
                Ok(Ok((n, from))) => {
                    if !targets.contains(&from) {
                        continue;
                    }
                    if let Some(mapped) = parse_binding_response(&buf[..n], &txid) {
                        return Ok(mapped);
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StunError::Timeout(within));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v4_and_v6() {
        let txid = [7u8; 12];
        for mapped in ["203.0.113.5:40000", "[2001:db8::5]:10000"] {
            let mapped: SocketAddr = mapped.parse().unwrap();
            let resp = binding_success(&txid, mapped);
            assert_eq!(parse_binding_response(&resp, &txid), Some(mapped));
            // Another transaction's answer is ignored.
            assert_eq!(parse_binding_response(&resp, &[8u8; 12]), None);
        }
    }

    #[test]
    fn request_shape() {
        let r = binding_request([1; 12]);
        assert_eq!(&r[0..4], &[0, 1, 0, 0]);
        assert_eq!(&r[4..8], &[0x21, 0x12, 0xA4, 0x42]);
    }

    #[test]
    fn malformed_responses_are_none() {
        let txid = [7u8; 12];
        let good = binding_success(&txid, "203.0.113.5:1".parse().unwrap());
        for n in 0..good.len() {
            // Truncations never panic; only the full message parses.
            let r = parse_binding_response(&good[..n], &txid);
            assert!(r.is_none() || n == good.len(), "{n}");
        }
        let mut bad_len = good.clone();
        bad_len[3] = 200;
        assert_eq!(parse_binding_response(&bad_len, &txid), None);
    }

    /// A responder on 127.0.0.1 answering with a fixed "public" address; discovery uses the
    /// requested local port.
    #[tokio::test]
    async fn discovers_through_a_loopback_responder() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let public: SocketAddr = "203.0.113.9:10000".parse().unwrap();
        let responder = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let txid: [u8; 12] = buf[8..20].try_into().unwrap();
            assert_eq!(n, 20);
            server.send_to(&binding_success(&txid, public), from).await.unwrap();
            from
        });
        // A free local port to ask from.
        let local = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let got = discover(local, &[server_addr.to_string()], Duration::from_secs(3))
            .await
            .unwrap();
        assert_eq!(got, public);
        let from = responder.await.unwrap();
        assert_eq!(from, local, "asked from the requested (media) port");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = discover(
            "127.0.0.1:0".parse().unwrap(),
            &[server.local_addr().unwrap().to_string()],
            Duration::from_millis(700),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StunError::Timeout(_)), "{err}");
    }
}
