//! The daemon's command line and the settings derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::drivers::{DriverSettings, Enabled, InterfaceKind};

/// Configuration problems.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An `--enabled-interfaces` or `--default-interface` value is malformed.
    #[error("{0}")]
    BadInterfaces(String),
    /// No data directory could be found for the default database.
    #[error("cannot find the user's data directory for the default database; pass --database sqlite:///path/to/file")]
    NoDataDir,
}

/// Command line of `ironclad-controller`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ironclad-controller",
    version,
    about = "Ironclad's controller: an Ironic-compatible bare-metal provisioning service"
)]
pub struct DaemonArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:6385", env = "IRONCLAD_LISTEN")]
    pub listen: SocketAddr,
    /// Database URL, `sqlite:///path/to/file` (default: <data dir>/ironclad/ironclad.sqlite).
    #[arg(long, env = "IRONCLAD_DATABASE")]
    pub database: Option<String>,
    /// URL clients and agents reach this controller at (default: http://<listen>).
    #[arg(long, env = "IRONCLAD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Heartbeat timeout handed to agents at lookup, in seconds.
    #[arg(long, default_value_t = 300)]
    pub heartbeat_timeout: u64,
    /// Longest silence of an agent in `wait call-back` before the deploy fails, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub deploy_callback_timeout: u64,
    /// Accept plain-http agent callback URLs (by default https is required, as in Ironic).
    #[arg(long)]
    pub allow_insecure_agent: bool,
    /// Name of this conductor, shown in `reservation` and `conductor` (default: the host name).
    #[arg(long)]
    pub conductor_name: Option<String>,
    /// Log filter, e.g. `info` or `ironclad_controller=debug`.
    #[arg(long, default_value = "info", env = "IRONCLAD_LOG")]
    pub log_level: String,
    /// Enabled hardware types, comma-separated (default: redfish,ipmi,manual-management,fake-hardware).
    #[arg(long, value_delimiter = ',')]
    pub enabled_hardware_types: Option<Vec<String>>,
    /// Enabled implementations of one interface kind, e.g. `boot=ipxe,fake` (repeatable;
    /// kinds not named keep every implementation).
    #[arg(long = "enabled-interfaces", value_name = "KIND=NAME,...")]
    pub enabled_interfaces: Vec<String>,
    /// Default implementation of one interface kind, e.g. `inspect=no-inspect` (repeatable).
    #[arg(long = "default-interface", value_name = "KIND=NAME")]
    pub default_interfaces: Vec<String>,
    /// Attempts per Redfish request on connection errors, timeouts and 5xx answers.
    #[arg(long, default_value_t = 5)]
    pub redfish_connection_attempts: u32,
    /// Seconds before the second Redfish attempt (doubled after each, at most 30).
    #[arg(long, default_value_t = 2.0)]
    pub redfish_retry_interval: f64,
    /// Seconds to wait for a BMC to report a requested power state.
    #[arg(long, default_value_t = 60)]
    pub power_state_change_timeout: u64,
    /// Directory served at `/httpboot/` (deploy kernels and ramdisks named by file name).
    #[arg(long)]
    pub http_root: Option<PathBuf>,
    /// Start and supervise a dnsmasq for PXE/iPXE DHCP (needs --dhcp-interface and --dhcp-range).
    #[arg(long, requires_all = ["dhcp_interface", "dhcp_range"], conflicts_with = "dnsmasq_hostsdir")]
    pub dnsmasq: bool,
    /// Interface the controller's dnsmasq serves.
    #[arg(long)]
    pub dhcp_interface: Option<String>,
    /// dnsmasq `dhcp-range`, e.g. `10.9.0.10,10.9.0.50,255.255.255.0,1h`.
    #[arg(long)]
    pub dhcp_range: Option<String>,
    /// The dnsmasq program.
    #[arg(long, default_value = "dnsmasq")]
    pub dnsmasq_program: PathBuf,
    /// State directory of the controller's dnsmasq (default: `dnsmasq/` next to the database).
    #[arg(long)]
    pub dnsmasq_dir: Option<PathBuf>,
    /// Only write per-MAC allow/deny files into this `dhcp-hostsdir` of an operator's dnsmasq.
    #[arg(long)]
    pub dnsmasq_hostsdir: Option<PathBuf>,
}

/// How the controller takes part in DHCP.
#[derive(Debug, Clone, PartialEq)]
pub enum DhcpMode {
    /// Not at all: DHCP is someone else's business.
    None,
    /// Writes host files into an operator's dnsmasq hostsdir.
    Hostsdir(PathBuf),
    /// Runs its own dnsmasq.
    Managed {
        /// The program.
        program: PathBuf,
        /// Interface served.
        interface: String,
        /// `dhcp-range`.
        range: String,
        /// State directory, if chosen (else next to the database).
        dir: Option<PathBuf>,
    },
}

/// Settings the controller runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Base URL for links, without a trailing slash.
    pub public_url: String,
    /// Heartbeat timeout for agents.
    pub heartbeat_timeout: Duration,
    /// Deploy callback timeout.
    pub deploy_callback_timeout: Duration,
    /// Whether plain-http agent callbacks are accepted.
    pub allow_insecure_agent: bool,
    /// This conductor's name.
    pub conductor_name: String,
    /// Enabled hardware types and interfaces.
    pub enabled: Enabled,
    /// Redfish attempts per request.
    pub redfish_attempts: u32,
    /// First pause between Redfish attempts.
    pub redfish_retry_interval: Duration,
    /// How long to wait for a power change.
    pub power_state_change_timeout: Duration,
    /// Directory served at `/httpboot/`.
    pub http_root: Option<PathBuf>,
    /// DHCP participation.
    pub dhcp: DhcpMode,
}

impl Config {
    /// Derives the settings from the command line.
    pub fn from_args(args: &DaemonArgs) -> Result<Self, ConfigError> {
        let database_url = match &args.database {
            Some(url) => url.clone(),
            None => {
                let path = default_database_path().ok_or(ConfigError::NoDataDir)?;
                format!("sqlite://{}", path.display())
            }
        };
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.listen));
        Ok(Self {
            listen: args.listen,
            database_url,
            public_url: public_url.trim_end_matches('/').to_owned(),
            heartbeat_timeout: Duration::from_secs(args.heartbeat_timeout),
            deploy_callback_timeout: Duration::from_secs(args.deploy_callback_timeout),
            allow_insecure_agent: args.allow_insecure_agent,
            conductor_name: args.conductor_name.clone().unwrap_or_else(host_name),
            enabled: parse_enabled(args)?,
            redfish_attempts: args.redfish_connection_attempts.max(1),
            redfish_retry_interval: Duration::from_secs_f64(
                args.redfish_retry_interval.clamp(0.0, 30.0),
            ),
            power_state_change_timeout: Duration::from_secs(args.power_state_change_timeout),
            http_root: args.http_root.clone(),
            dhcp: match (&args.dnsmasq_hostsdir, args.dnsmasq) {
                (Some(dir), _) => DhcpMode::Hostsdir(dir.clone()),
                (None, true) => DhcpMode::Managed {
                    program: args.dnsmasq_program.clone(),
                    interface: args.dhcp_interface.clone().unwrap_or_default(),
                    range: args.dhcp_range.clone().unwrap_or_default(),
                    dir: args.dnsmasq_dir.clone(),
                },
                (None, false) => DhcpMode::None,
            },
        })
    }

    /// The driver settings this configuration implies (without a DHCP filter).
    pub fn driver_settings(&self) -> DriverSettings {
        let mut settings = DriverSettings::new(&self.public_url);
        settings.redfish_attempts = self.redfish_attempts;
        settings.redfish_retry_interval = self.redfish_retry_interval;
        settings.power_state_change_timeout = self.power_state_change_timeout;
        settings.enabled = self.enabled.clone();
        settings
    }

    /// Settings for tests and embedding: in-memory database, defaults elsewhere.
    pub fn for_tests(public_url: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite::memory:".to_owned(),
            public_url: public_url.to_owned(),
            heartbeat_timeout: Duration::from_secs(300),
            deploy_callback_timeout: Duration::from_secs(1800),
            allow_insecure_agent: true,
            conductor_name: "ironclad-test".to_owned(),
            enabled: Enabled::default(),
            redfish_attempts: 2,
            redfish_retry_interval: Duration::from_millis(100),
            power_state_change_timeout: Duration::from_secs(30),
            http_root: None,
            dhcp: DhcpMode::None,
        }
    }
}

fn parse_enabled(args: &DaemonArgs) -> Result<Enabled, ConfigError> {
    let split = |text: &str| -> Result<(InterfaceKind, String), ConfigError> {
        let (kind, names) = text.split_once('=').ok_or_else(|| {
            ConfigError::BadInterfaces(format!("{text:?} is not KIND=NAME[,NAME...]"))
        })?;
        let kind = InterfaceKind::from_name(kind.trim()).ok_or_else(|| {
            let kinds: Vec<&str> = InterfaceKind::ALL.iter().map(|k| k.name()).collect();
            ConfigError::BadInterfaces(format!(
                "unknown interface kind {kind:?}; kinds: {}",
                kinds.join(", ")
            ))
        })?;
        Ok((kind, names.trim().to_owned()))
    };
    let mut enabled = Enabled {
        hardware_types: args.enabled_hardware_types.clone(),
        ..Enabled::default()
    };
    for text in &args.enabled_interfaces {
        let (kind, names) = split(text)?;
        enabled.interfaces.insert(
            kind,
            names
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
        );
    }
    for text in &args.default_interfaces {
        let (kind, name) = split(text)?;
        enabled.defaults.insert(kind, name);
    }
    Ok(enabled)
}

/// `<data dir>/ironclad/ironclad.sqlite`.
pub fn default_database_path() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("ironclad").join("ironclad.sqlite"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ironclad".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_listen_address() {
        let args = DaemonArgs::parse_from([
            "ironclad-controller",
            "--listen",
            "127.0.0.1:7000",
            "--database",
            "sqlite:///tmp/x.sqlite",
        ]);
        let config = Config::from_args(&args).unwrap();
        assert_eq!(config.public_url, "http://127.0.0.1:7000");
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(300));
        assert_eq!(config.deploy_callback_timeout, Duration::from_secs(1800));
        assert!(!config.allow_insecure_agent);
    }
}
