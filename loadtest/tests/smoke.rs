//! End to end: the harness binary spawns the debug `palim`, runs a tiny scenario (2 × 3
//! endpoints, 5 s, 2 % loss on one uplink) and writes plausible JSON and an HTML report; bad
//! scenarios and unreachable bridges fail with one clear line.

mod common;
use common::harness;
use std::path::PathBuf;
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    common::scratch("smoke", name)
}

#[test]
fn tiny_scenario_through_spawned_palim() {
    let (v, stderr) = common::run_spawned(
        "smoke",
        "tiny",
        r#"
name = "smoke"
conferences = 2
endpoints = 3
join_rate = 30.0
duration = "5s"
warmup = "2s"
[[class]]
name = "lossy"
endpoints = [0]
uplink = { loss_percent = 2.0 }
"#,
    );
    let html = scratch("tiny.html");
    let t = &v["totals"];
    assert_eq!(v["connected"], 6, "{stderr}");
    let received = t["received_packets"].as_u64().expect("received");
    assert!(received > 1000, "received {received}");
    let loss = t["loss_percent"].as_f64().expect("loss");
    assert!(loss < 10.0, "loss {loss}");
    let p50 = t["latency_ms_p50"].as_f64().expect("p50");
    assert!(p50 > 0.0 && p50 < 200.0, "p50 {p50}");
    // The lossy uplink dropped packets, and its receivers noticed.
    let ep0 = &v["endpoints_detail"][0];
    assert_eq!(ep0["link_class"], "lossy");
    assert!(ep0["uplink"]["lost"].as_u64().expect("lost") > 0);
    let peers_loss: f64 = v["endpoints_detail"]
        .as_array()
        .expect("detail")
        .iter()
        .filter(|e| matches!(e["index"].as_u64(), Some(1 | 2)))
        .map(|e| e["loss_percent"].as_f64().expect("loss"))
        .sum();
    assert!(peers_loss > 0.0, "receivers of the lossy sender saw no loss");
    // Everyone's media went both ways.
    for e in v["endpoints_detail"].as_array().expect("detail") {
        assert!(e["received_packets"].as_u64().expect("rx") > 0, "{e}");
        assert!(e["sent_packets"].as_u64().expect("tx") > 0, "{e}");
    }
    assert!(v["series"].as_array().expect("series").len() >= 7);
    assert!(v["bridge"]["cpu_s"].as_f64().is_some(), "bridge CPU measured");
    let page = std::fs::read_to_string(&html).expect("report written");
    assert!(page.contains("<svg") && page.contains("smoke"));
}

#[test]
fn bad_scenario_is_one_clear_line() {
    let scenario = scratch("bad.toml");
    std::fs::write(&scenario, "conferences = 2\nendpionts = 3\n").expect("write");
    let out = Command::new(harness())
        .arg("--scenario")
        .arg(&scenario)
        .output()
        .expect("run loadtest");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("endpionts") && lines[0].contains("bad.toml"),
        "{stderr}"
    );
}

#[test]
fn unreachable_bridge_is_one_clear_line() {
    // A port nobody listens on: bind, learn it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = Command::new(harness())
        .args(["--rest", &format!("http://127.0.0.1:{port}"), "--quiet"])
        .output()
        .expect("run loadtest");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("not reachable"), "{stderr}");
}
