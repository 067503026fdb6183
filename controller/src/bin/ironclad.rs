//! `ironclad`: the command-line client for the Ironclad controller.

use clap::Parser;
use ironclad_controller::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        // Already installed: nothing to do.
    }
    let parsed = Cli::parse();
    if let Err(error) = cli::run(parsed).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    Ok(())
}
