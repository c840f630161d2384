//! Fuzz targets for the signaling parsers; see sfu/fuzz for the drivers (the in-process
//! mutational driver is shared by `#[path]`).

#[path = "../../../sfu/fuzz/src/driver.rs"]
pub mod driver;
pub mod seeds;
pub mod targets;

/// A named target.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("colibri2_xml", targets::colibri2_xml),
    ("colibri2_json", targets::colibri2_json),
    ("config_toml", targets::config_toml),
    ("jvbconf", targets::jvbconf),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
