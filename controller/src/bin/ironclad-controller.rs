//! `ironclad-controller`: the controller daemon.

use anyhow::Context;
use clap::Parser;
use ironclad_controller::config::{Config, DaemonArgs};
use tracing_subscriber::EnvFilter;

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("signal received; shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = DaemonArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_new(&args.log_level)
                .with_context(|| format!("invalid --log-level {:?}", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let config = Config::from_args(&args).context("invalid configuration")?;
    tracing::info!(database = %config.database_url, public_url = %config.public_url, "starting");
    ironclad_controller::server::run(
        config,
        |addr| {
            println!("ironclad-controller listening on http://{addr}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        },
        shutdown_signal(),
    )
    .await
    .context("the controller stopped with an error")
}
