//! `ironclad node ...`.

use std::time::{Duration, Instant};

use clap::Subcommand;
use ironclad_versioning::states::ProvisionState;
use serde_json::{json, Map, Value};

use super::client::ApiClient;
use super::output::{cell, fields, table};
use super::{parse_key_value, CliError};

/// Node subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Enroll a node.
    Create {
        /// Hardware type, e.g. fake-hardware.
        #[arg(long)]
        driver: String,
        /// Unique name.
        #[arg(long)]
        name: Option<String>,
        /// A property, key=value (repeatable).
        #[arg(long = "property")]
        properties: Vec<String>,
        /// A driver_info entry, key=value (repeatable).
        #[arg(long = "driver-info")]
        driver_info: Vec<String>,
        /// An instance_info entry, key=value (repeatable).
        #[arg(long = "instance-info")]
        instance_info: Vec<String>,
    },
    /// List nodes.
    List {
        /// Show every field.
        #[arg(long)]
        detail: bool,
    },
    /// Show one node.
    Show {
        /// UUID or name.
        node: String,
    },
    /// Change a node's fields.
    Set {
        /// UUID or name.
        node: String,
        /// A property, key=value (repeatable).
        #[arg(long = "property")]
        properties: Vec<String>,
        /// A driver_info entry, key=value (repeatable).
        #[arg(long = "driver-info")]
        driver_info: Vec<String>,
        /// An instance_info entry, key=value (repeatable).
        #[arg(long = "instance-info")]
        instance_info: Vec<String>,
        /// New name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a node.
    Delete {
        /// UUID or name.
        node: String,
    },
    /// Take a node under management (enroll → manageable).
    Manage(ProvisionArgs),
    /// Make a node available (manageable → available).
    Provide(ProvisionArgs),
    /// Deploy a node (available → active).
    Deploy(ProvisionArgs),
    /// Tear a node down (active → available).
    Undeploy(ProvisionArgs),
    /// Change a node's power.
    Power {
        /// UUID or name.
        node: String,
        /// on, off or reboot.
        #[arg(value_parser = ["on", "off", "reboot"])]
        action: String,
    },
}

/// Arguments of the provision verbs.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisionArgs {
    /// UUID or name.
    pub node: String,
    /// Wait until the node settles, at most SECS seconds (default 1800).
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1800")]
    pub wait: Option<u64>,
}

fn node_path(node: &str) -> String {
    format!("/v1/nodes/{node}")
}

fn collect(pairs: &[String]) -> Result<Map<String, Value>, CliError> {
    pairs
        .iter()
        .map(|p| parse_key_value(p))
        .collect::<Result<Map<_, _>, _>>()
}

fn patch_ops(section: &str, pairs: &[String]) -> Result<Vec<Value>, CliError> {
    Ok(collect(pairs)?
        .into_iter()
        .map(|(k, v)| json!({"op": "add", "path": format!("/{section}/{k}"), "value": v}))
        .collect())
}

fn print(value: &Value, as_json: bool) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        println!("{}", fields(value));
    }
}

/// Runs a node subcommand.
pub async fn run(client: &ApiClient, command: NodeCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        NodeCommand::Create {
            driver,
            name,
            properties,
            driver_info,
            instance_info,
        } => {
            let mut body = json!({"driver": driver});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            for (key, pairs) in [
                ("properties", &properties),
                ("driver_info", &driver_info),
                ("instance_info", &instance_info),
            ] {
                if !pairs.is_empty() {
                    body[key] = Value::Object(collect(pairs)?);
                }
            }
            let node = client.post("/v1/nodes", &body).await?;
            print(&node, as_json);
        }
        NodeCommand::List { detail } => {
            let path = if detail {
                "/v1/nodes/detail"
            } else {
                "/v1/nodes"
            };
            let list = client.get(path).await?;
            if as_json {
                print(&list, true);
                return Ok(());
            }
            let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
            let columns: &[&str] = if detail {
                &[
                    "uuid",
                    "name",
                    "driver",
                    "power_state",
                    "provision_state",
                    "target_provision_state",
                    "maintenance",
                    "last_error",
                ]
            } else {
                &[
                    "uuid",
                    "name",
                    "instance_uuid",
                    "power_state",
                    "provision_state",
                    "maintenance",
                ]
            };
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|n| columns.iter().map(|c| cell(n.get(*c))).collect())
                .collect();
            println!("{}", table(columns, &rows));
        }
        NodeCommand::Show { node } => {
            let shown = client.get(&node_path(&node)).await?;
            print(&shown, as_json);
        }
        NodeCommand::Set {
            node,
            properties,
            driver_info,
            instance_info,
            name,
        } => {
            let mut ops = patch_ops("properties", &properties)?;
            ops.extend(patch_ops("driver_info", &driver_info)?);
            ops.extend(patch_ops("instance_info", &instance_info)?);
            if let Some(name) = name {
                ops.push(json!({"op": "replace", "path": "/name", "value": name}));
            }
            if ops.is_empty() {
                return Err(CliError::Usage("nothing to set".to_owned()));
            }
            let shown = client.patch(&node_path(&node), &Value::Array(ops)).await?;
            print(&shown, as_json);
        }
        NodeCommand::Delete { node } => {
            client.delete(&node_path(&node)).await?;
            println!("Deleted node {node}");
        }
        NodeCommand::Manage(args) => {
            provision(client, args, "manage", ProvisionState::Manageable).await?
        }
        NodeCommand::Provide(args) => {
            provision(client, args, "provide", ProvisionState::Available).await?
        }
        NodeCommand::Deploy(args) => {
            provision(client, args, "active", ProvisionState::Active).await?
        }
        NodeCommand::Undeploy(args) => {
            provision(client, args, "deleted", ProvisionState::Available).await?
        }
        NodeCommand::Power { node, action } => {
            let target = match action.as_str() {
                "on" => "power on",
                "off" => "power off",
                _ => "rebooting",
            };
            client
                .put(
                    &format!("{}/states/power", node_path(&node)),
                    &json!({"target": target}),
                )
                .await?;
            println!("Requested {target} for node {node}");
        }
    }
    Ok(())
}

async fn provision(
    client: &ApiClient,
    args: ProvisionArgs,
    target: &str,
    goal: ProvisionState,
) -> Result<(), CliError> {
    let path = node_path(&args.node);
    client
        .put(
            &format!("{path}/states/provision"),
            &json!({"target": target}),
        )
        .await?;
    println!("Requested {target} for node {}", args.node);
    let Some(limit) = args.wait else {
        return Ok(());
    };
    wait_for(client, &path, goal, Duration::from_secs(limit)).await
}

/// Polls a node until it rests in `goal` (Ok) or in a failure or other stable state (Err).
pub async fn wait_for(
    client: &ApiClient,
    path: &str,
    goal: ProvisionState,
    limit: Duration,
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut last_shown = String::new();
    loop {
        let node = client.get(path).await?;
        let state_text = cell(node.get("provision_state"));
        let target = cell(node.get("target_provision_state"));
        let shown = if target.is_empty() {
            state_text.clone()
        } else {
            format!("{state_text} (target: {target})")
        };
        if shown != last_shown {
            println!("{:>6.1}s  {shown}", started.elapsed().as_secs_f64());
            last_shown = shown;
        }
        let state: Option<ProvisionState> = state_text.parse().ok();
        let last_error = cell(node.get("last_error"));
        if state == Some(goal) && target.is_empty() {
            return Ok(());
        }
        let failed = state_text.ends_with("failed") || state == Some(ProvisionState::Error);
        let stuck_elsewhere = target.is_empty() && state.is_some_and(ProvisionState::is_stable);
        if failed || stuck_elsewhere {
            return Err(CliError::Failed(format!(
                "node ended in \"{state_text}\" instead of \"{goal}\": {}",
                if last_error.is_empty() {
                    "no last_error recorded"
                } else {
                    &last_error
                }
            )));
        }
        if started.elapsed() > limit {
            return Err(CliError::Failed(format!(
                "node still in \"{state_text}\" after {} s",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
