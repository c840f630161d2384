//! Shared test support: a real Prosody (Debian package) laid out like docker-jitsi-meet, and a
//! test focus that logs in as `focus@auth.meet.jitsi` and sits in the brewery as Jicofo does.
//!
//! Tests call [`Prosody::start_or_skip`]: without `prosody` installed the test is skipped with
//! a message, unless `CI` is set, in which case a missing Prosody is a failure.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use signaling::xmpp::{IqType, Password, PresenceEvent, RejectAll, SecurityMode, SendIqError, XmppClient, XmppConfig};
use tokio::sync::broadcast;

pub const AUTH_DOMAIN: &str = "auth.meet.jitsi";
pub const BREWERY: &str = "jvbbrewery@internal-muc.meet.jitsi";
pub const HEALTHCHECK_NS: &str = "http://jitsi.org/protocol/healthcheck";
/// Accounts registered by start-prosody.sh (its default `PROSODY_USERS`).
pub const FOCUS: (&str, &str) = ("focus", "focuspass");
pub const JVB: (&str, &str) = ("jvb", "jvbpass");
pub const INTRUDER: (&str, &str) = ("intruder", "intruderpass");

pub mod call;
pub mod colibri;
pub mod palim;

/// The str0m client (`sfu/tests/common`), shared with the sfu tests.
#[path = "../../../sfu/tests/common/mod.rs"]
pub mod common;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/prosody/start-prosody.sh");

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    // The listener is closed again before Prosody binds; a race with another process taking
    // the port in between is possible but unlikely on a test machine.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on loopback");
    l.local_addr().expect("bound listener has an address").port()
}

/// A Prosody child process with its own directory and c2s port on 127.0.0.1.
pub struct Prosody {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Prosody {
    /// Starts Prosody and waits until it accepts connections. `None` (after printing why)
    /// when Prosody is not installed and `CI` is unset.
    pub async fn start_or_skip(test: &str) -> Option<Self> {
        init_tracing();
        if !on_path("prosody") || !on_path("prosodyctl") {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: prosody is not installed, and CI is set: failing instead of skipping");
            }
            eprintln!("SKIPPED {test}: prosody/prosodyctl not on PATH (apt-get install prosody)");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "palim-prosody-{}-{}-{test}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the Prosody test directory");
        let mut p = Prosody {
            dir,
            port: free_port(),
            child: None,
        };
        p.start_again().await;
        Some(p)
    }

    /// (Re)starts Prosody on the same directory and port, and waits until it listens.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "Prosody is already running");
        let log = std::fs::File::create(self.dir.join("stdout.log")).expect("create stdout log");
        let child = Command::new("sh")
            .arg(SCRIPT)
            .arg(&self.dir)
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn start-prosody.sh");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("Prosody exited during start ({status}); log:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "Prosody did not listen on {} within 20 s; log:\n{}",
                self.port,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops Prosody with SIGTERM (it closes its streams cleanly) and waits for it to exit.
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    /// Kills Prosody with SIGKILL (the kernel closes its sockets; no stream close).
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }

    fn signal(&mut self, sig: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Our own child, by pid (the script exec'd prosody, so this is Prosody itself).
        let _ = Command::new("kill").arg(sig).arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The self-signed certificate Prosody serves (a leaf, CA:FALSE, SAN auth.meet.jitsi), for
    /// clients that verify.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("certs/auth.meet.jitsi.crt")
    }

    /// Prosody's log file and the script's output, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["stdout.log", "prosody.log", "prosodyctl.log"] {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(f)) {
                s.push_str(&format!("--- {f}\n{t}\n"));
            }
        }
        s
    }

    /// A client configuration for one of the registered accounts, as docker-jitsi-meet would
    /// configure JVB (trust-all TLS, STARTTLS required).
    pub fn client_config(&self, account: (&str, &str), nick: &str, mucs: &[&str]) -> XmppConfig {
        XmppConfig {
            host: "127.0.0.1".into(),
            port: self.port,
            domain: AUTH_DOMAIN.into(),
            username: account.0.into(),
            password: Password::new(account.1),
            muc_jids: mucs.iter().map(|m| m.to_string()).collect(),
            muc_nickname: nick.into(),
            disable_certificate_verification: true,
            security_mode: SecurityMode::Required,
            ..XmppConfig::default()
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
        if std::env::var_os("PALIM_KEEP_PROSODY_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Waits until `f` holds for the client's state, or panics after `within`.
pub async fn wait_state(
    client: &XmppClient,
    within: Duration,
    what: &str,
    f: impl Fn(&signaling::xmpp::ConnectionState) -> bool,
) {
    let mut rx = client.watch_state();
    let res = tokio::time::timeout(within, async {
        loop {
            if f(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                panic!("client task ended while waiting for: {what}");
            }
        }
    })
    .await;
    if res.is_err() {
        panic!(
            "timed out after {within:?} waiting for: {what}; state {:?}",
            client.state()
        );
    }
}

/// Jicofo's part: `focus@auth.meet.jitsi` in the brewery with nick `focus`, watching the
/// bridges' presence and sending them IQs. It is our own client code, but everything it sees
/// went through the real Prosody.
pub struct TestFocus {
    pub client: XmppClient,
    presence: broadcast::Receiver<PresenceEvent>,
}

impl TestFocus {
    pub async fn join(prosody: &Prosody) -> Self {
        let cfg = prosody.client_config(FOCUS, "focus", &[BREWERY]);
        let client = XmppClient::spawn(cfg, std::sync::Arc::new(RejectAll), None).expect("focus client config");
        let presence = client.subscribe_presence();
        wait_state(&client, Duration::from_secs(10), "focus joined", |s| s.all_joined()).await;
        Self { client, presence }
    }

    /// The bridge's occupant JID in the brewery (what Jicofo addresses IQs to).
    pub fn occupant(nick: &str) -> String {
        format!("{BREWERY}/{nick}")
    }

    /// The next presence from `nick` satisfying `pred`, or panics after `within`.
    pub async fn wait_presence(
        &mut self,
        nick: &str,
        within: Duration,
        pred: impl Fn(&PresenceEvent) -> bool,
    ) -> PresenceEvent {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.presence.recv()).await {
                Err(_) => panic!("no matching presence from {nick} within {within:?}"),
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    panic!("test focus lagged {n} presence events")
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => panic!("focus client gone"),
                Ok(Ok(ev)) if ev.nick == nick && pred(&ev) => return ev,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends Jicofo's health-check IQ to the bridge with that nick.
    pub async fn health_check(&self, nick: &str) -> Result<Option<minidom::Element>, SendIqError> {
        self.client
            .send_iq(
                &Self::occupant(nick),
                IqType::Get,
                minidom::Element::bare("healthcheck", HEALTHCHECK_NS),
                Duration::from_secs(5),
            )
            .await
    }
}

/// One HTTP/1.1 request to `127.0.0.1:port` (no client library: the REST API is plain JSON over
/// HTTP): (status, body). Panics on no answer within 10 s or a non-HTTP answer.
pub async fn http_request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 10 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[allow(unused_imports)] // each test binary uses its own subset of this module
pub use sfu::testing::ice_check;
