//! Integer newtypes for everything the core keys on. Jitsi's string ids stop at `signaling`.

use std::fmt;

macro_rules! id {
    ($(#[$m:meta])* $name:ident($t:ty)) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(pub $t);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id!(
    /// A conference, allocated by `signaling` (it maps Jicofo's meeting-id to this).
    ConferenceId(u32)
);
id!(
    /// An endpoint (one participant), unique within the whole bridge.
    EndpointId(u32)
);
id!(
    /// An RTP synchronisation source.
    Ssrc(u32)
);
