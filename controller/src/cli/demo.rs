//! `ironclad demo`: a guided walkthrough (enroll, manage, provide, deploy).
//!
//! Placeholder: the walkthrough is written separately; this module only reserves
//! the subcommand and its arguments.

use clap::Args;

use super::client::ApiClient;
use super::CliError;

/// Arguments of `ironclad demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {}

/// Runs the demo.
pub async fn run(_client: &ApiClient, _args: DemoArgs) -> Result<(), CliError> {
    Err(CliError::NotImplemented("ironclad demo"))
}
