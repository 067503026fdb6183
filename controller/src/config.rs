//! The daemon's command line and the settings derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Configuration problems.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
        })
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
        }
    }
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
