//! The lab: N virtual nodes, each a sparse raw disk, virtio NICs with
//! deterministic MACs, and a Redfish BMC on `127.0.0.1:port_base + i` driving a
//! QEMU that starts powered off. The NICs sit on taps of a bridge in a network
//! namespace the lab creates (or on QEMU user networking). Dropping the
//! [`Lab`] stops every BMC and QEMU and removes the namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bmc::{Bmc, BmcConfig, BmcError, Credentials, QemuMachine};
use crate::network::{LabNetwork, NetworkError, NetworkSpec};
use crate::vm::{Boot, NetBackend, Nic, VmSpec};

/// Where the nodes' NICs are connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabNetworkMode {
    /// Taps on a bridge (`br0`, 10.78.0.1/24) inside a namespace of this name,
    /// created by the lab (needs root). QEMU runs inside the namespace.
    Namespace(String),
    /// QEMU user networking (slirp), one private network per NIC.
    User,
}

/// How the lab is set up.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// NICs per node.
    pub nics_per_node: usize,
    /// Where disks, serial logs, QMP sockets and virtual media go. Disks found
    /// there are kept.
    pub state_dir: PathBuf,
    /// Size of each node's sparse disk, in GiB.
    pub disk_size_gib: u64,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Node i's BMC listens on 127.0.0.1:`bmc_port_base` + i (0: any free port).
    pub bmc_port_base: u16,
    /// The BMCs' credentials (none: no auth).
    pub credentials: Option<Credentials>,
    /// Serve the BMCs over HTTPS with self-signed certificates.
    pub tls: bool,
    /// The network.
    pub network: LabNetworkMode,
}

/// Why the lab could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The network could not be made.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A BMC could not start.
    #[error(transparent)]
    Bmc(#[from] BmcError),
    /// A file could not be made.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The configuration cannot work.
    #[error("invalid lab configuration: {0}")]
    Config(String),
}

/// One node of the lab.
pub struct LabNode {
    /// The node's name (also its Redfish system id).
    pub name: String,
    /// The node's UUID.
    pub uuid: String,
    /// MAC addresses, in NIC order.
    pub macs: Vec<String>,
    /// The raw disk image.
    pub disk: PathBuf,
    /// The BMC.
    pub bmc: Bmc<QemuMachine>,
}

/// A running lab.
pub struct Lab {
    config: LabConfig,
    // Field order matters: nodes (and their QEMUs) go before the network.
    nodes: Vec<LabNode>,
    network: Option<LabNetwork>,
}

/// The deterministic MAC of NIC `nic` of node `node`: `52:54:00:1c:NN:II`.
pub fn mac_address(node: usize, nic: usize) -> String {
    format!("52:54:00:1c:{:02x}:{:02x}", node & 0xff, nic & 0xff)
}

/// A deterministic UUID for a node name (random-format bits over a SHA-256).
pub fn node_uuid(name: &str) -> String {
    let digest = Sha256::digest(format!("ironclad-lab/{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

impl Lab {
    /// Creates the network, the disks and one BMC per node; every node is
    /// powered off. On failure, whatever was made is torn down.
    pub async fn up(config: LabConfig) -> Result<Self, LabError> {
        if config.nodes == 0 || config.nodes > 255 {
            return Err(LabError::Config("--nodes must be between 1 and 255".into()));
        }
        if config.nics_per_node == 0 || config.nics_per_node > 8 {
            return Err(LabError::Config(
                "NICs per node must be between 1 and 8".into(),
            ));
        }
        if config.bmc_port_base != 0
            && usize::from(config.bmc_port_base) + config.nodes > usize::from(u16::MAX)
        {
            return Err(LabError::Config("BMC ports would pass 65535".into()));
        }
        std::fs::create_dir_all(&config.state_dir).map_err(|source| LabError::Io {
            context: format!("creating {}", config.state_dir.display()),
            source,
        })?;
        let tap_name = |node: usize, nic: usize| format!("tap{node}n{nic}");
        let network = match &config.network {
            LabNetworkMode::Namespace(name) => {
                let mut spec = NetworkSpec::new(name, 0);
                for node in 0..config.nodes {
                    for nic in 0..config.nics_per_node {
                        spec.taps.push(tap_name(node, nic));
                    }
                }
                Some(LabNetwork::create(spec)?)
            }
            LabNetworkMode::User => None,
        };
        let mut lab = Self {
            config: config.clone(),
            nodes: Vec::new(),
            network,
        };
        for index in 0..config.nodes {
            let name = format!("node-{index}");
            let uuid = node_uuid(&name);
            let macs: Vec<String> = (0..config.nics_per_node)
                .map(|nic| mac_address(index, nic))
                .collect();
            let disk = config.state_dir.join(format!("{name}.raw"));
            let disk_bytes = config.disk_size_gib.saturating_mul(1 << 30);
            // An existing disk is kept (a re-run of the lab finds its nodes as
            // they were left), and only grown if it is smaller than asked.
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&disk)
                .map_err(|source| LabError::Io {
                    context: format!("creating {}", disk.display()),
                    source,
                })?;
            let current = file.metadata().map(|m| m.len()).unwrap_or(0);
            if current < disk_bytes {
                file.set_len(disk_bytes).map_err(|source| LabError::Io {
                    context: format!("sizing {}", disk.display()),
                    source,
                })?;
            }
            let nics = macs
                .iter()
                .enumerate()
                .map(|(nic, mac)| Nic {
                    mac: mac.clone(),
                    backend: match &config.network {
                        LabNetworkMode::Namespace(_) => NetBackend::Tap {
                            ifname: tap_name(index, nic),
                        },
                        LabNetworkMode::User => NetBackend::User { bootfile: None },
                    },
                })
                .collect();
            let node_dir = config.state_dir.join(&name);
            let template = VmSpec {
                name: name.clone(),
                memory_mib: config.memory_mib,
                disk: Some(disk.clone()),
                nics,
                boot: Boot::Disk,
                state_dir: node_dir.clone(),
                start_paused: false,
                netns: lab.network.as_ref().map(|n| n.namespace().to_owned()),
            };
            let port = if config.bmc_port_base == 0 {
                0
            } else {
                config.bmc_port_base + index as u16
            };
            let bmc = Bmc::start(
                BmcConfig {
                    system_id: name.clone(),
                    uuid: uuid.clone(),
                    macs: macs.clone(),
                    memory_mib: config.memory_mib,
                    cpus: 1,
                    disk_bytes,
                    listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                    tls: config.tls,
                    credentials: config.credentials.clone(),
                    state_dir: node_dir,
                },
                QemuMachine::new(template),
            )
            .await?;
            lab.nodes.push(LabNode {
                name,
                uuid,
                macs,
                disk,
                bmc,
            });
        }
        Ok(lab)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[LabNode] {
        &self.nodes
    }

    /// The network namespace, if the lab made one.
    pub fn network(&self) -> Option<&LabNetwork> {
        self.network.as_ref()
    }

    /// The nodes as a JSON table: name, BMC URL, system id, UUID, MACs, disk.
    pub fn table(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|node| {
                json!({
                    "name": node.name,
                    "uuid": node.uuid,
                    "bmc_url": node.bmc.url(),
                    "system_id": node.bmc.system_path(),
                    "macs": node.macs,
                    "disk": node.disk.display().to_string(),
                })
            })
            .collect();
        json!({
            "namespace": self.network.as_ref().map(|n| n.namespace().to_owned()),
            "bridge_address": self.network.as_ref().map(|n| n.spec().address.clone()),
            "nodes": nodes,
        })
    }

    /// A human-readable table of the nodes.
    pub fn human_table(&self) -> String {
        let mut out = format!(
            "{:<10} {:<28} {:<30} {:<40} DISK\n",
            "NODE", "BMC", "SYSTEM", "MACS"
        );
        for node in &self.nodes {
            out.push_str(&format!(
                "{:<10} {:<28} {:<30} {:<40} {}\n",
                node.name,
                node.bmc.url(),
                node.bmc.system_path(),
                node.macs.join(","),
                node.disk.display()
            ));
        }
        if let Some(network) = &self.network {
            out.push_str(&format!(
                "network: namespace {} bridge {} {}\n",
                network.namespace(),
                network.spec().bridge,
                network.spec().address
            ));
        }
        out
    }

    /// The nodes as a `baremetal create` file: Ironic node-create bodies
    /// (driver `redfish`, Redfish driver_info) with their ports nested.
    pub fn enrollment(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|node| {
                let mut driver_info = json!({
                    "redfish_address": node.bmc.url(),
                    "redfish_system_id": node.bmc.system_path(),
                });
                if let Some(credentials) = &self.config.credentials {
                    driver_info["redfish_username"] = json!(credentials.username);
                    driver_info["redfish_password"] = json!(credentials.password);
                }
                if self.config.tls {
                    driver_info["redfish_verify_ca"] = json!(false);
                }
                let ports: Vec<Value> = node
                    .macs
                    .iter()
                    .enumerate()
                    .map(|(i, mac)| json!({ "address": mac, "pxe_enabled": i == 0 }))
                    .collect();
                json!({
                    "name": node.name,
                    "uuid": node.uuid,
                    "driver": "redfish",
                    "driver_info": driver_info,
                    "boot_interface": "ipxe",
                    "deploy_interface": "direct",
                    "properties": {
                        "cpu_arch": "x86_64",
                        "cpus": 1,
                        "memory_mb": self.config.memory_mib,
                        "local_gb": self.config.disk_size_gib,
                    },
                    "ports": ports,
                })
            })
            .collect();
        json!({ "nodes": nodes })
    }

    /// Powers every node off, stops the BMCs and removes the network.
    pub async fn shutdown(mut self) {
        for node in self.nodes.drain(..) {
            node.bmc.shutdown().await;
        }
        drop(self.network.take());
    }
}
