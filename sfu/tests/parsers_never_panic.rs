//! Network input never panics: the hand-written parsers on the receive path accept any bytes.

use proptest::prelude::*;
use sfu::demux;
use sfu::dtls::client_hello::{parse_client_hello_srtp, HelloAssembler};
use sfu::wire::rtcp::{RtcpCompound, RtcpPacket};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Classification, STUN header and USERNAME scanning on arbitrary bytes.
    #[test]
    fn demux_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = demux::classify(&data);
        let _ = demux::stun_type(&data);
        let _ = demux::stun_local_ufrag(&data);
    }

    /// The ClientHello reassembler on arbitrary datagrams, with a DTLS-looking first byte.
    #[test]
    fn client_hello_any_bytes(dgrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 1..4)) {
        let mut a = HelloAssembler::default();
        for mut d in dgrams {
            if let Some(b) = d.first_mut() { *b = 22; }
            let _ = a.feed(&d);
            let _ = parse_client_hello_srtp(&d);
        }
    }

    /// Compound RTCP with a valid-looking first header and arbitrary rest.
    #[test]
    fn rtcp_any_bytes(mut data in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Some(b) = data.first_mut() { *b = 0x80 | (*b & 0x3F); }
        for item in RtcpCompound::new(&data) {
            match item {
                Ok(RtcpPacket::Fir(f)) => { let _ = f.entries.count(); }
                Ok(RtcpPacket::Nack(n)) => { let _ = n.lost_seqs().count(); }
                Ok(RtcpPacket::TransportCc(t)) => { let _ = t.packets().count(); }
                _ => {}
            }
        }
    }
}
