use std::time::Duration;

use super::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jvb/");

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{DATA}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A jvb.conf shaped like the one Debian's jitsi-videobridge2 writes (public HTTP server,
/// websockets, the `shard` XMPP client, the STUN mapping) reads into exactly the settings of
/// the equivalent config.toml; Debian-only keys are reported as ignored.
#[test]
fn debian_jvb_conf_matches_equivalent_toml() {
    let want = Config::from_toml(&data("equivalent.toml")).expect("equivalent.toml parses");
    let got = read("jvb.conf", &data("jvb.conf"), None).expect("jvb.conf reads");
    assert_eq!(got.config, want);
    assert!(
        got.ignored.iter().any(|k| k.ends_with("videobridge.websockets.domain")),
        "{:?}",
        got.ignored
    );
    assert!(got
        .ignored
        .iter()
        .any(|k| k.ends_with("videobridge.http-servers.public.port")));
}

/// Older Debian packages keep the XMPP client in sip-communicator.properties: same result.
#[test]
fn legacy_properties_match_equivalent_toml() {
    let want = Config::from_toml(&data("equivalent.toml")).expect("equivalent.toml parses");
    let got = read(
        "jvb-legacy.conf",
        &data("jvb-legacy.conf"),
        Some(("sip-communicator.properties", &data("sip-communicator.properties"))),
    )
    .expect("reads");
    assert_eq!(got.config, want);
    assert!(
        got.ignored.iter().any(|k| k.ends_with("ENABLE_STATISTICS")),
        "{:?}",
        got.ignored
    );
}

#[test]
fn every_mapped_key() {
    let c = read("jvb-full.conf", &data("jvb-full.conf"), None)
        .expect("reads")
        .config;
    assert!(c.xmpp.enabled);
    assert_eq!((c.xmpp.host.as_str(), c.xmpp.port), ("xmpp1.example.org", 5223));
    assert_eq!(c.xmpp.additional_servers, vec!["xmpp2.example.org:5222".to_string()]);
    assert_eq!(c.xmpp.domain, "auth.example.org");
    assert_eq!(c.xmpp.muc_jids, vec!["jvbbrewery@internal-muc.example.org".to_string()]);
    assert_eq!(c.xmpp.muc_nickname, "jvb-1");
    assert!(c.xmpp.disable_certificate_verification);
    assert_eq!(c.xmpp.presence_interval, Duration::from_secs(2));
    assert!(c.rest.colibri_enabled && c.rest.stats_enabled && c.rest.shutdown_enabled);
    assert!(!c.rest.debug_enabled);
    assert_eq!(c.rest.bind, "0.0.0.0:8081".parse::<SocketAddr>().unwrap());
    assert_eq!(c.ice.udp_port, 10001);
    assert_eq!(c.shutdown.graceful_shutdown_max_duration, Duration::from_secs(7200));
    assert_eq!(c.shutdown.graceful_shutdown_min_participants, 2);
    assert_eq!(c.shutdown.shutting_down_delay, Duration::from_secs(30));
    assert!(c.shutdown.initial_drain_mode);
    assert!(c.ice.require_valid_address);
    assert_eq!(c.sfu.endpoint_timeout, Duration::from_secs(90));
    assert_eq!(
        c.ice.stun_servers,
        vec!["stun1.example.org:3478", "stun2.example.org:3478"]
    );
    assert_eq!(c.ice.advertise_ips, vec!["198.51.100.7", "203.0.113.9#30000"]);
    c.sfu_config().expect("valid media config");
}

#[test]
fn errors_name_file_key_and_reason() {
    let cases = [
        ("videobridge.ice.udp.port = 99999\n", "videobridge.ice.udp.port", "out of range"),
        ("videobridge.ice.udp.port = ten\n", "videobridge.ice.udp.port", "not a port"),
        ("videobridge.initial-drain-mode = maybe\n", "videobridge.initial-drain-mode", "true or false"),
        ("videobridge.http-servers.private.host = nowhere\n", "private.host", "not an IP"),
        ("videobridge.shutdown.shutting-down-delay = soon\n", "shutting-down-delay", "not a duration"),
        (
            "videobridge.apis.xmpp-client.configs.a { hostname = h\n username = u\n password = p\n muc_jids = \"r@d\"\n }\n",
            "MUC_NICKNAME",
            "missing",
        ),
        (
            "videobridge.apis.xmpp-client.configs.a { hostname = h\n username = u\n password = p\n muc_jids = \"r@d\"\n muc_nickname = n\n hostnmae = x\n }\n",
            "HOSTNMAE",
            "unknown XMPP client key",
        ),
        ("a {\n b = ${c}\n}\n", "line 2", "substitutions"),
    ];
    for (text, key, reason) in cases {
        let e = read("/etc/jitsi/videobridge/jvb.conf", text, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/jitsi/videobridge/jvb.conf"), "{e}");
        assert!(e.contains(key), "{text:?}: {e}");
        assert!(e.contains(reason), "{text:?}: {e}");
    }
    let e = read(
        "j.conf",
        "",
        Some((
            "sip.properties",
            "org.ice4j.ice.harvest.NAT_HARVESTER_PUBLIC_ADDRESS=bogus\n",
        )),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("sip.properties") && e.contains("NAT_HARVESTER_PUBLIC_ADDRESS") && e.contains("not an IP"),
        "{e}"
    );
}

/// Two XMPP configs with different accounts cannot be one Palim `[xmpp]`: refused, not
/// half-applied.
#[test]
fn differing_xmpp_accounts_are_refused() {
    let text = r#"
videobridge.apis.xmpp-client.configs {
  a { hostname = h1, username = u, password = p, muc_jids = "r@d", muc_nickname = n }
  b { hostname = h2, username = other, password = p, muc_jids = "r@d", muc_nickname = n }
}
"#;
    let e = read("jvb.conf", text, None).unwrap_err().to_string();
    assert!(e.contains("configs.b") && e.contains("same domain, account"), "{e}");
}
