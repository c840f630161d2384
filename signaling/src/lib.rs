//! Palim's signaling: everything around the media core that speaks to Jicofo, browsers and
//! operators. `signaling → sfu`; nothing here is on the per-packet path.

pub mod colibri2;
pub mod config;
pub mod jvbconf;
pub mod memory;
pub mod ops;
pub mod public_http;
pub mod rest;
pub mod server;
pub mod stun;
pub mod ws;
pub mod xmpp;
