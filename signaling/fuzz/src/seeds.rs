//! Seeds: the signaling test vectors (tests/data) and the shipped config.

use std::path::Path;

fn files(dir: &str, ext: &[&str]) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
        let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let ok = p.extension().and_then(|e| e.to_str()).is_some_and(|e| ext.contains(&e));
            if ok {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
    }
    out
}

fn json_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"meeting-id":"m1","name":"room@conference.example","create":true,"endpoints":[{"id":"a","create":true,"stats-id":"s","media":[{"type":"audio","payload-types":[{"id":111,"name":"opus","clockrate":48000,"channels":2}],"rtp-hdrexts":[{"id":1,"uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level"}]}],"transport":{"ice-controlling":true,"use-unique-port":false},"sources":[{"type":"audio","id":"a-a0","sources":[{"id":1234}]}]}]}"#,
        r#"{"meeting-id":"m1","endpoints":[{"id":"a","expire":true}]}"#,
        r#"{"meeting-id":"m1","expire":true}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Seeds of the target called `name`.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "colibri2_xml" => files("tests/data/colibri2", &["xml"]),
        "colibri2_json" => json_seeds(),
        "config_toml" => {
            let mut v = files("tests/data/jvb", &["toml"]);
            v.extend(
                files("..", &["toml"])
                    .into_iter()
                    .filter(|b| b.starts_with(b"#") || b.starts_with(b"[")),
            );
            v
        }
        "jvbconf" => {
            let mut v = files("tests/data/jvb", &["conf"]);
            if let (Some(c), Some(p)) = (v.first().cloned(), files("tests/data/jvb", &["properties"]).pop()) {
                let mut both = c;
                both.push(0);
                both.extend_from_slice(&p);
                v.push(both);
            }
            v
        }
        _ => Vec::new(),
    }
}
