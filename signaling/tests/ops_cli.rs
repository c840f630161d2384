//! The `palim` binary's start-up edge: bad configuration fails with the file, key and reason;
//! `--jvb-conf` reads a Debian JVB install; the docker entrypoint maps docker-jitsi-meet's
//! `jvb` variables (dry run with `--check-config`). No network.
//!
//! Run: `cargo test -p signaling --test ops_cli`.

use std::path::PathBuf;
use std::process::{Command, Output};

const PALIM: &str = env!("CARGO_BIN_EXE_palim");

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palim-ops-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp file");
    p
}

/// Runs with a clean environment (no docker variables leak in from the test runner).
fn palim(args: &[&str]) -> Output {
    Command::new(PALIM)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run palim")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn bad_config_names_file_key_and_reason() {
    let cases = [
        ("unknown-key.toml", "[ice]\nudp_prot = 1\n", "udp_prot", "unknown field"),
        (
            "wrong-type.toml",
            "[ice]\nudp_port = \"ten\"\n",
            "udp_port",
            "invalid type",
        ),
        (
            "bad-address.toml",
            "[rest]\nbind = \"localhost\"\n",
            "bind",
            "invalid socket address",
        ),
        (
            "bad-advertise.toml",
            "[ice]\nadvertise_ips = [\"1.2.3\"]\n",
            "ice.advertise_ips",
            "bad address",
        ),
        (
            "bad-stun.toml",
            "[ice]\nstun_servers = [\"stun.example.org\"]\n",
            "ice.stun_servers",
            "host:port",
        ),
        (
            "bad-room.toml",
            "[xmpp]\nenabled = true\npassword = \"x\"\nmuc_jids = [\"brewery\"]\n",
            "xmpp.muc_jids",
            "bare room JID",
        ),
        (
            "bad-duration.toml",
            "[shutdown]\nshutting_down_delay = \"soon\"\n",
            "shutting_down_delay",
            "invalid",
        ),
        (
            "unknown-section.toml",
            "[octo]\nenabled = true\n",
            "octo",
            "unknown field",
        ),
    ];
    for (name, body, key, reason) in cases {
        let path = tmp_file(name, body);
        let out = palim(&["--config", path.to_str().expect("utf-8 path"), "--check-config"]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {stdout}{stderr}");
        assert!(
            stderr.contains(path.to_str().expect("utf-8")),
            "{name}: file missing in {stderr}"
        );
        assert!(stderr.contains(key), "{name}: key {key} missing in {stderr}");
        assert!(stderr.contains(reason), "{name}: reason {reason:?} missing in {stderr}");
        assert!(!stderr.contains("Stack backtrace"), "{stderr}");
    }
}

#[test]
fn bad_environment_names_the_variable() {
    let out = Command::new(PALIM)
        .arg("--check-config")
        .env_clear()
        .env("JVB_PORT", "ten thousand")
        .output()
        .expect("run palim");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("JVB_PORT") && stderr.contains("invalid digit"),
        "{stderr}"
    );
}

#[test]
fn bad_jvb_conf_names_file_key_and_reason() {
    let path = tmp_file("jvb.conf", "videobridge {\n  ice.udp.port = 70000\n}\n");
    let out = palim(&["--jvb-conf", path.to_str().expect("utf-8"), "--check-config"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(path.to_str().expect("utf-8"))
            && stderr.contains("videobridge.ice.udp.port")
            && stderr.contains("out of range"),
        "{stderr}"
    );
    // --config and --jvb-conf are exclusive.
    let out = palim(&["--jvb-conf", "a", "--config", "b", "--check-config"]);
    assert_ne!(out.status.code(), Some(0));
}

/// `--jvb-conf` on a Debian-shaped jvb.conf (with the sip-communicator.properties next to
/// it) prints the same configuration as `--config` on the equivalent config.toml.
#[test]
fn jvb_conf_check_config_equals_equivalent_toml() {
    let data = manifest().join("tests/data/jvb");
    let from_jvb = palim(&[
        "--jvb-conf",
        data.join("jvb.conf").to_str().expect("utf-8"),
        "--check-config",
    ]);
    let from_toml = palim(&[
        "--config",
        data.join("equivalent.toml").to_str().expect("utf-8"),
        "--check-config",
    ]);
    let (jvb_out, jvb_err) = text(&from_jvb);
    let (toml_out, toml_err) = text(&from_toml);
    assert!(from_jvb.status.success(), "{jvb_err}");
    assert!(from_toml.status.success(), "{toml_err}");
    let config_part = |s: &str| {
        s.lines()
            .take_while(|l| !l.starts_with("ignored"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(config_part(&jvb_out), config_part(&toml_out));
    assert!(
        jvb_out.contains("ignored (no Palim equivalent): ") && jvb_out.contains("websockets"),
        "{jvb_out}"
    );
    assert!(!jvb_out.contains("Zq7#xV@p"), "the password is redacted");
}

fn entrypoint(vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(manifest().join("../packaging/docker-entrypoint.sh"))
        .arg("--check-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PALIM_BIN", PALIM);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run the entrypoint")
}

fn assert_has(out: &str, needles: &[&str]) {
    for n in needles {
        assert!(out.contains(n), "missing {n:?} in:\n{out}");
    }
}

/// docker-jitsi-meet's `.env` for the jvb service, unchanged.
#[test]
fn docker_entrypoint_maps_jvb_variables() {
    let out = entrypoint(&[
        ("XMPP_SERVER", "xmpp.meet.jitsi,xmpp2.meet.jitsi:5223"),
        ("XMPP_DOMAIN", "meet.jitsi"),
        ("XMPP_AUTH_DOMAIN", "auth.meet.jitsi"),
        ("XMPP_INTERNAL_MUC_DOMAIN", "internal-muc.meet.jitsi"),
        ("JVB_AUTH_USER", "jvb"),
        ("JVB_AUTH_PASSWORD", "d0cker-secret"),
        ("JVB_BREWERY_MUC", "jvbbrewery"),
        ("JVB_MUC_NICKNAME", "jvb-7"),
        ("JVB_PORT", "10001"),
        ("JVB_ADVERTISE_IPS", "192.0.2.10,198.51.100.7#30000"),
        ("JVB_COLIBRI_PORT", "8099"),
        ("SHUTDOWN_REST_ENABLED", "1"),
        ("COLIBRI_REST_ENABLED", "1"),
        ("JVB_REQUIRE_VALID_ADDRESS", "1"),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_has(
        &stdout,
        &[
            "enabled: true",
            "host: \"xmpp.meet.jitsi\"",
            "port: 5222,",
            "additional_servers: [\n            \"xmpp2.meet.jitsi:5223\",",
            "domain: \"auth.meet.jitsi\"",
            "username: \"jvb\"",
            "password: \"<redacted>\"",
            "\"jvbbrewery@internal-muc.meet.jitsi\"",
            "muc_nickname: \"jvb-7\"",
            "disable_certificate_verification: true",
            "udp_port: 10001,",
            "\"192.0.2.10\"",
            "\"198.51.100.7#30000\"",
            "\"meet-jit-si-turnrelay.jitsi.net:443\"",
            "require_valid_address: true",
            // Inside the container the private server is 0.0.0.0:8080 whatever the host port.
            "bind: 0.0.0.0:8080,",
            "colibri_enabled: true",
            "shutdown_enabled: true",
        ],
    );
    assert!(!stdout.contains("d0cker-secret"));
}

#[test]
fn docker_entrypoint_defaults_and_switches() {
    // No password: refused, as docker's jvb image.
    let out = entrypoint(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("JVB_AUTH_PASSWORD"));

    // Defaults: xmpp.meet.jitsi, the public STUN server, COLIBRI REST and shutdown off.
    let out = entrypoint(&[("JVB_AUTH_PASSWORD", "x")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_has(
        &stdout,
        &[
            "host: \"xmpp.meet.jitsi\"",
            "\"meet-jit-si-turnrelay.jitsi.net:443\"",
            "colibri_enabled: false",
            "stats_enabled: false",
            "shutdown_enabled: false",
            "udp_port: 10000,",
        ],
    );

    // A dedicated bridge XMPP server; STUN and XMPP switches.
    let out = entrypoint(&[
        ("JVB_AUTH_PASSWORD", "x"),
        ("ENABLE_JVB_XMPP_SERVER", "1"),
        ("JVB_XMPP_SERVER", "xmpp.jvb.example"),
        ("JVB_DISABLE_STUN", "1"),
        ("DOCKER_HOST_ADDRESS", "203.0.113.4"),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_has(
        &stdout,
        &[
            "host: \"xmpp.jvb.example\"",
            "port: 6222,",
            "domain: \"auth.jvb.meet.jitsi\"",
            "\"jvbbrewery@muc.jvb.meet.jitsi\"",
            "stun_servers: [],",
            "\"203.0.113.4\"",
        ],
    );

    let out = entrypoint(&[("JVB_DISABLE_XMPP", "1")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("XmppSection {\n        enabled: false"), "{stdout}");
}

/// A media port that cannot be bound stops the start with the address and the keys to change.
#[test]
fn busy_media_port_fails_the_start() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    let port = busy.local_addr().expect("addr").port();
    let path = tmp_file(
        "busy.toml",
        &format!("[ice]\nbind_address = \"127.0.0.1\"\nudp_port = {port}\n[rest]\nbind = \"127.0.0.1:0\"\n"),
    );
    let out = palim(&["--config", path.to_str().expect("utf-8")]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("binding the media port 127.0.0.1:{port}")) && stderr.contains("ice.udp_port"),
        "{stderr}"
    );
}
