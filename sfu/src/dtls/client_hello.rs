//! Reads the SRTP profiles a DTLS client offers (the `use_srtp` extension, RFC 5764 §4.1.1)
//! from the first flight, before rtc-dtls sees it.
//!
//! Why: rtc-dtls as a server walks the *client's* profile list and takes the first it supports,
//! and Chrome lists `SRTP_AES128_CM_HMAC_SHA1_80` first. The bridge wants AEAD_AES_128_GCM
//! (about 3.5× cheaper per packet) whenever the client offers it, so it buffers the first DTLS
//! datagrams of a new connection, reassembles the ClientHello here, and then builds the
//! rtc-dtls server config with exactly one profile.
//!
//! Memory is bounded: at most [`MAX_HELLO`] bytes of handshake body are kept.

/// Largest ClientHello we reassemble. Chrome's (with a post-quantum key share) is ~1.4 KB.
pub const MAX_HELLO: usize = 8 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_USE_SRTP: u16 = 14;

/// Reassembles the first ClientHello (handshake message_seq of the first fragment seen)
/// from DTLS records spread over any number of datagrams.
#[derive(Debug, Default)]
pub struct HelloAssembler {
    /// Declared total length of the ClientHello body, once known.
    total: Option<usize>,
    message_seq: Option<u16>,
    body: Vec<u8>,
    /// Received byte ranges, merged; complete when it is `[(0, total)]`.
    have: Vec<(usize, usize)>,
}

/// Outcome of feeding a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// More fragments are needed.
    Incomplete,
    /// The ClientHello is complete; here are the SRTP profile ids it offers, in its order
    /// (empty when it has no use_srtp extension).
    Complete(Vec<u16>),
    /// Not a valid DTLS ClientHello or over the size bound.
    Malformed,
}

impl HelloAssembler {
    /// Feed one datagram (possibly several records).
    pub fn feed(&mut self, mut dgram: &[u8]) -> Feed {
        while !dgram.is_empty() {
            if dgram.len() < 13 {
                return Feed::Malformed;
            }
            let ctype = dgram[0];
            let epoch = u16::from_be_bytes([dgram[3], dgram[4]]);
            let len = u16::from_be_bytes([dgram[11], dgram[12]]) as usize;
            let Some(record) = dgram.get(13..13 + len) else {
                return Feed::Malformed;
            };
            dgram = &dgram[13 + len..];
            if ctype != CONTENT_HANDSHAKE || epoch != 0 {
                continue;
            }
            if let Err(()) = self.feed_handshake(record) {
                return Feed::Malformed;
            }
        }
        match self.total {
            Some(total) if self.have.first() == Some(&(0, total)) => match parse_client_hello_srtp(&self.body) {
                Some(p) => Feed::Complete(p),
                None => Feed::Malformed,
            },
            _ => Feed::Incomplete,
        }
    }

    fn feed_handshake(&mut self, mut rec: &[u8]) -> Result<(), ()> {
        while !rec.is_empty() {
            if rec.len() < 12 {
                return Err(());
            }
            let msg_type = rec[0];
            let length = u32::from_be_bytes([0, rec[1], rec[2], rec[3]]) as usize;
            let seq = u16::from_be_bytes([rec[4], rec[5]]);
            let off = u32::from_be_bytes([0, rec[6], rec[7], rec[8]]) as usize;
            let flen = u32::from_be_bytes([0, rec[9], rec[10], rec[11]]) as usize;
            let frag = rec.get(12..12 + flen).ok_or(())?;
            rec = &rec[12 + flen..];
            if msg_type != HANDSHAKE_CLIENT_HELLO {
                continue;
            }
            if length > MAX_HELLO || off + flen > length {
                return Err(());
            }
            match (self.total, self.message_seq) {
                (None, _) => {
                    self.total = Some(length);
                    self.message_seq = Some(seq);
                    self.body = vec![0; length];
                }
                (Some(t), Some(s)) if t == length && s == seq => {}
                // A different ClientHello (e.g. the one after HelloVerifyRequest): we only
                // need one, ignore the other.
                _ => continue,
            }
            self.body[off..off + flen].copy_from_slice(frag);
            self.add_range(off, off + flen);
        }
        Ok(())
    }

    fn add_range(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.have.push((a, b));
        self.have.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.have.len());
        for &(s, e) in &self.have {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.have = merged;
    }
}

/// The SRTP profile ids of a ClientHello body's use_srtp extension (empty if absent).
/// `None` if the body is malformed.
pub fn parse_client_hello_srtp(body: &[u8]) -> Option<Vec<u16>> {
    let mut r = Reader(body);
    r.take(2)?; // client_version
    r.take(32)?; // random
    let sid = r.u8()? as usize;
    r.take(sid)?;
    let cookie = r.u8()? as usize;
    r.take(cookie)?;
    let suites = r.u16()? as usize;
    r.take(suites)?;
    let comp = r.u8()? as usize;
    r.take(comp)?;
    if r.0.is_empty() {
        return Some(Vec::new()); // no extensions at all
    }
    let ext_len = r.u16()? as usize;
    let mut exts = Reader(r.take(ext_len)?);
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let len = exts.u16()? as usize;
        let data = exts.take(len)?;
        if typ == EXT_USE_SRTP {
            let mut d = Reader(data);
            let plen = d.u16()? as usize;
            if !plen.is_multiple_of(2) {
                return None;
            }
            let list = d.take(plen)?;
            return Some(list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect());
        }
    }
    Some(Vec::new())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello body shaped like Chrome's: session id, cookie, suites, other extensions
    /// before use_srtp.
    fn hello_body(profiles: &[u16]) -> Vec<u8> {
        let mut b = vec![0xFE, 0xFD];
        b.extend_from_slice(&[9; 32]);
        b.push(0); // session id
        b.push(0); // cookie
        b.extend_from_slice(&4u16.to_be_bytes());
        b.extend_from_slice(&[0xC0, 0x2B, 0xC0, 0x2F]);
        b.extend_from_slice(&[1, 0]);
        let mut exts = Vec::new();
        exts.extend_from_slice(&[0x00, 0x17, 0x00, 0x00]); // extended_master_secret
        exts.extend_from_slice(&[0x00, 0x0A, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]); // groups
        if !profiles.is_empty() {
            let plen = (profiles.len() * 2) as u16;
            exts.extend_from_slice(&EXT_USE_SRTP.to_be_bytes());
            exts.extend_from_slice(&(plen + 3).to_be_bytes());
            exts.extend_from_slice(&plen.to_be_bytes());
            for p in profiles {
                exts.extend_from_slice(&p.to_be_bytes());
            }
            exts.push(0); // empty MKI
        }
        b.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        b.extend_from_slice(&exts);
        b
    }

    fn record(body: &[u8], off: usize, flen: usize, seq: u16) -> Vec<u8> {
        let mut hs = vec![HANDSHAKE_CLIENT_HELLO];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&seq.to_be_bytes());
        hs.extend_from_slice(&(off as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&(flen as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body[off..off + flen]);
        let mut r = vec![CONTENT_HANDSHAKE, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        r.extend_from_slice(&hs);
        r
    }

    /// Chrome's order (CM80 first) is reported as sent; the caller decides.
    #[test]
    fn single_record_hello() {
        let body = hello_body(&[0x0001, 0x0008, 0x0007]);
        let mut a = HelloAssembler::default();
        assert_eq!(a.feed(&record(&body, 0, body.len(), 0)), Feed::Complete(vec![1, 8, 7]));
    }

    /// A ClientHello split over two datagrams (as Chrome's 1.4 KB one is) reassembles, in
    /// either order.
    #[test]
    fn fragmented_hello_any_order() {
        let body = hello_body(&[0x0007, 0x0001]);
        let cut = 40;
        let first = record(&body, 0, cut, 0);
        let second = record(&body, cut, body.len() - cut, 0);
        let mut a = HelloAssembler::default();
        assert_eq!(a.feed(&second), Feed::Incomplete);
        assert_eq!(a.feed(&first), Feed::Complete(vec![7, 1]));
        let mut a = HelloAssembler::default();
        assert_eq!(a.feed(&first), Feed::Incomplete);
        assert_eq!(a.feed(&second), Feed::Complete(vec![7, 1]));
    }

    /// No use_srtp means an empty list, not an error.
    #[test]
    fn hello_without_use_srtp() {
        let body = hello_body(&[]);
        let mut a = HelloAssembler::default();
        assert_eq!(a.feed(&record(&body, 0, body.len(), 0)), Feed::Complete(vec![]));
    }

    /// Lies about lengths and oversized messages are rejected; truncations never panic.
    #[test]
    fn malformed_hello() {
        let body = hello_body(&[7]);
        let mut r = record(&body, 0, body.len(), 0);
        r[12] = r[12].wrapping_add(1); // record longer than datagram
        assert_eq!(HelloAssembler::default().feed(&r), Feed::Malformed);
        let mut big = record(&body, 0, body.len(), 0);
        big[14] = 0xFF; // declared message length > MAX_HELLO
        assert_eq!(HelloAssembler::default().feed(&big), Feed::Malformed);
        let good = record(&body, 0, body.len(), 0);
        for n in 0..good.len() {
            let _ = HelloAssembler::default().feed(&good[..n]);
            let _ = parse_client_hello_srtp(&body[..n.min(body.len())]);
        }
    }
}
