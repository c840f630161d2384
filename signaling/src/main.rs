//! The `palim` binary: parse flags, load the configuration, set up tracing, run the bridge
//! until SIGINT or SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use signaling::config::Config;

/// Palim, a videobridge for Jitsi Meet (a drop-in for jitsi-videobridge).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it the built-in defaults apply: REST on
    /// 127.0.0.1:8080, media on UDP 10000, no XMPP. Also `PALIM_CONFIG`.
    #[arg(long, short, env = "PALIM_CONFIG")]
    config: Option<PathBuf>,
    /// Read the settings of an existing JVB install instead: its jvb.conf (HOCON), and the
    /// sip-communicator.properties next to it when present. Also `PALIM_JVB_CONF`.
    #[arg(long, env = "PALIM_JVB_CONF", conflicts_with = "config")]
    jvb_conf: Option<PathBuf>,
    /// Override the media port (same as `ice.udp_port`; 0 picks a free one).
    #[arg(long)]
    udp_port: Option<u16>,
    /// Override the private HTTP address (same as `rest.bind`).
    #[arg(long)]
    rest_bind: Option<std::net::SocketAddr>,
    /// Check the configuration and print it (password redacted), then exit.
    #[arg(long)]
    check_config: bool,
}

fn main() {
    if let Err(e) = real_main() {
        // The whole chain on one line each: file, key, reason.
        eprintln!("palim: {e:#}");
        std::process::exit(2);
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut ignored = Vec::new();
    let (mut config, source) = match (&args.config, &args.jvb_conf) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let c = Config::from_toml(&text).with_context(|| format!("{}: invalid configuration", path.display()))?;
            (c, path.display().to_string())
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let props_path = path.with_file_name("sip-communicator.properties");
            let props = std::fs::read_to_string(&props_path).ok();
            let props_name = props_path.display().to_string();
            let settings = signaling::jvbconf::read(
                &path.display().to_string(),
                &text,
                props.as_deref().map(|t| (props_name.as_str(), t)),
            )?;
            ignored = settings.ignored;
            (settings.config, path.display().to_string())
        }
        (None, None) => (Config::default(), "the built-in defaults".to_owned()),
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    config.apply_env(&env).context("applying environment variables")?;
    if let Some(port) = args.udp_port {
        config.ice.udp_port = port;
    }
    if let Some(bind) = args.rest_bind {
        config.rest.bind = bind;
    }
    // Validate everything derived up front so a bad value stops the start.
    config
        .validate()
        .with_context(|| format!("{source}: invalid configuration"))?;
    if args.check_config {
        println!("{config:#?}");
        for k in &ignored {
            println!("ignored (no Palim equivalent): {k}");
        }
        return Ok(());
    }

    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.filter.clone());
    // rtc-dtls warns about every TLS 1.3 extension in Chrome's ClientHello (18 lines per
    // handshake), and rtc-ice warns each time it pings before the client's first check
    // arrived; both are the normal path, not a peer misbehaving.
    let filter = format!("{filter},rtc_dtls::handshake=error,rtc_ice::agent=error");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
    for k in &ignored {
        tracing::warn!(key = %k, "JVB setting ignored: no Palim equivalent");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    runtime.block_on(async move {
        let ops = signaling::server::new_ops(&config);
        tokio::spawn(handle_signals(ops.clone()));
        signaling::server::run_with(config, ops).await
    })?;
    // Don't wait for blocked tasks (an XMPP write, a REST client) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}

/// First SIGTERM or SIGINT: graceful shutdown (new conferences refused, exit once the last
/// endpoint has left). Second: stop now; if that takes more than 5 s the watchdog exits.
async fn handle_signals(ops: std::sync::Arc<signaling::ops::Ops>) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut count = 0;
    loop {
        #[cfg(unix)]
        let term_fut = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term_fut = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term_fut => {},
        }
        count += 1;
        if count == 1 {
            tracing::info!("signal received: graceful shutdown (send it again to stop now)");
            ops.request_shutdown(true);
        } else {
            tracing::warn!("second signal: stopping now");
            ops.force_stop();
            std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(4500));
                eprintln!("palim: forced stop took too long; exiting");
                std::process::exit(1);
            });
            return;
        }
    }
}
