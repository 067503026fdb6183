//! A lab network: a network namespace with a bridge (holding an address), taps
//! attached to it and `lo` up, made with the `ip` command (the lab runs on a
//! build host, not in a ramdisk). Everything is removed when the
//! [`LabNetwork`] is dropped, including during a panic; [`cleanup_leftovers`]
//! removes what a killed process left behind.

use std::process::Command;

/// Why the network could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// `ip` could not be run.
    #[error("running `ip {args}`: {source}; install iproute2")]
    Spawn {
        /// The arguments.
        args: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `ip` failed.
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Failed {
        /// The arguments.
        args: String,
        /// Exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
    /// The process is not root.
    #[error(
        "creating network namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run as root"
    )]
    NotRoot,
    /// A name is unusable.
    #[error("invalid interface or namespace name {0:?}: 1 to 15 characters of [A-Za-z0-9_.-]")]
    BadName(String),
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The namespace's name.
    pub namespace: String,
    /// The bridge's name inside the namespace.
    pub bridge: String,
    /// The bridge's address with prefix length, e.g. `10.78.0.1/24`.
    pub address: String,
    /// Taps to create and attach to the bridge.
    pub taps: Vec<String>,
}

impl NetworkSpec {
    /// A namespace `namespace` with bridge `br0` at `10.78.0.1/24` and `taps` taps
    /// named `tap0`, `tap1`, ...
    pub fn new(namespace: &str, taps: usize) -> Self {
        Self {
            namespace: namespace.to_owned(),
            bridge: "br0".to_owned(),
            address: "10.78.0.1/24".to_owned(),
            taps: (0..taps).map(|i| format!("tap{i}")).collect(),
        }
    }
}

/// A created network; dropping it deletes the namespace, and with it the
/// bridge and taps.
#[derive(Debug)]
pub struct LabNetwork {
    spec: NetworkSpec,
}

fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let joined = args.join(" ");
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetworkError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetworkError::Failed {
            args: joined,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(NetworkError::BadName(name.to_owned()))
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The names of the existing network namespaces.
pub fn namespaces() -> Result<Vec<String>, NetworkError> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Deletes every namespace whose name starts with `prefix` (leftovers of a
/// lab that was killed); returns the names deleted.
pub fn cleanup_leftovers(prefix: &str) -> Result<Vec<String>, NetworkError> {
    let mut deleted = Vec::new();
    for name in namespaces()? {
        if name.starts_with(prefix) {
            ip(&["netns", "del", &name])?;
            deleted.push(name);
        }
    }
    Ok(deleted)
}

impl LabNetwork {
    /// Creates the namespace, `lo` up, the bridge with its address, and the
    /// taps attached to it. A namespace of the same name is replaced. On any
    /// failure whatever was made is removed.
    pub fn create(spec: NetworkSpec) -> Result<Self, NetworkError> {
        if !is_root() {
            return Err(NetworkError::NotRoot);
        }
        check_name(&spec.namespace)?;
        check_name(&spec.bridge)?;
        for tap in &spec.taps {
            check_name(tap)?;
        }
        if namespaces()?.contains(&spec.namespace) {
            tracing::warn!(namespace = %spec.namespace, "replacing a leftover namespace");
            ip(&["netns", "del", &spec.namespace])?;
        }
        ip(&["netns", "add", &spec.namespace])?;
        // From here on, dropping `network` deletes the namespace.
        let network = Self { spec };
        let ns = network.spec.namespace.as_str();
        let bridge = network.spec.bridge.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", bridge, "type", "bridge"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &network.spec.address,
            "dev",
            bridge,
        ])?;
        ip(&["-n", ns, "link", "set", bridge, "up"])?;
        for tap in &network.spec.taps {
            ip(&["-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"])?;
            ip(&["-n", ns, "link", "set", tap, "master", bridge])?;
            ip(&["-n", ns, "link", "set", tap, "up"])?;
        }
        tracing::info!(namespace = %ns, bridge, taps = ?network.spec.taps, "lab network created");
        Ok(network)
    }

    /// What was created.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// The namespace's name (for `ip netns exec` and [`crate::VmSpec::netns`]).
    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    /// The names of the links inside the namespace.
    pub fn links(&self) -> Result<Vec<String>, NetworkError> {
        Ok(ip(&["-n", &self.spec.namespace, "-o", "link", "show"])?
            .lines()
            .filter_map(|line| line.split(':').nth(1))
            .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
            .collect())
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        match ip(&["netns", "del", &self.spec.namespace]) {
            Ok(_) => tracing::info!(namespace = %self.spec.namespace, "lab network removed"),
            Err(error) => {
                tracing::error!(%error, "removing the lab network");
                eprintln!(
                    "ironclad-qemu: could not remove network namespace {}: {error}",
                    self.spec.namespace
                );
            }
        }
    }
}
