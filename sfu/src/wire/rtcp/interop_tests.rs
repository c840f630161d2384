//! Interop with an independent RTCP implementation (webrtc-rs `rtc-rtcp`): what we write, it
//! reads with the same meaning, and what it writes, we read with the same meaning.

use bytes::Bytes;
use proptest::prelude::*;
use rtc_rtcp::packet::{marshal, unmarshal, Packet};
use rtc_rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc_rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc_rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc_rtcp::receiver_report::ReceiverReport as TheirRr;
use rtc_rtcp::sender_report::SenderReport as TheirSr;
use rtc_rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc_rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::*;

/// Parses `bytes` with rtc-rtcp, expecting exactly one packet of type `T`, and returns it with
/// rtc-rtcp's own re-encoding of it.
fn theirs<T: Packet + Clone + 'static>(bytes: &[u8]) -> (T, Vec<u8>) {
    let pkts = unmarshal(&mut Bytes::copy_from_slice(bytes)).expect("rtc-rtcp parses our output");
    assert_eq!(pkts.len(), 1);
    let p = pkts[0]
        .as_any()
        .downcast_ref::<T>()
        .expect("rtc-rtcp sees the same packet type")
        .clone();
    let again = marshal(&pkts).expect("rtc-rtcp re-encodes").to_vec();
    (p, again)
}

fn ours(bytes: &[u8]) -> RtcpPacket<'_> {
    let mut it = RtcpCompound::new(bytes);
    let p = it.next().expect("one packet").expect("we parse rtc-rtcp's output");
    assert!(it.next().is_none());
    p
}

/// Transport-cc feedback with a long run, 1-bit and 2-bit vectors, read by both sides.
#[test]
fn twcc_fixed_case() {
    let mut packets = vec![Some(10i16); 20];
    packets.extend([None, Some(3), Some(-4), None, Some(300)]);
    packets.extend(std::iter::repeat_n(None, 30));
    packets.push(Some(1));
    check_twcc(&packets);
}

fn check_twcc(packets: &[Option<i16>]) {
    let fb = TwccFeedback {
        base_seq: 65000,
        reference_time: 0x12_3456,
        fb_pkt_count: 9,
        packets,
    };
    let mut buf = vec![0u8; 4000];
    let n = write_twcc(&mut buf, Ssrc(5), Ssrc(6), &fb).expect("fits");
    let (t, again): (TransportLayerCc, _) = theirs(&buf[..n]);
    assert_eq!((t.sender_ssrc, t.media_ssrc), (5, 6));
    assert_eq!(
        (t.base_sequence_number, t.packet_status_count),
        (65000, packets.len() as u16)
    );
    assert_eq!((t.reference_time, t.fb_pkt_count), (0x12_3456, 9));
    let their_deltas: Vec<i64> = t.recv_deltas.iter().map(|d| d.delta / 250).collect();
    let our_deltas: Vec<i64> = packets.iter().flatten().map(|d| i64::from(*d)).collect();
    assert_eq!(their_deltas, our_deltas);
    let RtcpPacket::TransportCc(back) = ours(&again) else {
        panic!("expected transport-cc");
    };
    let got: Vec<Option<i16>> = back.packets().map(|p| p.recv_delta).collect();
    assert_eq!(got, packets);
    assert_eq!(back.base_seq, 65000);
}

fn block() -> impl Strategy<Value = ReportBlock> {
    (any::<u32>(), any::<u8>(), 0i32..=0x7F_FFFF, any::<[u32; 4]>()).prop_map(
        |(ssrc, fraction_lost, cumulative_lost, [e, j, l, d])| ReportBlock {
            ssrc: Ssrc(ssrc),
            fraction_lost,
            cumulative_lost,
            ext_highest_seq: e,
            jitter: j,
            lsr: l,
            dlsr: d,
        },
    )
}

fn same_block(ours: &ReportBlock, theirs: &rtc_rtcp::reception_report::ReceptionReport) -> bool {
    ours.ssrc.0 == theirs.ssrc
        && ours.fraction_lost == theirs.fraction_lost
        && ours.cumulative_lost as u32 == theirs.total_lost
        && ours.ext_highest_seq == theirs.last_sequence_number
        && ours.jitter == theirs.jitter
        && ours.lsr == theirs.last_sender_report
        && ours.dlsr == theirs.delay
}

proptest! {
    /// Our transport-cc encoding is read identically by rtc-rtcp, and its re-encoding by us.
    #[test]
    fn twcc_interop(packets in proptest::collection::vec(
        prop_oneof![3 => Just(None), 3 => (0i16..=255).prop_map(Some), 1 => any::<i16>().prop_map(Some)],
        1..200,
    )) {
        // rtc-rtcp (like libwebrtc) wants the feedback to describe at least one received
        // packet; a feedback of only losses is never sent.
        prop_assume!(packets.iter().any(Option::is_some));
        check_twcc(&packets);
    }

    /// SR with blocks, both directions.
    #[test]
    fn sr_interop(ntp in any::<u64>(), rtp in any::<u32>(), pc in any::<u32>(), oc in any::<u32>(),
                  blocks in proptest::collection::vec(block(), 0..=31)) {
        let info = SenderInfo { ntp_time: ntp, rtp_time: rtp, packet_count: pc, octet_count: oc };
        let mut buf = [0u8; 1500];
        let n = write_sr(&mut buf, Ssrc(77), &info, &blocks).expect("fits");
        let (sr, again): (TheirSr, _) = theirs(&buf[..n]);
        prop_assert_eq!((sr.ssrc, sr.ntp_time, sr.rtp_time, sr.packet_count, sr.octet_count), (77, ntp, rtp, pc, oc));
        prop_assert_eq!(sr.reports.len(), blocks.len());
        for (a, b) in blocks.iter().zip(&sr.reports) {
            prop_assert!(same_block(a, b));
        }
        let RtcpPacket::SenderReport(back) = ours(&again) else { panic!("expected SR") };
        prop_assert_eq!(back.info, info);
        prop_assert_eq!(back.blocks.collect::<Vec<_>>(), blocks);
    }

    /// RR with blocks, both directions.
    #[test]
    fn rr_interop(blocks in proptest::collection::vec(block(), 0..=31)) {
        let mut buf = [0u8; 1500];
        let n = write_rr(&mut buf, Ssrc(78), &blocks).expect("fits");
        let (rr, again): (TheirRr, _) = theirs(&buf[..n]);
        prop_assert_eq!(rr.ssrc, 78);
        for (a, b) in blocks.iter().zip(&rr.reports) {
            prop_assert!(same_block(a, b));
        }
        let RtcpPacket::ReceiverReport(back) = ours(&again) else { panic!("expected RR") };
        prop_assert_eq!(back.blocks.collect::<Vec<_>>(), blocks);
    }

    /// NACK entries, both directions.
    #[test]
    fn nack_interop(pairs in proptest::collection::vec(any::<(u16, u16)>(), 1..50)) {
        let pairs: Vec<NackPair> = pairs.into_iter().map(|(pid, blp)| NackPair { pid, blp }).collect();
        let mut buf = [0u8; 1500];
        let n = write_nack(&mut buf, Ssrc(1), Ssrc(2), pairs.iter().copied()).expect("fits");
        let (nack, again): (TransportLayerNack, _) = theirs(&buf[..n]);
        let theirs: Vec<NackPair> = nack.nacks.iter().map(|p| NackPair { pid: p.packet_id, blp: p.lost_packets }).collect();
        prop_assert_eq!(&theirs, &pairs);
        let RtcpPacket::Nack(back) = ours(&again) else { panic!("expected NACK") };
        prop_assert_eq!(back.pairs.collect::<Vec<_>>(), pairs);
    }

    /// PLI, FIR and REMB, both directions.
    #[test]
    fn keyframe_and_remb_interop(sender in any::<u32>(), media in any::<u32>(), seq in any::<u8>(),
                                 mantissa in 0u64..(1 << 18), exp in 0u32..30,
                                 ssrcs in proptest::collection::vec(any::<u32>(), 1..10)) {
        let mut buf = [0u8; 1500];
        let n = write_pli(&mut buf, Ssrc(sender), Ssrc(media)).expect("fits");
        let (pli, again): (PictureLossIndication, _) = theirs(&buf[..n]);
        prop_assert_eq!((pli.sender_ssrc, pli.media_ssrc), (sender, media));
        prop_assert!(matches!(ours(&again), RtcpPacket::Pli(p) if p.sender == Ssrc(sender) && p.media == Ssrc(media)));

        let n = write_fir(&mut buf, Ssrc(sender), Ssrc(media), seq).expect("fits");
        let (fir, again): (FullIntraRequest, _) = theirs(&buf[..n]);
        prop_assert_eq!(fir.sender_ssrc, sender);
        prop_assert_eq!(fir.fir.len(), 1);
        prop_assert_eq!((fir.fir[0].ssrc, fir.fir[0].sequence_number), (media, seq));
        let RtcpPacket::Fir(back) = ours(&again) else { panic!("expected FIR") };
        prop_assert_eq!(back.entries.collect::<Vec<_>>(), vec![FirEntry { ssrc: Ssrc(media), seq }]);

        let bitrate = mantissa << exp;
        let ours_ssrcs: Vec<Ssrc> = ssrcs.iter().copied().map(Ssrc).collect();
        let n = write_remb(&mut buf, Ssrc(sender), bitrate, &ours_ssrcs).expect("fits");
        let (remb, again): (ReceiverEstimatedMaximumBitrate, _) = theirs(&buf[..n]);
        prop_assert_eq!(&remb.ssrcs, &ssrcs);
        // rtc-rtcp keeps the bitrate as f32: compare within its precision.
        prop_assert!((f64::from(remb.bitrate) - bitrate as f64).abs() <= bitrate as f64 * 1e-6 + 1.0);
        let RtcpPacket::Remb(back) = ours(&again) else { panic!("expected REMB") };
        prop_assert_eq!(back.ssrcs.collect::<Vec<_>>(), ours_ssrcs);
        // Their f32 round trip may lose low bits; our reading of their bytes stays within 2^-17.
        prop_assert!((back.bitrate as f64 - bitrate as f64).abs() <= bitrate as f64 / 65536.0 + 1.0);
    }
}
