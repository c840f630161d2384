//! Instruction counts of the forwarding path under callgrind: N receivers (default 10),
//! `PACKETS` 1,200-byte SRTP video packets forwarded through `Conference::forward`.
//!
//! ```text
//! cargo build --release -p benches --example forward_callgrind
//! valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='benches::Conference::forward' \
//!   target/release/examples/forward_callgrind 10
//! ```
//! Total `Ir` / packets = instructions per input packet (setup and packet making excluded).

use benches::Conference;
use sfu::config::SrtpProfile;

const PACKETS: usize = 2000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args().nth(1).map_or(Ok(10), |a| a.parse())?;
    let profile = match std::env::args().nth(2).as_deref() {
        Some("cm") => SrtpProfile::Aes128CmHmacSha1_80,
        _ => SrtpProfile::AeadAes128Gcm,
    };
    let mut conf = Conference::new(n, profile)?;
    let pkts = conf.make_video_packets(PACKETS)?;
    let mut out = 0;
    for p in pkts {
        out += conf.forward(p);
    }
    eprintln!("{profile:?}: N={n}, {PACKETS} packets in, {out} out");
    if out != PACKETS * n {
        return Err("not every packet was forwarded".into());
    }
    Ok(())
}
