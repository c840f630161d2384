//! The `palim` binary as a child process logged in to the test Prosody, for the tests that drive
//! it from outside (`ops_prosody.rs`, `rolling_upgrade.rs`): configuration, REST, signals, exit.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use minidom::Element;

use super::colibri::{free_tcp_port, modify_at};
use super::{Prosody, TestFocus, AUTH_DOMAIN, BREWERY, JVB};

pub const PALIM: &str = env!("CARGO_BIN_EXE_palim");

/// `[ice]` on 127.0.0.1 only, with an ephemeral media port.
pub const ICE_LOOPBACK: &str = "bind_address = \"127.0.0.1\"\nudp_port = 0\nhost_addresses = [\"127.0.0.1\"]";

/// What varies between the tests' Palim configurations; the rest (XMPP login as `jvb` to the
/// test Prosody's brewery, REST with shutdown enabled on a free loopback port) is fixed.
#[derive(Clone, Debug)]
pub struct PalimConfig {
    /// The body of `[ice]`.
    pub ice: String,
    /// More lines for `[xmpp]`.
    pub xmpp_extra: String,
    /// More lines for `[rest]`.
    pub rest_extra: String,
    /// More sections appended to the file (e.g. `[shutdown]`).
    pub tail: String,
}

impl Default for PalimConfig {
    fn default() -> Self {
        Self {
            ice: ICE_LOOPBACK.into(),
            xmpp_extra: String::new(),
            rest_extra: String::new(),
            tail: "[shutdown]\nshutting_down_delay = \"1m\"\n".into(),
        }
    }
}

pub struct PalimProcess {
    child: Option<Child>,
    pub nick: String,
    pub rest_port: u16,
    dir: PathBuf,
    xmpp_port: u16,
    config: PalimConfig,
    /// Starts so far (1 after [`PalimProcess::start`]); each run logs to `palim-<n>.log`.
    starts: u32,
}

impl PalimProcess {
    /// Palim with `config`, logged in to `prosody` under brewery nick `nick`.
    pub fn start(prosody: &Prosody, nick: &str, config: PalimConfig) -> Self {
        Self::start_at(prosody, nick, prosody.port(), config)
    }

    /// Palim logged in to `xmpp_port` on 127.0.0.1 (Prosody, or a proxy in front of it).
    pub fn start_at(prosody: &Prosody, nick: &str, xmpp_port: u16, config: PalimConfig) -> Self {
        let dir = prosody.dir().join(format!("palim-{nick}"));
        std::fs::create_dir_all(&dir).expect("palim test dir");
        let mut p = PalimProcess {
            child: None,
            nick: nick.into(),
            rest_port: 0,
            dir,
            xmpp_port,
            config,
            starts: 0,
        };
        p.spawn();
        p
    }

    /// Starts the same configuration again (a new REST port) after the process exited.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{}: restart while still running", self.nick);
        self.spawn();
    }

    /// Starts again with another configuration (same nick and XMPP server).
    pub fn restart_with(&mut self, config: PalimConfig) {
        self.config = config;
        self.restart();
    }

    fn spawn(&mut self) {
        self.starts += 1;
        self.rest_port = free_tcp_port();
        let PalimConfig {
            ice,
            xmpp_extra,
            rest_extra,
            tail,
        } = &self.config;
        let config = format!(
            r#"
[ice]
{ice}

[xmpp]
enabled = true
host = "127.0.0.1"
port = {port}
domain = "{AUTH_DOMAIN}"
username = "{user}"
password = "{pass}"
muc_jids = ["{BREWERY}"]
muc_nickname = "{nick}"
disable_certificate_verification = true
presence_interval = "1s"
{xmpp_extra}

[rest]
bind = "127.0.0.1:{rest_port}"
shutdown_enabled = true
stats_interval = "0s"
{rest_extra}

{tail}
"#,
            port = self.xmpp_port,
            user = JVB.0,
            pass = JVB.1,
            nick = self.nick,
            rest_port = self.rest_port,
        );
        let config_path = self.dir.join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_file = std::fs::File::create(self.log_path()).expect("palim log");
        let child = Command::new(PALIM)
            .arg("--config")
            .arg(&config_path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,signaling=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn palim");
        self.child = Some(child);
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("palim-{}.log", self.starts))
    }

    pub fn occupant(&self) -> String {
        TestFocus::occupant(&self.nick)
    }

    /// The log of the current (or last) run.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A reader of this run's log that outlives the borrow (for spawned tasks).
    pub fn log_reader(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let path = self.log_path();
        move || std::fs::read_to_string(&path).unwrap_or_default()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("palim is running").id()
    }

    /// SIGTERM to our own child, by pid.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("{}: palim exited early ({status}); log:\n{}", self.nick, self.logs());
            }
        }
    }

    /// Waits for the exit; its status, or panics after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("palim is running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: palim did not exit within {within:?}; log:\n{}",
                    self.nick,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn rest(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        super::http_request(self.rest_port, method, path, body).await
    }

    pub async fn stats(&self) -> serde_json::Value {
        let (status, body) = self.rest("GET", "/colibri/stats", "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("stats not JSON ({e}): {body}"))
    }

    /// Open file descriptors of the process, with what each points at.
    pub fn fds(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/<pid>/fd")
            .filter_map(|e| e.ok())
            .map(|e| {
                let target = std::fs::read_link(e.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                format!("{}->{target}", e.file_name().to_string_lossy())
            })
            .collect();
        v.sort();
        v
    }

    /// Waits until the process's descriptors are exactly `baseline` again; the time it took,
    /// or panics after `within` naming the extra descriptors (sockets with their TCP/UDP line).
    pub async fn wait_fds(&self, baseline: &[String], within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let now = self.fds();
            if now == baseline {
                return t.elapsed();
            }
            if t.elapsed() >= within {
                let extra: Vec<&String> = now.iter().filter(|f| !baseline.contains(f)).collect();
                let mut net = String::new();
                for f in ["tcp", "tcp6", "udp", "udp6"] {
                    net.push_str(&std::fs::read_to_string(format!("/proc/{}/net/{f}", self.pid())).unwrap_or_default());
                }
                panic!(
                    "fds not back to baseline within {within:?}: extra {extra:?}, missing {:?}\n{net}",
                    baseline.iter().filter(|f| !now.contains(f)).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident set size in KiB (reported, not asserted: allocator caching makes it noisy).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }

    /// One sample of the Prometheus text, by its full name with labels.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (status, body) = self.rest("GET", "/metrics", "").await;
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }

    /// `palim_xmpp_connected{server="127.0.0.1:<port>"}` for the server it was started with.
    pub async fn xmpp_connected(&self) -> Option<f64> {
        self.metric(&format!(
            "palim_xmpp_connected{{server=\"127.0.0.1:{}\"}}",
            self.xmpp_port
        ))
        .await
    }

    /// Polls `f` on the stats every 50 ms until it holds; the time it took, or panics.
    pub async fn wait_stats(&self, within: Duration, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> Duration {
        let t = Instant::now();
        loop {
            let st = self.stats().await;
            if f(&st) {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "{what}: not within {within:?}: {st}; log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the `xmpp_connected` gauge until it equals `want`; the time it took, or panics.
    pub async fn wait_xmpp_connected(&self, want: f64, within: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let v = self.xmpp_connected().await;
            if v == Some(want) {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < within,
                "xmpp_connected not {want} within {within:?} (is {v:?}); log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `req` from `focus` and expects `conference-modified` (panics otherwise, with the log).
    pub async fn modify(&self, focus: &TestFocus, what: &str, req: Element) -> Element {
        modify_at(focus, &self.occupant(), what, req, || self.logs()).await
    }
}

impl Drop for PalimProcess {
    fn drop(&mut self) {
        if std::env::var_os("PALIM_TEST_LOG").is_some() {
            eprintln!("--- palim log ({})\n{}", self.nick, self.logs());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
