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
    /// More sections appended to the file (e.g. `[shutdown]`).
    pub tail: String,
}

impl Default for PalimConfig {
    fn default() -> Self {
        Self {
            ice: ICE_LOOPBACK.into(),
            xmpp_extra: String::new(),
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
        let dir = prosody.dir().join(format!("palim-{nick}"));
        std::fs::create_dir_all(&dir).expect("palim test dir");
        let mut p = PalimProcess {
            child: None,
            nick: nick.into(),
            rest_port: 0,
            dir,
            xmpp_port: prosody.port(),
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
        let PalimConfig { ice, xmpp_extra, tail } = &self.config;
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
