//! `ironclad-qemu`: runs the virtual bare-metal lab.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use ironclad_qemu_ci::bmc::Credentials;
use ironclad_qemu_ci::lab::{Lab, LabConfig, LabNetworkMode};
use ironclad_qemu_ci::network;

/// Ironclad's virtual bare-metal lab: QEMU nodes (TCG) with Redfish BMCs.
#[derive(Parser)]
#[command(name = "ironclad-qemu", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum NetworkKind {
    /// Taps on a bridge (10.78.0.1/24) in a network namespace the lab creates (root).
    Netns,
    /// QEMU user networking (no root needed; nodes cannot reach each other).
    User,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the nodes (all powered off) and their BMCs, prints them, and
    /// serves until Ctrl-C or SIGTERM, then tears everything down.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Directory for disks, serial logs, QMP sockets and virtual media.
        #[arg(long)]
        state_dir: PathBuf,
        /// Size of each node's sparse raw disk.
        #[arg(long, default_value_t = 8)]
        disk_size_gib: u64,
        /// Guest memory.
        #[arg(long, default_value_t = 512)]
        memory_mib: u32,
        /// NICs per node.
        #[arg(long, default_value_t = 1)]
        nics: usize,
        /// Node i's BMC listens on 127.0.0.1:(base + i).
        #[arg(long, default_value_t = 8000)]
        bmc_port_base: u16,
        /// Where the NICs are connected.
        #[arg(long, value_enum, default_value_t = NetworkKind::Netns)]
        network: NetworkKind,
        /// Name of the network namespace (with --network netns).
        #[arg(long, default_value = "ironclad-lab")]
        netns_name: String,
        /// BMC user name (Basic auth is on when a password is given).
        #[arg(long, default_value = "admin", env = "IRONCLAD_LAB_BMC_USERNAME")]
        username: String,
        /// BMC password; without it the BMCs require no auth.
        #[arg(long, env = "IRONCLAD_LAB_BMC_PASSWORD")]
        password: Option<String>,
        /// Serve the BMCs over HTTPS with self-signed certificates.
        #[arg(long)]
        tls: bool,
        /// Print the nodes as JSON (one line) instead of a table.
        #[arg(long)]
        json: bool,
        /// Print a `baremetal create` file (Ironic node bodies with ports) instead.
        #[arg(long)]
        print_enrollment: bool,
    },
    /// Removes network namespaces left by a lab that was killed.
    Cleanup {
        /// Namespace name prefix.
        #[arg(long, default_value = "ironclad-lab")]
        prefix: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Cleanup { prefix } => {
            let deleted = network::cleanup_leftovers(&prefix)
                .with_context(|| format!("removing namespaces named {prefix}*"))?;
            for name in deleted {
                println!("removed network namespace {name}");
            }
            Ok(())
        }
        Command::Up {
            nodes,
            state_dir,
            disk_size_gib,
            memory_mib,
            nics,
            bmc_port_base,
            network,
            netns_name,
            username,
            password,
            tls,
            json,
            print_enrollment,
        } => {
            let config = LabConfig {
                nodes,
                nics_per_node: nics,
                state_dir: state_dir.clone(),
                disk_size_gib,
                memory_mib,
                bmc_port_base,
                credentials: password.map(|password| Credentials { username, password }),
                tls,
                network: match network {
                    NetworkKind::Netns => LabNetworkMode::Namespace(netns_name),
                    NetworkKind::User => LabNetworkMode::User,
                },
            };
            let lab = Lab::up(config)
                .await
                .with_context(|| format!("bringing up {nodes} nodes in {}", state_dir.display()))?;
            if print_enrollment {
                println!("{}", serde_json::to_string_pretty(&lab.enrollment())?);
            } else if json {
                println!("{}", serde_json::to_string(&lab.table())?);
            } else {
                print!("{}", lab.human_table());
            }
            eprintln!("ironclad-qemu: lab is up; Ctrl-C tears it down");
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("installing the SIGTERM handler")?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
                _ = terminate.recv() => {}
            }
            eprintln!("ironclad-qemu: tearing the lab down");
            lab.shutdown().await;
            Ok(())
        }
    }
}
