//! The conference's media sources as Jicofo signalled them (media.md §3.1): each video
//! source has one encoding per primary SSRC (SIM group order, lowest first), each encoding
//! an optional RTX partner (FID group). Every SSRC routes to (source, encoding, is-RTX).
//!
//! A source is keyed by its first primary SSRC ([`SourceKey`]): stable for the source's
//! life, and what a receiver sees in non-rewriting mode (§3.5).

use std::collections::HashMap;

use crate::control::{GroupSemantics, MediaKind, SourceDescription, VideoType};
use crate::id::EndpointId;

/// A source's first primary SSRC.
pub type SourceKey = u32;

/// Where an incoming SSRC belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub owner: EndpointId,
    pub source: SourceKey,
    pub kind: MediaKind,
    /// Index into the source's encodings.
    pub encoding: u8,
    pub rtx: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ssrc: u32,
    pub rtx: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub key: SourceKey,
    pub owner: EndpointId,
    pub name: String,
    pub kind: MediaKind,
    pub video_type: Option<VideoType>,
    pub encodings: Vec<Encoding>,
}

/// At most this many simulcast encodings per source (JVB's RtpEncodingDesc limit is the SIM
/// group; browsers send three).
pub const MAX_ENCODINGS: usize = 4;

/// Build the encodings of one signalled source: SIM order if grouped, else the first SSRC
/// that is nobody's RTX; FID pairs attach RTX SSRCs.
pub fn encodings_of(s: &SourceDescription) -> Vec<Encoding> {
    let mut rtx_of: HashMap<u32, u32> = HashMap::new();
    let mut is_rtx: Vec<u32> = Vec::new();
    for g in &s.groups {
        if g.semantics == GroupSemantics::Fid && g.ssrcs.len() == 2 {
            rtx_of.insert(g.ssrcs[0].0, g.ssrcs[1].0);
            is_rtx.push(g.ssrcs[1].0);
        }
    }
    let primaries: Vec<u32> = match s
        .groups
        .iter()
        .find(|g| g.semantics == GroupSemantics::Sim && !g.ssrcs.is_empty())
    {
        Some(sim) => sim.ssrcs.iter().map(|x| x.0).take(MAX_ENCODINGS).collect(),
        None => s
            .ssrcs
            .iter()
            .map(|x| x.0)
            .chain(s.groups.iter().flat_map(|g| g.ssrcs.iter().map(|x| x.0)))
            .find(|x| !is_rtx.contains(x))
            .into_iter()
            .collect(),
    };
    primaries
        .into_iter()
        .map(|ssrc| Encoding {
            ssrc,
            rtx: rtx_of.get(&ssrc).copied(),
        })
        .collect()
}

/// All sources of a conference and the SSRC routing table.
#[derive(Debug, Default)]
pub struct SourceTable {
    routes: crate::FastMap<u32, Route>,
    sources: HashMap<SourceKey, SourceInfo>,
}

impl SourceTable {
    pub fn route(&self, ssrc: u32) -> Option<&Route> {
        self.routes.get(&ssrc)
    }

    pub fn get(&self, key: SourceKey) -> Option<&SourceInfo> {
        self.sources.get(&key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &SourceInfo> {
        self.sources.values()
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Replace all of `owner`'s sources. Returns the keys removed (for receivers' state) and
    /// refuses SSRCs already owned by another endpoint of the conference.
    pub fn set_endpoint_sources(
        &mut self,
        owner: EndpointId,
        sources: &[SourceDescription],
    ) -> Result<Vec<SourceKey>, String> {
        let mut new: Vec<SourceInfo> = Vec::new();
        for s in sources {
            let encodings = encodings_of(s);
            let Some(first) = encodings.first() else {
                continue;
            };
            new.push(SourceInfo {
                key: first.ssrc,
                owner,
                name: s.name.clone(),
                kind: s.kind,
                video_type: s.video_type,
                encodings,
            });
        }
        for info in &new {
            for e in &info.encodings {
                for ssrc in std::iter::once(e.ssrc).chain(e.rtx) {
                    if let Some(r) = self.routes.get(&ssrc) {
                        if r.owner != owner {
                            return Err(format!("SSRC {ssrc} belongs to another endpoint"));
                        }
                    }
                }
            }
        }
        let removed = self.remove_endpoint(owner);
        for info in new {
            self.insert(info);
        }
        Ok(removed
            .into_iter()
            .filter(|k| self.sources.get(k).is_none_or(|s| s.owner != owner))
            .collect())
    }

    /// A source learned from traffic before any signalling: one encoding, no RTX.
    pub fn learn(&mut self, owner: EndpointId, ssrc: u32, kind: MediaKind) -> Option<Route> {
        if self.routes.contains_key(&ssrc) {
            return None;
        }
        self.insert(SourceInfo {
            key: ssrc,
            owner,
            name: format!("learned-{ssrc:08x}"),
            kind,
            video_type: (kind == MediaKind::Video).then_some(VideoType::Camera),
            encodings: vec![Encoding { ssrc, rtx: None }],
        });
        self.routes.get(&ssrc).copied()
    }

    fn insert(&mut self, info: SourceInfo) {
        for (i, e) in info.encodings.iter().enumerate() {
            let route = |rtx| Route {
                owner: info.owner,
                source: info.key,
                kind: info.kind,
                encoding: i as u8,
                rtx,
            };
            self.routes.insert(e.ssrc, route(false));
            if let Some(r) = e.rtx {
                self.routes.insert(r, route(true));
            }
        }
        self.sources.insert(info.key, info);
    }

    /// Forget every source of `owner`; returns their keys.
    pub fn remove_endpoint(&mut self, owner: EndpointId) -> Vec<SourceKey> {
        self.routes.retain(|_, r| r.owner != owner);
        let keys: Vec<SourceKey> = self
            .sources
            .values()
            .filter(|s| s.owner == owner)
            .map(|s| s.key)
            .collect();
        for k in &keys {
            self.sources.remove(k);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::SsrcGroup;
    use crate::id::Ssrc;

    fn sim_source(base: u32) -> SourceDescription {
        let ss = |v: &[u32]| v.iter().map(|x| Ssrc(*x)).collect::<Vec<_>>();
        SourceDescription {
            kind: MediaKind::Video,
            name: format!("ep-v{base}"),
            ssrcs: ss(&[base, base + 1, base + 2, base + 10, base + 11, base + 12]),
            groups: vec![
                SsrcGroup {
                    semantics: GroupSemantics::Sim,
                    ssrcs: ss(&[base, base + 1, base + 2]),
                },
                SsrcGroup {
                    semantics: GroupSemantics::Fid,
                    ssrcs: ss(&[base, base + 10]),
                },
                SsrcGroup {
                    semantics: GroupSemantics::Fid,
                    ssrcs: ss(&[base + 1, base + 11]),
                },
                SsrcGroup {
                    semantics: GroupSemantics::Fid,
                    ssrcs: ss(&[base + 2, base + 12]),
                },
            ],
            video_type: Some(VideoType::Camera),
        }
    }

    #[test]
    fn simulcast_with_rtx_routes_every_ssrc() {
        let mut t = SourceTable::default();
        let ep = EndpointId(1);
        t.set_endpoint_sources(ep, &[sim_source(100)]).expect("fresh SSRCs");
        let s = t.get(100).expect("keyed by the first SIM SSRC");
        assert_eq!(s.encodings.len(), 3);
        assert_eq!(
            s.encodings[2],
            Encoding {
                ssrc: 102,
                rtx: Some(112)
            }
        );
        let r = t.route(111).expect("RTX of encoding 1");
        assert_eq!((r.source, r.encoding, r.rtx), (100, 1, true));
        let r = t.route(102).expect("encoding 2");
        assert_eq!((r.source, r.encoding, r.rtx), (100, 2, false));
        assert!(t.route(103).is_none());
        assert_eq!(
            [100, 101, 102, 110, 111, 112]
                .iter()
                .filter(|x| t.route(**x).is_some_and(|r| r.owner == ep))
                .count(),
            6
        );
    }

    #[test]
    fn replace_all_and_foreign_ssrcs() {
        let mut t = SourceTable::default();
        t.set_endpoint_sources(EndpointId(1), &[sim_source(100)])
            .expect("fresh");
        assert!(t.set_endpoint_sources(EndpointId(2), &[sim_source(100)]).is_err());
        let removed = t
            .set_endpoint_sources(EndpointId(1), &[sim_source(200)])
            .expect("own SSRCs may be replaced");
        assert_eq!(removed, vec![100]);
        assert!(t.route(100).is_none());
        assert!(t.route(201).is_some());
        assert_eq!(t.remove_endpoint(EndpointId(1)), vec![200]);
        assert!(t.is_empty());
    }

    #[test]
    fn single_stream_with_rtx() {
        let s = SourceDescription {
            kind: MediaKind::Video,
            name: "x-v0".into(),
            ssrcs: vec![Ssrc(7), Ssrc(8)],
            groups: vec![SsrcGroup {
                semantics: GroupSemantics::Fid,
                ssrcs: vec![Ssrc(7), Ssrc(8)],
            }],
            video_type: None,
        };
        assert_eq!(encodings_of(&s), vec![Encoding { ssrc: 7, rtx: Some(8) }]);
    }
}
