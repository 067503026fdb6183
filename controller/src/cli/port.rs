//! `ironclad port ...`.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::ApiClient;
use super::output::{cell, fields, table};
use super::CliError;

/// Port subcommands.
#[derive(Debug, Subcommand)]
pub enum PortCommand {
    /// Create a port.
    Create {
        /// Node UUID or name.
        #[arg(long)]
        node: String,
        /// MAC address.
        address: String,
    },
    /// List ports.
    List {
        /// Only the ports of this node (UUID or name).
        #[arg(long)]
        node: Option<String>,
    },
    /// Delete a port.
    Delete {
        /// Port UUID.
        port: String,
    },
}

/// Runs a port subcommand.
pub async fn run(client: &ApiClient, command: PortCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        PortCommand::Create { node, address } => {
            let node_uuid = client.get(&format!("/v1/nodes/{node}")).await?["uuid"].clone();
            let port = client
                .post(
                    "/v1/ports",
                    &json!({"node_uuid": node_uuid, "address": address}),
                )
                .await?;
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&port).unwrap_or_default()
                );
            } else {
                println!("{}", fields(&port));
            }
        }
        PortCommand::List { node } => {
            let path = match node {
                Some(node) => format!("/v1/nodes/{node}/ports?detail=true"),
                None => "/v1/ports/detail".to_owned(),
            };
            let list = client.get(&path).await?;
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                return Ok(());
            }
            let ports = list["ports"].as_array().cloned().unwrap_or_default();
            let columns = ["uuid", "address", "node_uuid", "pxe_enabled"];
            let rows: Vec<Vec<String>> = ports
                .iter()
                .map(|p: &Value| columns.iter().map(|c| cell(p.get(*c))).collect())
                .collect();
            println!("{}", table(&columns, &rows));
        }
        PortCommand::Delete { port } => {
            client.delete(&format!("/v1/ports/{port}")).await?;
            println!("Deleted port {port}");
        }
    }
    Ok(())
}
