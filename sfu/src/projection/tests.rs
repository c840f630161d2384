use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn after(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn layer(encoding: u8, temporal: u8) -> Option<Layer> {
    Some(Layer {
        encoding,
        spatial: 0,
        temporal,
        decode_target: None,
    })
}

fn fwd(v: Verdict) -> Rewrite {
    match v {
        Verdict::Forward(r) => r,
        Verdict::Drop(d) => panic!("expected forward, got drop {d:?}"),
    }
}

/// A one-packet VP8 frame.
#[allow(clippy::too_many_arguments)]
fn vp8(enc: u8, tid: u8, seq: u16, ts: u32, pid: u16, tl0: u8, key: bool, sync: bool) -> PacketMeta {
    PacketMeta {
        encoding: enc,
        temporal: tid,
        seq,
        ts,
        marker: true,
        start_of_frame: true,
        end_of_frame: true,
        keyframe: key,
        switching_point: sync || key,
        picture_id: Some(pid),
        tl0picidx: Some(tl0),
        ..PacketMeta::default()
    }
}

/// Dropping a fully received TL2 frame leaves no seq gap (conformance 45), and picture IDs stay
/// continuous while TL0PICIDX follows the base layer.
#[test]
fn temporal_drop_leaves_no_gap() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(0, 1));
    let tids = [0u8, 2, 1, 2, 0, 2, 1, 2];
    let mut out = vec![];
    let mut tl0 = 10u8;
    for (i, &tid) in tids.iter().enumerate() {
        if tid == 0 && i > 0 {
            tl0 = tl0.wrapping_add(1);
        }
        let m = vp8(
            0,
            tid,
            100 + i as u16,
            3000 * i as u32,
            500 + i as u16,
            tl0,
            i == 0,
            tid > 0,
        );
        out.push(p.on_packet(after(t0, 33 * i as u64), &m));
    }
    let fw: Vec<Rewrite> = out
        .iter()
        .filter_map(|v| match v {
            Verdict::Forward(r) => Some(*r),
            _ => None,
        })
        .collect();
    assert_eq!(fw.len(), 4);
    assert_eq!(fw.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let pids: Vec<u16> = fw.iter().map(|r| r.picture_id.unwrap()).collect();
    assert_eq!(pids, vec![500, 501, 502, 503]);
    let tl0s: Vec<u8> = fw.iter().map(|r| r.tl0picidx.unwrap()).collect();
    assert_eq!(tl0s, vec![10, 10, 11, 11]);
    assert_eq!(fw[0].ts, 1);
    assert_eq!(fw[1].ts, 1 + 6000);
    assert!(matches!(out[1], Verdict::Drop(DropReason::AboveTarget)));
}

/// A real input loss leaves a gap, and the late packet fills exactly that slot.
#[test]
fn loss_leaves_gap_and_late_packet_fills_it() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(0, 2));
    let pkt = |seq: u16, start: bool, end: bool, key: bool| PacketMeta {
        start_of_frame: start,
        end_of_frame: end,
        marker: end,
        ..vp8(0, 0, seq, 0, 7, 1, key, false)
    };
    let a = fwd(p.on_packet(t0, &pkt(10, true, false, true)));
    // seq 11 is late
    let c = fwd(p.on_packet(t0, &pkt(12, false, true, false)));
    let b = fwd(p.on_packet(t0, &pkt(11, false, false, false)));
    assert_eq!((a.seq, b.seq, c.seq), (1, 2, 3));
    assert!(c.marker && !b.marker);
}

/// An up-switch waits for a keyframe of the target encoding; meanwhile the current encoding
/// keeps flowing with all its temporal layers (conformance 42), and a keyframe is requested.
#[test]
fn upswitch_waits_for_keyframe() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(0, 0));
    assert!(matches!(
        p.on_packet(t0, &vp8(0, 0, 1, 0, 1, 1, true, false)),
        Verdict::Forward(_)
    ));
    assert_eq!(p.needs_keyframe(), None);
    p.set_target(layer(1, 2));
    assert_eq!(p.needs_keyframe(), Some(1));
    // Non-keyframe of encoding 1: dropped. TL1 sync frame of encoding 0: forwarded (pending up).
    assert_eq!(
        p.on_packet(after(t0, 33), &vp8(1, 0, 50, 9000, 20, 5, false, false)),
        Verdict::Drop(DropReason::OtherEncoding)
    );
    let r = fwd(p.on_packet(after(t0, 33), &vp8(0, 1, 2, 3000, 2, 1, false, true)));
    assert_eq!((r.seq, r.picture_id), (2, Some(2)));
    // Keyframe of encoding 1 switches; picture ID, TL0PICIDX and seq continue; ts advances.
    let k = fwd(p.on_packet(after(t0, 100), &vp8(1, 0, 51, 123_456, 21, 6, true, false)));
    assert_eq!(p.current_encoding(), Some(1));
    assert_eq!(p.needs_keyframe(), None);
    assert_eq!((k.seq, k.picture_id, k.tl0picidx), (3, Some(3), Some(2)));
    assert!(k.ts > r.ts && k.ts - r.ts >= 3000);
    // Old encoding now dropped.
    assert_eq!(
        p.on_packet(after(t0, 100), &vp8(0, 0, 3, 9000, 3, 2, false, false)),
        Verdict::Drop(DropReason::OtherEncoding)
    );
    // Constant ts offset within the encoding.
    let n = fwd(p.on_packet(after(t0, 133), &vp8(1, 2, 52, 126_456, 22, 6, false, true)));
    assert_eq!((n.seq, n.ts.wrapping_sub(k.ts)), (4, 3000));
}

/// A down-switch forwards only TL0 of the current encoding until the lower keyframe
/// (conformance 43).
#[test]
fn downswitch_forwards_base_until_keyframe() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(2, 2));
    fwd(p.on_packet(t0, &vp8(2, 0, 1, 0, 1, 1, true, false)));
    p.set_target(layer(0, 2));
    assert_eq!(p.needs_keyframe(), Some(0));
    assert_eq!(
        p.on_packet(after(t0, 33), &vp8(2, 1, 2, 3000, 2, 1, false, true)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    fwd(p.on_packet(after(t0, 66), &vp8(2, 0, 3, 6000, 3, 2, false, false)));
    // Keyframe of encoding 1 (between current 2 and target 0) is no use in a new group.
    fwd(p.on_packet(after(t0, 500), &vp8(0, 0, 70, 50, 40, 9, true, false)));
    assert_eq!(p.current_encoding(), Some(0));
}

/// Estimate collapsed (docs/bwe.md "Downlink step"): `cut_to_target` stops the higher encoding
/// at once. Its base-layer frames and even its keyframes are dropped (`Cut`) until a keyframe of
/// an encoding at most the target's arrives; output seq / picture ID / TL0PICIDX continue
/// without a gap and the timestamp advances.
#[test]
fn estimate_cut_drops_higher_encoding_until_lower_keyframe() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(2, 2));
    let a = fwd(p.on_packet(t0, &vp8(2, 0, 1, 0, 1, 1, true, false)));
    assert!(p.cut_to_target(layer(0, 2).unwrap()));
    assert_eq!(p.current_encoding(), None);
    assert_eq!(p.target(), layer(0, 2));
    assert_eq!(p.needs_keyframe(), Some(0));
    // TL0 of the higher encoding (a plain downscale forwards it): dropped.
    assert_eq!(
        p.on_packet(after(t0, 33), &vp8(2, 0, 2, 3000, 2, 2, false, false)),
        Verdict::Drop(DropReason::Cut)
    );
    // A keyframe of the cut encoding is above the target: dropped too.
    assert_eq!(
        p.on_packet(after(t0, 66), &vp8(2, 0, 3, 6000, 3, 3, true, false)),
        Verdict::Drop(DropReason::Cut)
    );
    // Encoding 1 (between target and cut) non-keyframe: not usable.
    assert_eq!(
        p.on_packet(after(t0, 66), &vp8(1, 0, 40, 6000, 30, 7, false, false)),
        Verdict::Drop(DropReason::OtherEncoding)
    );
    // The lower encoding's keyframe starts the new segment.
    let k = fwd(p.on_packet(after(t0, 200), &vp8(0, 0, 70, 50, 40, 9, true, false)));
    assert_eq!(p.current_encoding(), Some(0));
    assert_eq!(p.needs_keyframe(), None);
    assert_eq!((k.seq, k.picture_id, k.tl0picidx), (2, Some(2), Some(2)));
    assert!(k.ts.wrapping_sub(a.ts) >= 200 * 90);
    // From now on the higher encoding is just another encoding.
    assert_eq!(
        p.on_packet(after(t0, 233), &vp8(2, 0, 4, 9000, 4, 4, false, false)),
        Verdict::Drop(DropReason::OtherEncoding)
    );
    let n = fwd(p.on_packet(after(t0, 233), &vp8(0, 1, 71, 3050, 41, 9, false, true)));
    assert_eq!((n.seq, n.picture_id), (3, Some(3)));
}

/// The same downscale without a collapse (`set_target`, e.g. constraints or last-N) keeps JVB's
/// behaviour: the higher encoding's TL0 goes on until the lower keyframe.
#[test]
fn mild_downscale_keeps_forwarding_base() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(2, 2));
    fwd(p.on_packet(t0, &vp8(2, 0, 1, 0, 1, 1, true, false)));
    p.set_target(layer(0, 2));
    assert_eq!(p.current_encoding(), Some(2));
    let b = fwd(p.on_packet(after(t0, 33), &vp8(2, 0, 2, 3000, 2, 2, false, false)));
    assert_eq!(b.seq, 2);
    let k = fwd(p.on_packet(after(t0, 200), &vp8(0, 0, 70, 50, 40, 9, true, false)));
    assert_eq!((k.seq, p.current_encoding()), (3, Some(0)));
    // A later cut when already at or above the current encoding is a plain set_target.
    assert!(!p.cut_to_target(layer(0, 0).unwrap()));
    assert!(!p.cut_to_target(layer(1, 0).unwrap()));
    assert_eq!(p.current_encoding(), Some(0));
    fwd(p.on_packet(after(t0, 233), &vp8(0, 0, 71, 3050, 41, 10, false, false)));
}

/// A pending plain downscale becomes a cut when the estimate then collapses (same target).
#[test]
fn pending_downscale_then_cut() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(2, 0));
    fwd(p.on_packet(t0, &vp8(2, 0, 1, 0, 1, 1, true, false)));
    p.set_target(layer(0, 0));
    fwd(p.on_packet(after(t0, 33), &vp8(2, 0, 2, 3000, 2, 2, false, false)));
    assert!(p.cut_to_target(layer(0, 0).unwrap()));
    assert_eq!(
        p.on_packet(after(t0, 66), &vp8(2, 0, 3, 6000, 3, 3, false, false)),
        Verdict::Drop(DropReason::Cut)
    );
    // Target raised back to the cut encoding before any keyframe: its keyframe resumes it.
    p.set_target(layer(2, 0));
    assert_eq!(
        p.on_packet(after(t0, 100), &vp8(2, 0, 4, 9000, 4, 4, false, false)),
        Verdict::Drop(DropReason::OtherEncoding)
    );
    let k = fwd(p.on_packet(after(t0, 133), &vp8(2, 0, 5, 12000, 5, 5, true, false)));
    assert_eq!((k.seq, k.picture_id), (3, Some(3)));
}

/// A cut in the middle of a frame: the frame's tail may still fill its reserved slot, and the
/// lower keyframe's output seq never collides with it.
#[test]
fn cut_mid_frame_reserves_the_tail() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(1, 0));
    let pkt = |seq: u16, start: bool, end: bool, key: bool| PacketMeta {
        start_of_frame: start,
        end_of_frame: end,
        marker: end,
        ..vp8(1, 0, seq, 0, 7, 1, key, false)
    };
    let a = fwd(p.on_packet(t0, &pkt(10, true, false, true)));
    assert!(p.cut_to_target(layer(0, 0).unwrap()));
    let k = fwd(p.on_packet(after(t0, 100), &vp8(0, 0, 500, 77, 9, 3, true, false)));
    assert_eq!((a.seq, k.seq), (1, 3), "one slot kept for the cut frame's tail");
    let mut tail = vec![];
    for seq in 11..13 {
        if let Verdict::Forward(r) = p.on_packet(after(t0, 101), &pkt(seq, false, seq == 12, false)) {
            tail.push(r.seq);
        }
    }
    assert!(tail.iter().all(|s| *s == 2), "{tail:?}");
}

/// SVC (one encoding): a collapse lowers the spatial layer at once anyway; nothing is cut.
#[test]
fn cut_is_a_no_op_within_one_svc_encoding() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp9, 1, 1);
    let sl = |s: u8| Layer {
        encoding: 0,
        spatial: s,
        temporal: 0,
        decode_target: None,
    };
    p.set_target(Some(sl(1)));
    fwd(p.on_packet(t0, &svc(0, 0, 1, 1, true, true, false)));
    fwd(p.on_packet(t0, &svc(1, 0, 2, 1, false, true, true)));
    assert!(!p.cut_to_target(sl(0)));
    assert_eq!(p.current_encoding(), Some(0));
    let c = fwd(p.on_packet(t0, &svc(0, 0, 3, 2, false, false, false)));
    assert!(c.marker);
    assert_eq!(
        p.on_packet(t0, &svc(1, 0, 4, 2, false, false, true)),
        Verdict::Drop(DropReason::AboveTarget)
    );
}

/// Suspending stops at once; resuming needs a keyframe.
#[test]
fn suspend_and_resume() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(0, 2));
    fwd(p.on_packet(t0, &vp8(0, 0, 1, 0, 1, 1, true, false)));
    p.set_target(None);
    assert_eq!(p.needs_keyframe(), None);
    assert_eq!(
        p.on_packet(t0, &vp8(0, 0, 2, 3000, 2, 2, false, false)),
        Verdict::Drop(DropReason::Suspended)
    );
    p.set_target(layer(0, 2));
    assert_eq!(p.needs_keyframe(), Some(0));
    assert_eq!(
        p.on_packet(t0, &vp8(0, 0, 3, 6000, 3, 3, false, false)),
        Verdict::Drop(DropReason::OtherEncoding)
    );
    let k = fwd(p.on_packet(after(t0, 1000), &vp8(0, 0, 4, 9000, 4, 4, true, false)));
    assert_eq!((k.seq, k.picture_id, k.tl0picidx), (2, Some(2), Some(2)));
    assert!(k.ts > 90_000);
}

/// A temporal up-switch happens only at a switching point.
#[test]
fn temporal_upswitch_at_sync_only() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp8, 1, 1);
    p.set_target(layer(0, 0));
    fwd(p.on_packet(t0, &vp8(0, 0, 1, 0, 1, 1, true, false)));
    p.set_target(layer(0, 2));
    assert_eq!(
        p.on_packet(t0, &vp8(0, 2, 2, 3000, 2, 1, false, false)),
        Verdict::Drop(DropReason::AwaitingSwitchPoint)
    );
    let r = fwd(p.on_packet(t0, &vp8(0, 1, 3, 6000, 3, 1, false, true)));
    assert_eq!((r.seq, r.picture_id), (2, Some(2)));
    assert_eq!(
        p.on_packet(t0, &vp8(0, 2, 4, 9000, 4, 1, false, false)),
        Verdict::Drop(DropReason::AwaitingSwitchPoint)
    );
    fwd(p.on_packet(t0, &vp8(0, 0, 5, 12000, 5, 2, false, false)));
    let s = fwd(p.on_packet(t0, &vp8(0, 2, 6, 15000, 6, 2, false, true)));
    assert_eq!((s.seq, s.picture_id), (4, Some(4)));
    fwd(p.on_packet(t0, &vp8(0, 2, 7, 18000, 7, 2, false, false)));
}

/// The generic context never drops temporal layers and switches only on keyframes.
#[test]
fn generic_switches_on_keyframes() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Generic, 1, 1);
    p.set_target(layer(0, 0));
    let g = |enc: u8, tid: u8, seq: u16, key: bool| PacketMeta {
        picture_id: None,
        tl0picidx: None,
        ..vp8(enc, tid, seq, u32::from(seq) * 3000, 0, 0, key, false)
    };
    fwd(p.on_packet(t0, &g(0, 0, 1, true)));
    let r = fwd(p.on_packet(t0, &g(0, 2, 2, false)));
    assert_eq!((r.seq, r.picture_id), (2, None));
    p.set_target(layer(1, 0));
    fwd(p.on_packet(t0, &g(0, 0, 3, false)));
    assert!(matches!(p.on_packet(t0, &g(1, 0, 9, false)), Verdict::Drop(_)));
    let k = fwd(p.on_packet(t0, &g(1, 0, 10, true)));
    assert_eq!(k.seq, 4);
}

fn svc(sid: u8, tid: u8, seq: u16, pic: u16, key: bool, switch: bool, end_pic: bool) -> PacketMeta {
    PacketMeta {
        encoding: 0,
        spatial: sid,
        temporal: tid,
        seq,
        ts: u32::from(pic) * 3000,
        marker: end_pic,
        start_of_frame: true,
        end_of_frame: true,
        keyframe: key,
        switching_point: switch,
        spatial_switching_point: switch,
        picture_id: Some(pic),
        tl0picidx: Some(pic as u8),
        ..PacketMeta::default()
    }
}

/// VP9: below the top spatial layer, the marker is set at the end of the highest forwarded
/// layer (conformance 49); a spatial up-switch waits for a switching point and asks for a
/// keyframe meanwhile.
#[test]
fn vp9_spatial_switch_and_marker() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp9, 1, 1);
    p.set_target(Some(Layer {
        encoding: 0,
        spatial: 1,
        temporal: 0,
        decode_target: None,
    }));
    let a = fwd(p.on_packet(t0, &svc(0, 0, 1, 1, true, true, false)));
    let b = fwd(p.on_packet(t0, &svc(1, 0, 2, 1, false, true, false)));
    assert_eq!(
        p.on_packet(t0, &svc(2, 0, 3, 1, false, true, true)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    assert!(!a.marker && b.marker);
    assert_eq!((a.picture_id, b.picture_id), (Some(1), Some(1)));
    // Down to S0: marker moves to S0.
    p.set_target(Some(Layer {
        encoding: 0,
        spatial: 0,
        temporal: 0,
        decode_target: None,
    }));
    let c = fwd(p.on_packet(t0, &svc(0, 0, 4, 2, false, false, false)));
    assert!(p.on_packet(t0, &svc(1, 0, 5, 2, false, false, false)) != Verdict::Forward(c));
    assert!(c.marker);
    assert_eq!((c.seq, c.picture_id), (3, Some(2)));
    // Up again to S2: S1 without switching point is held back and a keyframe is wanted.
    p.set_target(Some(Layer {
        encoding: 0,
        spatial: 2,
        temporal: 0,
        decode_target: None,
    }));
    fwd(p.on_packet(t0, &svc(0, 0, 7, 3, false, false, false)));
    assert_eq!(
        p.on_packet(t0, &svc(1, 0, 8, 3, false, false, false)),
        Verdict::Drop(DropReason::AwaitingSwitchPoint)
    );
    assert_eq!(p.needs_keyframe(), Some(0));
    let d0 = fwd(p.on_packet(t0, &svc(0, 0, 10, 4, false, false, false)));
    let d1 = fwd(p.on_packet(t0, &svc(1, 0, 11, 4, false, true, false)));
    let d2 = fwd(p.on_packet(t0, &svc(2, 0, 12, 4, false, true, true)));
    assert!(d2.marker);
    assert_eq!(p.needs_keyframe(), None);
    // Dropped frames leave no gap; seqs 6 and 9 were never received and stay gaps.
    assert_eq!((d0.seq, d1.seq, d2.seq), (7, 8, 9));
    let e0 = fwd(p.on_packet(t0, &svc(0, 0, 13, 5, false, false, false)));
    let e1 = fwd(p.on_packet(t0, &svc(1, 0, 14, 5, false, false, false)));
    let e2 = fwd(p.on_packet(t0, &svc(2, 0, 15, 5, false, false, true)));
    assert!(!e0.marker && !e1.marker && e2.marker);
    assert_eq!((e0.picture_id, e2.picture_id, e2.seq), (Some(5), Some(5), 12));
}

fn av1(sid: u8, seq: u16, fnum: u16, key: bool, present: u32, switch: u32) -> PacketMeta {
    PacketMeta {
        spatial: sid,
        seq,
        ts: u32::from(fnum) * 3000,
        marker: false,
        start_of_frame: true,
        end_of_frame: true,
        keyframe: key,
        frame_number: Some(fnum),
        av1: Some(Av1Dti {
            present,
            switch,
            ..Av1Dti::default()
        }),
        ..PacketMeta::default()
    }
}

/// VP9 K-SVC (L3T1_KEY, payload descriptor only): upper layers are inter-layer predicted only in
/// keyframe pictures, their delta frames are inter-picture predicted (P=1) from their own layer.
/// From S0, asking S2 asks for a keyframe at once (no delta frame is a spatial switching
/// point), forwards S0 meanwhile with the marker on it, and switches at the keyframe picture
/// with the marker on the target layer; a down-switch is immediate. Picture IDs stay continuous.
#[test]
fn vp9_ksvc_upswitch_asks_keyframe_at_once() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Vp9, 1, 1);
    let sl = |s: u8| {
        Some(Layer {
            encoding: 0,
            spatial: s,
            temporal: 0,
            decode_target: None,
        })
    };
    // K-SVC delta frame of layer `sid` (P=1: not a spatial switching point).
    let delta = |sid: u8, seq: u16, pic: u16| svc(sid, 0, seq, pic, false, false, sid == 2);
    let key = |sid: u8, seq: u16, pic: u16| svc(sid, 0, seq, pic, sid == 0, true, sid == 2);
    p.set_target(sl(0));
    let mut seq = 10u16;
    let next = |s: &mut u16| {
        *s += 1;
        *s
    };
    let k = fwd(p.on_packet(t0, &key(0, next(&mut seq), 100)));
    assert!(k.marker, "S0 ends the forwarded picture");
    assert_eq!(
        p.on_packet(t0, &key(1, next(&mut seq), 100)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    assert_eq!(
        p.on_packet(t0, &key(2, next(&mut seq), 100)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    assert_eq!(p.needs_keyframe(), None);
    let mut pics = vec![k.picture_id];
    for pic in 101..104 {
        let a = fwd(p.on_packet(t0, &delta(0, next(&mut seq), pic)));
        assert!(a.marker);
        pics.push(a.picture_id);
        assert!(matches!(
            p.on_packet(t0, &delta(1, next(&mut seq), pic)),
            Verdict::Drop(_)
        ));
        assert!(matches!(
            p.on_packet(t0, &delta(2, next(&mut seq), pic)),
            Verdict::Drop(_)
        ));
    }
    // Ask 720: the first upper-layer delta frame cannot start S1/S2, a keyframe is wanted now.
    p.set_target(sl(2));
    let a = fwd(p.on_packet(t0, &delta(0, next(&mut seq), 104)));
    pics.push(a.picture_id);
    assert_eq!(
        p.on_packet(t0, &delta(1, next(&mut seq), 104)),
        Verdict::Drop(DropReason::AwaitingSwitchPoint)
    );
    assert_eq!(p.needs_keyframe(), Some(0), "keyframe asked on the first delta frame");
    assert!(matches!(
        p.on_packet(t0, &delta(2, next(&mut seq), 104)),
        Verdict::Drop(_)
    ));
    // The keyframe picture: every layer forwarded, the marker on S2 only.
    let k0 = fwd(p.on_packet(t0, &key(0, next(&mut seq), 105)));
    let k1 = fwd(p.on_packet(t0, &key(1, next(&mut seq), 105)));
    let k2 = fwd(p.on_packet(t0, &key(2, next(&mut seq), 105)));
    assert_eq!([k0.marker, k1.marker, k2.marker], [false, false, true]);
    assert_eq!(p.needs_keyframe(), None);
    pics.push(k0.picture_id);
    let d2 = [
        fwd(p.on_packet(t0, &delta(0, next(&mut seq), 106))),
        fwd(p.on_packet(t0, &delta(1, next(&mut seq), 106))),
        fwd(p.on_packet(t0, &delta(2, next(&mut seq), 106))),
    ];
    assert!(d2[2].marker && !d2[0].marker);
    pics.push(d2[0].picture_id);
    // Down to S0 at once.
    p.set_target(sl(0));
    let a = fwd(p.on_packet(t0, &delta(0, next(&mut seq), 107)));
    assert!(a.marker);
    assert!(matches!(
        p.on_packet(t0, &delta(2, next(&mut seq), 107)),
        Verdict::Drop(_)
    ));
    pics.push(a.picture_id);
    let want: Vec<Option<u16>> = (100..=107).map(Some).collect();
    assert_eq!(pics, want);
}

/// A projection the allocation created before the source's codec was known is Generic; once
/// the bitstream tells the codec the projection follows it: forwarding stops until a keyframe,
/// then continues the output seq and timestamps, and layers are selected (AV1 here).
#[test]
fn set_codec_from_generic_resumes_at_keyframe() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Generic, 1, 1);
    p.set_target(Some(Layer {
        encoding: 0,
        spatial: 0,
        temporal: 0,
        decode_target: Some(DecodeTarget {
            index: 0,
            active_mask: 0b01,
        }),
    }));
    // Generic forwards every frame of the encoding, S1 too.
    let a = fwd(p.on_packet(t0, &av1(0, 1, 100, true, 0b11, 0b11)));
    let b = fwd(p.on_packet(t0, &av1(1, 2, 101, false, 0b10, 0b10)));
    assert_eq!([a.seq, b.seq], [1, 2]);
    p.set_codec(Codec::Av1);
    assert_eq!(p.codec(), Codec::Av1);
    assert_eq!(p.needs_keyframe(), Some(0));
    assert!(matches!(
        p.on_packet(after(t0, 33), &av1(0, 3, 102, false, 0b11, 0b11)),
        Verdict::Drop(_)
    ));
    let k = fwd(p.on_packet(after(t0, 66), &av1(0, 4, 103, true, 0b11, 0b11)));
    assert_eq!(k.seq, 3, "continues the output seq");
    assert!(ts_newer(k.ts, b.ts));
    assert_eq!(k.active_decode_targets, Some(0b01));
    assert_eq!(
        p.on_packet(after(t0, 66), &av1(1, 5, 104, false, 0b10, 0b10)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    assert_eq!(p.needs_keyframe(), None);
    // The same codec again changes nothing.
    p.set_codec(Codec::Av1);
    let c = fwd(p.on_packet(after(t0, 99), &av1(0, 6, 105, false, 0b01, 0b01)));
    assert_eq!(c.seq, 4);
}

/// AV1: the decode target changes only at a frame that is "switch" for it; frame numbers stay
/// continuous and the active mask is the target's (conformance 50).
#[test]
fn av1_decode_target_switch() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Av1, 1, 1);
    let dt = |index: u8, active_mask: u32, spatial: u8| {
        Some(Layer {
            encoding: 0,
            spatial,
            temporal: 0,
            decode_target: Some(DecodeTarget { index, active_mask }),
        })
    };
    // Two DTs: 0 = S0 only, 1 = S0+S1.
    p.set_target(dt(0, 0b01, 0));
    let k = fwd(p.on_packet(t0, &av1(0, 1, 100, true, 0b11, 0b11)));
    assert_eq!(
        (k.frame_number, k.active_decode_targets, k.marker),
        (Some(100), Some(0b01), true)
    );
    assert_eq!(
        p.on_packet(t0, &av1(1, 2, 101, false, 0b10, 0b10)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    p.set_target(dt(1, 0b11, 1));
    // Not a switch for DT 1: keep DT 0.
    let a = fwd(p.on_packet(t0, &av1(0, 3, 102, false, 0b11, 0b00)));
    assert_eq!(p.needs_keyframe(), Some(0));
    assert_eq!(
        p.on_packet(t0, &av1(1, 4, 103, false, 0b10, 0b00)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    let b = fwd(p.on_packet(t0, &av1(0, 5, 104, false, 0b11, 0b10)));
    let c = fwd(p.on_packet(t0, &av1(1, 6, 105, false, 0b10, 0b00)));
    assert_eq!(p.needs_keyframe(), None);
    assert_eq!(
        [a.frame_number, b.frame_number, c.frame_number],
        [Some(101), Some(102), Some(103)]
    );
    assert_eq!([a.seq, b.seq, c.seq], [2, 3, 4]);
    assert_eq!(c.active_decode_targets, Some(0b11));
    assert!(!b.marker && c.marker);
    // Unparsable frame: dropped, keyframe wanted.
    let bad = PacketMeta {
        av1: None,
        ..av1(0, 7, 106, false, 0, 0)
    };
    assert_eq!(p.on_packet(t0, &bad), Verdict::Drop(DropReason::NoLayerInfo));
    assert_eq!(p.needs_keyframe(), Some(0));
}

/// AV1 K-SVC (L2T1_KEY-like: DT 0 = S0, DT 1 = S1, S1 delta frames reference only S1). A
/// delta frame that is "switch" for a spatial target still references that layer's previous
/// frame: the switch waits for a keyframe when that frame was not forwarded. While the target
/// waits, the marker ends each temporal unit at the layer actually forwarded.
#[test]
fn av1_ksvc_switch_needs_forwarded_references() {
    let t0 = Instant::now();
    let mut p = Projection::new(1, Codec::Av1, 1, 1);
    let dt = |index: u8, spatial: u8| {
        Some(Layer {
            encoding: 0,
            spatial,
            temporal: 0,
            decode_target: Some(DecodeTarget {
                index,
                active_mask: 1 << index,
            }),
        })
    };
    // A frame of spatial layer `sid`, part of (and a switch point for) the DTs in `present`,
    // referencing the frame `fdiff` earlier (0: none).
    let f = |sid: u8, fnum: u16, key: bool, present: u32, fdiff: u16| {
        let mut m = av1(sid, fnum, fnum, key, present, present);
        m.ts = u32::from(fnum / 2) * 3000;
        m.end_of_frame = true;
        let refs: &[u16] = if fdiff == 0 { &[] } else { &[fdiff] };
        m.av1 = m.av1.map(|d| d.with_refs(refs));
        m
    };
    p.set_target(dt(0, 0));
    let k0 = fwd(p.on_packet(t0, &f(0, 100, true, 0b11, 0)));
    assert!(k0.marker, "S0 ends the unit for an S0 receiver");
    assert!(matches!(p.on_packet(t0, &f(1, 101, false, 0b10, 1)), Verdict::Drop(_)));
    fwd(p.on_packet(t0, &f(0, 102, false, 0b01, 2)));
    assert!(matches!(p.on_packet(t0, &f(1, 103, false, 0b10, 2)), Verdict::Drop(_)));
    // Up to S1: its delta frames reference S1 frames never forwarded.
    p.set_target(dt(1, 1));
    let d = fwd(p.on_packet(t0, &f(0, 104, false, 0b01, 2)));
    assert!(d.marker, "still on S0: the S0 frame must carry the marker");
    assert_eq!(
        p.on_packet(t0, &f(1, 105, false, 0b10, 2)),
        Verdict::Drop(DropReason::AboveTarget)
    );
    assert_eq!(p.needs_keyframe(), Some(0));
    // The keyframe unit: S1 starts, the marker moves to S1.
    let k = fwd(p.on_packet(t0, &f(0, 106, true, 0b11, 0)));
    let k1 = fwd(p.on_packet(t0, &f(1, 107, false, 0b10, 1)));
    assert!(!k.marker && k1.marker);
    assert_eq!(k1.active_decode_targets, Some(0b10));
    assert_eq!(p.needs_keyframe(), None);
    assert!(matches!(p.on_packet(t0, &f(0, 108, false, 0b01, 2)), Verdict::Drop(_)));
    assert!(fwd(p.on_packet(t0, &f(1, 109, false, 0b10, 2))).marker);
    // Down to S0: frame 110 is "switch" for DT 0 but references 108, which was dropped.
    p.set_target(dt(0, 0));
    assert!(matches!(p.on_packet(t0, &f(0, 110, false, 0b01, 2)), Verdict::Drop(_)));
    assert_eq!(p.needs_keyframe(), Some(0));
    let s1 = fwd(p.on_packet(t0, &f(1, 111, false, 0b10, 2)));
    assert!(s1.marker, "S1 frames go on until the keyframe");
    assert_eq!(s1.active_decode_targets, Some(0b10));
    let k = fwd(p.on_packet(t0, &f(0, 112, true, 0b11, 0)));
    assert!(k.marker);
    assert_eq!(k.active_decode_targets, Some(0b01));
    assert!(matches!(p.on_packet(t0, &f(1, 113, false, 0b10, 1)), Verdict::Drop(_)));
    assert!(fwd(p.on_packet(t0, &f(0, 114, false, 0b01, 2))).marker);
}

// ---------------------------------------------------------------------------------------------
// Property test: a simulated VP8 simulcast sender (3 encodings × 3 temporal layers, pattern
// 0-2-1-2) with random losses, bounded reordering, keyframes on request and 20+ random target
// switches. The checks model what a receiver's decoder needs.

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

#[derive(Debug, Clone)]
struct SimFrame {
    enc: u8,
    /// Picture index (VP8: one frame per picture; SVC: one frame per spatial layer).
    pic: usize,
    tid: u8,
    key: bool,
    refs: Vec<usize>,
    delivered: usize,
    forwarded: usize,
}

#[derive(Debug, Clone, Copy)]
struct Out {
    frame: usize,
    seq: i64,
    ts: u32,
    pid: u16,
    tl0: Option<u8>,
    marker: bool,
}

struct SimResult {
    frames: Vec<SimFrame>,
    out: Vec<Out>,
    lost: usize,
    late_dropped: usize,
    segments: usize,
    violations: Vec<String>,
    /// Target changes made with `cut_to_target` that cut.
    cuts: usize,
}

fn simulate(seed: u64, loss_pct: u64, reorder: bool, ticks: usize) -> SimResult {
    simulate_cuts(seed, loss_pct, reorder, ticks, false)
}

/// With `cuts`, every other target change to a lower encoding is made with
/// [`Projection::cut_to_target`] (a collapsed estimate); the cut encoding must then not be
/// forwarded until the target changes again.
fn simulate_cuts(seed: u64, loss_pct: u64, reorder: bool, ticks: usize, cuts: bool) -> SimResult {
    let mut rng = Rng(seed | 1);
    let mut cut_enc: Option<u8> = None;
    let mut cuts_made = 0;
    let t0 = Instant::now();
    let mut p = Projection::new(9, Codec::Vp8, 65_500, u32::MAX - 5000);
    p.set_target(layer(0, 2));
    let mut seq = [0u16; 3];
    let mut ts = [0u32; 3];
    let mut pid = [0u16; 3];
    let mut tl0 = [0u8; 3];
    for e in 0..3 {
        seq[e] = rng.next() as u16;
        ts[e] = rng.next() as u32;
        pid[e] = (rng.next() as u16) & 0x7fff;
        tl0[e] = rng.next() as u8;
    }
    let mut pattern = [0usize; 3];
    let mut last_tl0 = [usize::MAX; 3];
    let mut last_tl1 = [usize::MAX; 3];
    let mut key_due: Option<usize> = None;
    let mut frames: Vec<SimFrame> = vec![];
    let mut out = vec![];
    let mut lost = 0;
    let mut late_dropped = 0;
    let mut max_seen: [Option<i64>; 3] = [None; 3];
    let mut unwrap_in = [Unwrap::new(16), Unwrap::new(16), Unwrap::new(16)];
    let mut out_unwrap = Unwrap::new(16);
    let mut violations = vec![];
    let mut last_out_enc: Option<u8> = None;
    let mut segments = 0;
    let mut switches = 0;
    for tick in 0..ticks {
        let now = after(t0, 33 * tick as u64);
        if rng.chance(8) {
            switches += 1;
            let t = if rng.chance(10) {
                None
            } else {
                layer(rng.below(3) as u8, rng.below(3) as u8)
            };
            if t.is_none() && p.target().is_some() {
                segments += 1;
            }
            cut_enc = None;
            match t {
                Some(l) if cuts && switches % 2 == 0 => {
                    let before = p.current_encoding();
                    if p.cut_to_target(l) {
                        segments += 1;
                        cuts_made += 1;
                        cut_enc = before;
                    }
                }
                _ => p.set_target(t),
            }
        }
        let force_key = key_due == Some(tick) || tick == 0;
        if force_key {
            key_due = None;
        }
        // (frame index, meta) for this tick
        let mut batch: Vec<(usize, PacketMeta)> = vec![];
        for e in 0..3 {
            let key = force_key || rng.chance(1);
            if key {
                pattern[e] = 0;
            }
            let k = pattern[e] % 4;
            pattern[e] += 1;
            let tid = [0u8, 2, 1, 2][k];
            let refs = if key {
                vec![]
            } else {
                match k {
                    0..=2 => vec![last_tl0[e]],
                    _ => vec![last_tl1[e]],
                }
            };
            let sync = key || k == 1 || k == 2;
            if tid == 0 {
                tl0[e] = tl0[e].wrapping_add(1);
            }
            let f = frames.len();
            frames.push(SimFrame {
                enc: e as u8,
                pic: f,
                tid,
                key,
                refs,
                delivered: 0,
                forwarded: 0,
            });
            if tid == 0 {
                last_tl0[e] = f;
            }
            if tid == 1 {
                last_tl1[e] = f;
            }
            let n = 1 + e + rng.below(2) as usize;
            for i in 0..n {
                batch.push((
                    f,
                    PacketMeta {
                        encoding: e as u8,
                        spatial: 0,
                        temporal: tid,
                        seq: seq[e],
                        ts: ts[e],
                        marker: i == n - 1,
                        start_of_frame: i == 0,
                        end_of_frame: i == n - 1,
                        keyframe: key && i == 0,
                        switching_point: sync,
                        picture_id: Some(pid[e]),
                        tl0picidx: Some(tl0[e]),
                        ..PacketMeta::default()
                    },
                ));
                seq[e] = seq[e].wrapping_add(1);
            }
            ts[e] = ts[e].wrapping_add(3000);
            pid[e] = (pid[e] + 1) & 0x7fff;
        }
        if reorder {
            for i in 1..batch.len() {
                if rng.chance(15) {
                    batch.swap(i - 1, i);
                }
            }
        }
        for (f, m) in batch {
            if rng.chance(loss_pct) {
                lost += 1;
                continue;
            }
            frames[f].delivered += 1;
            let e = usize::from(m.encoding);
            let (ext, _) = unwrap_in[e].update(u32::from(m.seq));
            let late = max_seen[e].is_some_and(|x| ext < x);
            if !late {
                max_seen[e] = Some(ext);
            }
            let target = p.target();
            let v = p.on_packet(now, &m);
            match v {
                Verdict::Drop(_) => {
                    if late {
                        late_dropped += 1;
                    }
                }
                Verdict::Forward(r) => {
                    frames[f].forwarded += 1;
                    let (oseq, _) = out_unwrap.update(u32::from(r.seq));
                    let fr = &frames[f];
                    let first_fwd = fr.forwarded == 1;
                    match target {
                        None => violations.push(format!("forwarded while suspended: frame {f}")),
                        Some(t) => {
                            if first_fwd && fr.enc == t.encoding && fr.tid > t.temporal {
                                violations.push(format!("frame {f} tid {} above target {t:?}", fr.tid));
                            }
                            if first_fwd && fr.enc > t.encoding && fr.tid > 0 {
                                violations.push(format!("frame {f} above target enc, tid {}", fr.tid));
                            }
                        }
                    }
                    if first_fwd && cut_enc == Some(fr.enc) {
                        violations.push(format!("frame {f} of cut encoding {} forwarded", fr.enc));
                    }
                    // Judge switches in decision order: a frame is decided (and, if accepted,
                    // forwarded) on its first arriving packet.
                    if first_fwd {
                        if last_out_enc != Some(fr.enc) {
                            segments += 1;
                            if !fr.key {
                                violations.push(format!("encoding switch at non-keyframe {f}"));
                            }
                        }
                        last_out_enc = Some(fr.enc);
                    }
                    out.push(Out {
                        frame: f,
                        seq: oseq,
                        ts: r.ts,
                        pid: r.picture_id.unwrap_or(0),
                        tl0: r.tl0picidx,
                        marker: r.marker,
                    });
                }
            }
        }
        if let (Some(_), None) = (p.needs_keyframe(), key_due) {
            key_due = Some(tick + 3);
        }
    }
    assert!(switches >= 10 || ticks < 200, "too few switches");
    SimResult {
        frames,
        out,
        lost,
        late_dropped,
        segments: segments + 2,
        violations,
        cuts: cuts_made,
    }
}

fn check(r: &SimResult, exact: bool) -> Result<(), TestCaseError> {
    prop_assert!(
        r.violations.is_empty(),
        "{:?}",
        &r.violations[..r.violations.len().min(5)]
    );
    // No duplicate output seq; gaps only where the input had them.
    let mut seqs: Vec<i64> = r.out.iter().map(|o| o.seq).collect();
    seqs.sort_unstable();
    let n = seqs.len();
    seqs.dedup();
    prop_assert_eq!(seqs.len(), n, "duplicate output seq");
    if n > 1 {
        let missing = (seqs[n - 1] - seqs[0] + 1) as usize - n;
        if exact {
            prop_assert_eq!(missing, 0, "gap in output without input loss");
        } else {
            prop_assert!(
                missing <= r.lost + r.late_dropped + r.segments,
                "missing {} > lost {} + late {} + segments {}",
                missing,
                r.lost,
                r.late_dropped,
                r.segments
            );
        }
    }
    // Every forwarded frame's references were forwarded (or never reached the bridge).
    for (i, f) in r.frames.iter().enumerate() {
        if f.forwarded == 0 {
            continue;
        }
        for &d in &f.refs {
            if d == usize::MAX {
                continue;
            }
            let rf = &r.frames[d];
            prop_assert!(
                rf.forwarded > 0 || rf.delivered == 0,
                "frame {} (enc {} tid {}) forwarded but its reference {} (tid {}) was dropped",
                i,
                f.enc,
                f.tid,
                d,
                rf.tid
            );
        }
    }
    // Without loss, the last forwarded packet of every picture carries the marker (SVC: the end
    // of the highest forwarded spatial layer).
    if exact {
        let mut last: HashMap<usize, Out> = HashMap::new();
        for o in &r.out {
            let e = last.entry(r.frames[o.frame].pic).or_insert(*o);
            if o.seq > e.seq {
                *e = *o;
            }
        }
        for (pic, o) in last {
            prop_assert!(o.marker, "picture {} ends without marker (frame {})", pic, o.frame);
        }
    }
    // Per frame, in output order: picture ID +1, TL0PICIDX +1 on base frames, ts increasing.
    let mut by_seq = r.out.clone();
    by_seq.sort_by_key(|o| o.seq);
    let mut prev: Option<Out> = None;
    let mut seen: HashMap<usize, Out> = HashMap::new();
    for o in by_seq {
        if let Some(s) = seen.get(&o.frame) {
            prop_assert_eq!((s.pid, s.tl0, s.ts), (o.pid, o.tl0, o.ts));
            continue;
        }
        seen.insert(o.frame, o);
        if let Some(q) = prev.filter(|q| r.frames[q.frame].pic == r.frames[o.frame].pic) {
            prop_assert_eq!((q.pid, q.tl0, q.ts), (o.pid, o.tl0, o.ts), "one picture, one id");
            continue;
        }
        if let Some(q) = prev {
            let dp = o.pid.wrapping_sub(q.pid) & 0x7fff;
            let dt = match (o.tl0, q.tl0) {
                (Some(a), Some(b)) => Some(a.wrapping_sub(b)),
                _ => None,
            };
            let dts = o.ts.wrapping_sub(q.ts);
            prop_assert!(dts > 0 && dts < 0x8000_0000, "ts not increasing: {} -> {}", q.ts, o.ts);
            if exact {
                prop_assert_eq!(dp, 1, "picture id not continuous");
                let base = r.frames[o.frame].tid == 0;
                if let Some(dt) = dt {
                    prop_assert_eq!(dt, u8::from(base), "tl0picidx not continuous");
                }
            } else {
                prop_assert!((1..200).contains(&dp), "picture id went back: {} -> {}", q.pid, o.pid);
                prop_assert!(dt.is_none_or(|d| d < 100), "tl0picidx went back");
            }
        }
        prev = Some(o);
    }
    Ok(())
}

/// A VP9 L3T3 full-SVC sender (one encoding; S1/S2 predicted from the layer below in every
/// picture and from their own layer's earlier pictures except in keyframe pictures), with the
/// same loss/reorder/target-switch treatment.
///
/// With `av1`, the sender is AV1 L1T3 with the dependency descriptor instead: decode target `d`
/// = temporal layers 0..=d, frame numbers instead of picture IDs.
fn simulate_svc(seed: u64, loss_pct: u64, reorder: bool, ticks: usize, av1: bool) -> SimResult {
    simulate_svc_mode(seed, loss_pct, reorder, ticks, av1, false)
}

/// With `av1` and `ksvc`: AV1 L3T3_KEY as Chrome sends it — spatial layers depend on each other
/// only in keyframe pictures, decode target `3s + t` = spatial layer `s` (alone, after the key
/// picture) with temporal layers 0..=t, each frame's references passed as DD frame diffs. A
/// K-SVC target never contains another spatial layer's, so spatial switches, up or down, must
/// wait for a point where the new layer's references were forwarded; meanwhile frames of the
/// old layer go on (the "above target" check does not apply). Output picture "ids" are then a
/// count of forwarded pictures (frame numbers differ per spatial frame).
fn simulate_svc_mode(seed: u64, loss_pct: u64, reorder: bool, ticks: usize, av1: bool, ksvc: bool) -> SimResult {
    let mut rng = Rng(seed | 1);
    let t0 = Instant::now();
    let codec = if av1 { Codec::Av1 } else { Codec::Vp9 };
    let spatial_layers = if av1 && !ksvc { 1 } else { 3 };
    let mut p = Projection::new(9, codec, 65_000, 7);
    let svc_layer = |s: u8, t: u8| {
        let s = if av1 && !ksvc { 0 } else { s };
        Some(Layer {
            encoding: 0,
            spatial: s,
            temporal: t,
            decode_target: av1.then_some(if ksvc {
                DecodeTarget {
                    index: 3 * s + t,
                    // Contained: the same spatial layer's lower temporal targets.
                    active_mask: ((2u32 << t) - 1) << (3 * s),
                }
            } else {
                DecodeTarget {
                    index: t,
                    active_mask: (2u32 << t) - 1,
                }
            }),
        })
    };
    let mut fnums: Vec<u16> = vec![];
    let mut out_pics = 0u16;
    let mut last_out_pic = usize::MAX;
    let mut fnum = rng.next() as u16;
    p.set_target(svc_layer(2, 2));
    let mut seq = rng.next() as u16;
    let mut ts = rng.next() as u32;
    let mut pid = (rng.next() as u16) & 0x7fff;
    let mut tl0 = rng.next() as u8;
    let mut pattern = 0usize;
    let mut last_tl0 = [usize::MAX; 3];
    let mut last_tl1 = [usize::MAX; 3];
    let mut key_due: Option<usize> = None;
    let mut frames: Vec<SimFrame> = vec![];
    let mut out = vec![];
    let (mut lost, mut late_dropped, mut segments) = (0, 0, 2);
    let mut max_seen: Option<i64> = None;
    let mut unwrap_in = Unwrap::new(16);
    let mut out_unwrap = Unwrap::new(16);
    let mut violations = vec![];
    for tick in 0..ticks {
        let now = after(t0, 33 * tick as u64);
        if rng.chance(8) {
            let t = if rng.chance(10) {
                None
            } else {
                svc_layer(rng.below(3) as u8, rng.below(3) as u8)
            };
            if t.is_none() && p.target().is_some() {
                segments += 1;
            }
            p.set_target(t);
        }
        let key = key_due == Some(tick) || tick == 0 || rng.chance(1);
        if key {
            key_due = None;
            pattern = 0;
        }
        let k = pattern % 4;
        pattern += 1;
        let tid = [0u8, 2, 1, 2][k];
        if tid == 0 {
            tl0 = tl0.wrapping_add(1);
        }
        let pic = frames.len();
        let mut batch: Vec<(usize, PacketMeta)> = vec![];
        for sid in 0..spatial_layers {
            let f = frames.len();
            let mut refs = vec![];
            if sid > 0 && (key || !ksvc) {
                refs.push(f - 1);
            }
            if !key {
                refs.push(if k == 3 { last_tl1[sid] } else { last_tl0[sid] });
            }
            fnums.push(fnum);
            let fdiffs: Vec<u16> = refs
                .iter()
                .filter(|&&r| r != usize::MAX)
                .map(|&r| fnum.wrapping_sub(fnums[r]))
                .collect();
            frames.push(SimFrame {
                enc: 0,
                pic,
                tid,
                key,
                refs,
                delivered: 0,
                forwarded: 0,
            });
            if tid == 0 {
                last_tl0[sid] = f;
            }
            if tid == 1 {
                last_tl1[sid] = f;
            }
            let n = 1 + rng.below(2) as usize;
            for i in 0..n {
                batch.push((
                    f,
                    PacketMeta {
                        spatial: sid as u8,
                        temporal: tid,
                        seq,
                        ts,
                        marker: sid == spatial_layers - 1 && i == n - 1,
                        start_of_frame: i == 0,
                        end_of_frame: i == n - 1,
                        keyframe: key && sid == 0 && i == 0,
                        switching_point: key || k == 1 || k == 2,
                        spatial_switching_point: key,
                        picture_id: (!av1).then_some(pid),
                        tl0picidx: (!av1).then_some(tl0),
                        frame_number: av1.then_some(fnum),
                        av1: av1.then(|| {
                            // DT d holds temporal layers 0..=d; sync frames are switch points.
                            let temporal = 0b111 & !((1u32 << tid) - 1);
                            let present = match (ksvc, key) {
                                (false, _) => temporal,
                                // The key picture's S`sid` frame is in every target of layer
                                // `sid` and above.
                                (true, true) => 0x1ff & !((1u32 << (3 * sid)) - 1),
                                (true, false) => temporal << (3 * sid),
                            };
                            let switch = if key || k != 3 { present } else { 0 };
                            Av1Dti {
                                present,
                                switch,
                                ..Av1Dti::default()
                            }
                            .with_refs(&fdiffs)
                        }),
                        ..PacketMeta::default()
                    },
                ));
                seq = seq.wrapping_add(1);
            }
            fnum = fnum.wrapping_add(1);
        }
        ts = ts.wrapping_add(3000);
        pid = (pid + 1) & 0x7fff;
        if reorder {
            for i in 1..batch.len() {
                if rng.chance(15) {
                    batch.swap(i - 1, i);
                }
            }
        }
        for (f, m) in batch {
            if rng.chance(loss_pct) {
                lost += 1;
                continue;
            }
            frames[f].delivered += 1;
            let (ext, _) = unwrap_in.update(u32::from(m.seq));
            let late = max_seen.is_some_and(|x| ext < x);
            if !late {
                max_seen = Some(ext);
            }
            let target = p.target();
            match p.on_packet(now, &m) {
                Verdict::Drop(_) => late_dropped += usize::from(late),
                Verdict::Forward(r) => {
                    frames[f].forwarded += 1;
                    let (oseq, _) = out_unwrap.update(u32::from(r.seq));
                    match target {
                        None => violations.push(format!("forwarded while suspended: {f}")),
                        Some(_) if ksvc && av1 => {}
                        Some(t) if frames[f].forwarded == 1 => {
                            if m.spatial > t.spatial || m.temporal > t.temporal {
                                violations.push(format!("frame {f} above target {t:?}"));
                            }
                        }
                        Some(_) => {}
                    }
                    if frames[f].forwarded == 1 && frames[f].pic != last_out_pic {
                        last_out_pic = frames[f].pic;
                        out_pics = out_pics.wrapping_add(1);
                    }
                    let pid = if ksvc && av1 {
                        Some(out_pics)
                    } else {
                        r.picture_id.or(r.frame_number)
                    };
                    out.push(Out {
                        frame: f,
                        seq: oseq,
                        ts: r.ts,
                        pid: pid.unwrap_or(0),
                        tl0: r.tl0picidx,
                        marker: r.marker,
                    });
                }
            }
        }
        if let (Some(_), None) = (p.needs_keyframe(), key_due) {
            key_due = Some(tick + 3);
        }
    }
    SimResult {
        frames,
        out,
        lost,
        late_dropped,
        segments,
        violations,
        cuts: 0,
    }
}

/// The SVC simulation reaches every spatial layer (so the property test exercises switching).
#[test]
fn svc_simulation_switches_layers() {
    let r = simulate_svc(7, 0, false, 600, false);
    let mut sids = [0usize; 3];
    for o in &r.out {
        let f = &r.frames[o.frame];
        sids[o.frame - f.pic] += 1;
    }
    assert!(sids.iter().all(|&n| n > 20), "{sids:?}");
    check(&r, true).unwrap();
}

/// The K-SVC simulation reaches every spatial layer (so its property test exercises spatial
/// switches).
#[test]
fn av1_ksvc_simulation_switches_layers() {
    let r = simulate_svc_mode(7, 0, false, 600, true, true);
    let mut sids = [0usize; 3];
    for o in &r.out {
        let f = &r.frames[o.frame];
        sids[o.frame - f.pic] += 1;
    }
    assert!(sids.iter().all(|&n| n > 20), "{sids:?}");
    check(&r, true).unwrap();
}

/// The VP9 K-SVC simulation reaches every spatial layer (its spatial up-switches happen only
/// at keyframes).
#[test]
fn vp9_ksvc_simulation_switches_layers() {
    let r = simulate_svc_mode(7, 0, false, 600, false, true);
    let mut sids = [0usize; 3];
    for o in &r.out {
        let f = &r.frames[o.frame];
        sids[o.frame - f.pic] += 1;
    }
    assert!(sids.iter().all(|&n| n > 20), "{sids:?}");
    check(&r, true).unwrap();
}

/// The simulation forwards from several encodings (so the property test exercises switching).
#[test]
fn simulation_switches_encodings() {
    let r = simulate(42, 0, false, 600);
    let encs: std::collections::HashSet<u8> = r.out.iter().map(|o| r.frames[o.frame].enc).collect();
    assert!(encs.len() >= 2, "only {encs:?}");
    assert!(r.segments >= 5);
    check(&r, true).unwrap();
}

/// The cut simulation really cuts (so the cut property tests exercise it), and stays exact.
#[test]
fn simulation_makes_cuts() {
    let r = simulate_cuts(42, 0, false, 600, true);
    assert!(r.cuts >= 3, "only {} cuts", r.cuts);
    check(&r, true).unwrap();
}

/// Regression: reordering lets a keyframe of the current encoding be decided before an older
/// frame's packets; the switch that follows is still at a keyframe.
#[test]
fn reorder_regression_seed() {
    let r = simulate(2782201959294053108, 0, true, 400);
    check(&r, false).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Lossless, in order: output is gap-free and every counter is exactly continuous.
    #[test]
    fn simulcast_lossless(seed in any::<u64>()) {
        let r = simulate(seed, 0, false, 400);
        check(&r, true)?;
    }

    /// Simulcast with collapse cuts among the target changes, lossless: still gap-free and
    /// exactly continuous, and a cut encoding is never forwarded.
    #[test]
    fn simulcast_cuts_lossless(seed in any::<u64>()) {
        let r = simulate_cuts(seed, 0, false, 400, true);
        check(&r, true)?;
    }

    /// Simulcast with cuts, loss and reordering.
    #[test]
    fn simulcast_cuts_lossy(seed in any::<u64>(), loss in 0u64..10, reorder in any::<bool>()) {
        let r = simulate_cuts(seed, loss, reorder, 400, true);
        check(&r, false)?;
    }

    /// VP9 SVC, lossless and in order: gap-free, exactly continuous, decodable.
    #[test]
    fn svc_lossless(seed in any::<u64>()) {
        let r = simulate_svc(seed, 0, false, 300, false);
        check(&r, true)?;
    }

    /// VP9 SVC with loss and reordering.
    #[test]
    fn svc_lossy(seed in any::<u64>(), loss in 0u64..10, reorder in any::<bool>()) {
        let r = simulate_svc(seed, loss, reorder, 300, false);
        check(&r, false)?;
    }

    /// AV1 L1T3 with decode-target switches, lossless: frame numbers exactly continuous.
    #[test]
    fn av1_lossless(seed in any::<u64>()) {
        let r = simulate_svc(seed, 0, false, 300, true);
        check(&r, true)?;
    }

    /// AV1 L3T3_KEY (K-SVC) with spatial and temporal decode-target switches, lossless: every
    /// forwarded frame's references were forwarded, every picture ends with the marker.
    #[test]
    fn vp9_ksvc_lossless(seed in any::<u64>()) {
        let r = simulate_svc_mode(seed, 0, false, 300, false, true);
        check(&r, true)?;
    }

    #[test]
    fn vp9_ksvc_lossy(seed in any::<u64>(), loss in 0u64..10, reorder in any::<bool>()) {
        let r = simulate_svc_mode(seed, loss, reorder, 300, false, true);
        check(&r, false)?;
    }

    #[test]
    fn av1_ksvc_lossless(seed in any::<u64>()) {
        let r = simulate_svc_mode(seed, 0, false, 300, true, true);
        check(&r, true)?;
    }

    /// AV1 L3T3_KEY with loss and reordering.
    #[test]
    fn av1_ksvc_lossy(seed in any::<u64>(), loss in 0u64..10, reorder in any::<bool>()) {
        let r = simulate_svc_mode(seed, loss, reorder, 300, true, true);
        check(&r, false)?;
    }

    /// AV1 with loss and reordering.
    #[test]
    fn av1_lossy(seed in any::<u64>(), loss in 0u64..10, reorder in any::<bool>()) {
        let r = simulate_svc(seed, loss, reorder, 300, true);
        check(&r, false)?;
    }

    /// With loss and bounded reordering: no duplicates, gaps only from input holes, decodable
    /// references, monotone counters, only target layers.
    #[test]
    fn simulcast_lossy(seed in any::<u64>(), loss in 0u64..10, reorder in any::<bool>()) {
        let r = simulate(seed, loss, reorder, 400);
        check(&r, false)?;
    }
}

/// A projection exists per (receiver, source) pair: keep it a few kB and allocation-free.
#[test]
fn projection_is_small() {
    let size = std::mem::size_of::<Projection>();
    assert!(size < 10_000, "Projection is {size} bytes");
}
