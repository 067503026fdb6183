//! The `ironclad` command-line client: talks to the controller's REST API with
//! `X-OpenStack-Ironic-API-Version: latest`, prints tables (or raw JSON with `--json`).
//!
//! Submodules: [`client`] (HTTP), [`output`] (tables), [`node`] and [`port`]
//! (subcommands), [`demo`] (the `ironclad demo` walkthrough).

pub mod client;
pub mod demo;
pub mod node;
pub mod output;
pub mod port;

use clap::{Parser, Subcommand};

/// What can go wrong in the CLI.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The controller could not be reached.
    #[error("cannot reach the controller at {url}: {message}")]
    Connection {
        /// The URL called.
        url: String,
        /// The cause.
        message: String,
    },
    /// The controller refused the request.
    #[error("{message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The controller's faultstring.
        message: String,
    },
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// An operation ended in a failure state or timed out.
    #[error("{0}")]
    Failed(String),
    /// The command does not exist yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
}

/// Command line of `ironclad`.
#[derive(Debug, Parser)]
#[command(
    name = "ironclad",
    version,
    about = "Command-line client for the Ironclad controller"
)]
pub struct Cli {
    /// The controller's URL.
    #[arg(
        long,
        env = "IRONCLAD_URL",
        default_value = "http://127.0.0.1:6385",
        global = true
    )]
    pub url: String,
    /// Print the controller's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage ports.
    #[command(subcommand)]
    Port(port::PortCommand),
    /// Walk through enrolling and deploying a node.
    Demo(demo::DemoArgs),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let client = client::ApiClient::new(&cli.url)?;
    match cli.command {
        Command::Node(command) => node::run(&client, command, cli.json).await,
        Command::Port(command) => port::run(&client, command, cli.json).await,
        Command::Demo(args) => demo::run(&client, args).await,
    }
}

/// Parses `key=value`; values that are JSON (numbers, booleans, objects) are kept as JSON.
pub fn parse_key_value(text: &str) -> Result<(String, serde_json::Value), CliError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| CliError::Usage(format!("expected key=value, got {text:?}")))?;
    if key.is_empty() {
        return Err(CliError::Usage(format!("empty key in {text:?}")));
    }
    let parsed = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(
            v @ (serde_json::Value::Number(_)
            | serde_json::Value::Bool(_)
            | serde_json::Value::Object(_)
            | serde_json::Value::Array(_)),
        ) => v,
        _ => serde_json::Value::String(value.to_owned()),
    };
    Ok((key.to_owned(), parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_keep_json_types() {
        assert_eq!(
            parse_key_value("memory_mb=4096").unwrap(),
            ("memory_mb".to_owned(), serde_json::json!(4096))
        );
        assert_eq!(
            parse_key_value("image_source=http://x/a=b").unwrap(),
            ("image_source".to_owned(), serde_json::json!("http://x/a=b"))
        );
        assert!(parse_key_value("novalue").is_err());
    }
}
