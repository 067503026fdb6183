//! The agent's configuration: command-line flags (host mode) and the kernel
//! command line `ipa-*` parameters (PID 1), resolved into one [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use url::Url;

/// Default port of the agent API.
pub const DEFAULT_PORT: u16 = 9999;

/// Command-line flags of `ironclad-agent`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ironclad-agent",
    version,
    about = "Ironclad's IPA-compatible deploy agent. Runs as PID 1 in a ramdisk, or in host mode for development and tests."
)]
pub struct Cli {
    /// Controller API URL(s); comma-separated or repeated. Required in host mode.
    #[arg(long = "api-url", value_delimiter = ',', value_name = "URL")]
    pub api_url: Vec<String>,
    /// Address and port the agent API listens on.
    #[arg(long, default_value = "0.0.0.0:9999", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// IP address advertised in the callback URL (default: the source address toward the controller).
    #[arg(long = "advertise-host", value_name = "IP")]
    pub advertise_host: Option<IpAddr>,
    /// A regular file acting as a block device (host mode); repeatable.
    #[arg(long = "disk", value_name = "PATH")]
    pub disks: Vec<PathBuf>,
    /// A MAC address identifying this agent (lookup, inventory); repeatable.
    #[arg(long = "mac", value_name = "MAC")]
    pub macs: Vec<String>,
    /// Pre-generated agent token (otherwise the one from lookup is used).
    #[arg(long = "agent-token", value_name = "TOKEN")]
    pub agent_token: Option<String>,
    /// First lookup retry interval in seconds (grows exponentially up to 60 s).
    #[arg(
        long = "lookup-interval",
        default_value_t = 1.0,
        value_name = "SECONDS"
    )]
    pub lookup_interval: f64,
    /// Give up looking the node up after this many seconds.
    #[arg(
        long = "lookup-timeout",
        default_value_t = 600.0,
        value_name = "SECONDS"
    )]
    pub lookup_timeout: f64,
    /// Do not verify the controller's (or image server's) TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// CA bundle (PEM) to verify the controller and image servers with.
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Serve plain HTTP even when the controller supports auto-TLS.
    #[arg(long = "no-auto-tls")]
    pub no_auto_tls: bool,
    /// Root under which /proc and /sys are read for the inventory.
    #[arg(long, default_value = "/", value_name = "PATH")]
    pub sysroot: PathBuf,
    /// Value of `X-OpenStack-Request-ID` sent to the controller.
    #[arg(long = "global-request-id", value_name = "ID")]
    pub global_request_id: Option<String>,
    /// Extra attempts per image URL after a 5xx answer or a connection error (IPA's image_download_connection_retries).
    #[arg(long = "image-download-retries", default_value_t = 9, value_name = "N")]
    pub image_download_retries: u32,
    /// First wait between image download attempts; doubles each attempt, up to 120 s (IPA's image_download_connection_retry_interval).
    #[arg(
        long = "image-download-retry-interval",
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub image_download_retry_interval: f64,
    /// Longest silence between two chunks of an image download before the connection counts as broken (IPA's image_download_connection_timeout).
    #[arg(
        long = "image-download-timeout",
        default_value_t = 60.0,
        value_name = "SECONDS"
    )]
    pub image_download_timeout: f64,
}

impl Cli {
    /// The image download retry policy from the flags.
    pub fn image_retry_policy(&self) -> Result<crate::image::source::RetryPolicy, ConfigError> {
        Ok(crate::image::source::RetryPolicy {
            retries: self.image_download_retries,
            interval: seconds(
                "--image-download-retry-interval",
                self.image_download_retry_interval,
            )?,
            stall_timeout: seconds("--image-download-timeout", self.image_download_timeout)?,
        })
    }
}

/// Whether the agent owns the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Not PID 1: never touches the host's disks or power.
    Host,
    /// PID 1 in a ramdisk: real disks, real power.
    Init,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Host mode or PID 1.
    pub mode: Mode,
    /// Controller API URLs, tried in order.
    pub api_urls: Vec<Url>,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Advertised IP, when given.
    pub advertise_host: Option<IpAddr>,
    /// File disks (host mode only).
    pub disks: Vec<PathBuf>,
    /// Identity MACs (normalized, lower case, colon-separated).
    pub macs: Vec<String>,
    /// Pre-generated token.
    pub agent_token: Option<String>,
    /// First lookup retry interval.
    pub lookup_interval: Duration,
    /// Total lookup budget.
    pub lookup_timeout: Duration,
    /// Skip TLS verification toward the controller and image servers.
    pub insecure: bool,
    /// Extra CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Whether auto-TLS may be used.
    pub auto_tls: bool,
    /// Root of /proc and /sys.
    pub sysroot: PathBuf,
    /// Request id sent to the controller.
    pub global_request_id: Option<String>,
    /// Retries, back-off and stall timeout of image downloads.
    pub image_download: crate::image::source::RetryPolicy,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No controller URL.
    #[error("no controller URL: pass --api-url URL (or ipa-api-url= on the kernel command line)")]
    NoApiUrl,
    /// A controller URL does not parse.
    #[error(
        "invalid controller URL {url:?}: {reason}; give a full URL such as http://10.0.0.1:6385"
    )]
    BadApiUrl {
        /// The URL given.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A `--disk` path is not a regular file.
    #[error("--disk {0}: not a regular file; host mode only writes to regular files (create one with `truncate -s 8G disk.img`)")]
    DiskNotRegularFile(PathBuf),
    /// A `--disk` path cannot be inspected.
    #[error("--disk {path}: {source}")]
    DiskUnreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A MAC address is malformed.
    #[error("invalid MAC address {0:?}: expected six hex pairs such as 52:54:00:12:34:56")]
    BadMac(String),
    /// A duration flag is negative or not finite.
    #[error("{name} must be a positive number of seconds, got {value}")]
    BadDuration {
        /// Flag name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
}

/// Normalizes a MAC address to lower-case, colon-separated form.
pub fn normalize_mac(mac: &str) -> Result<String, ConfigError> {
    let parts: Vec<&str> = mac.trim().split([':', '-']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ConfigError::BadMac(mac.to_owned()));
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

fn seconds(name: &'static str, value: f64) -> Result<Duration, ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::BadDuration { name, value })
    }
}

fn parse_urls(urls: &[String]) -> Result<Vec<Url>, ConfigError> {
    let urls: Vec<Url> = urls
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            Url::parse(s).map_err(|e| ConfigError::BadApiUrl {
                url: s.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    if urls.is_empty() {
        return Err(ConfigError::NoApiUrl);
    }
    Ok(urls)
}

fn check_disk(path: &Path) -> Result<PathBuf, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::DiskUnreadable {
        path: path.to_owned(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(ConfigError::DiskNotRegularFile(path.to_owned()));
    }
    Ok(path.to_owned())
}

impl Config {
    /// Host mode: the flags alone.
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        Ok(Self {
            mode: Mode::Host,
            api_urls: parse_urls(&cli.api_url)?,
            listen: cli.listen,
            advertise_host: cli.advertise_host,
            disks: cli
                .disks
                .iter()
                .map(|d| check_disk(d))
                .collect::<Result<_, _>>()?,
            macs: cli
                .macs
                .iter()
                .map(|m| normalize_mac(m))
                .collect::<Result<_, _>>()?,
            agent_token: cli.agent_token.clone().filter(|t| !t.is_empty()),
            lookup_interval: seconds("--lookup-interval", cli.lookup_interval)?,
            lookup_timeout: seconds("--lookup-timeout", cli.lookup_timeout)?,
            insecure: cli.insecure,
            ca_file: cli.ca_file.clone(),
            auto_tls: !cli.no_auto_tls,
            sysroot: cli.sysroot.clone(),
            global_request_id: cli.global_request_id.clone(),
            image_download: cli.image_retry_policy()?,
        })
    }

    /// PID 1: the kernel command line, over the flags' defaults. `--disk` is ignored (real disks are used).
    pub fn from_kernel(cli: &Cli, kernel: &KernelParams) -> Result<Self, ConfigError> {
        let urls = if kernel.api_urls.is_empty() {
            cli.api_url.clone()
        } else {
            kernel.api_urls.clone()
        };
        let mut listen = cli.listen;
        if let Some(port) = kernel.listen_port {
            listen.set_port(port);
        }
        let mut macs: Vec<String> = cli
            .macs
            .iter()
            .map(|m| normalize_mac(m))
            .collect::<Result<_, _>>()?;
        if let Some(bootif) = &kernel.bootif_mac {
            macs.push(bootif.clone());
        }
        Ok(Self {
            mode: Mode::Init,
            api_urls: parse_urls(&urls)?,
            listen,
            advertise_host: kernel.advertise_host.or(cli.advertise_host),
            disks: Vec::new(),
            macs,
            agent_token: kernel
                .agent_token
                .clone()
                .or_else(|| cli.agent_token.clone())
                .filter(|t| !t.is_empty()),
            lookup_interval: seconds(
                "ipa-lookup-interval",
                kernel.lookup_interval.unwrap_or(cli.lookup_interval),
            )?,
            lookup_timeout: seconds(
                "ipa-lookup-timeout",
                kernel.lookup_timeout.unwrap_or(cli.lookup_timeout),
            )?,
            insecure: kernel.insecure.unwrap_or(cli.insecure),
            ca_file: cli.ca_file.clone(),
            auto_tls: !cli.no_auto_tls,
            sysroot: cli.sysroot.clone(),
            global_request_id: kernel
                .global_request_id
                .clone()
                .or_else(|| cli.global_request_id.clone()),
            image_download: cli.image_retry_policy()?,
        })
    }
}

/// The `ipa-*` parameters found on a kernel command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelParams {
    /// `ipa-api-url` (comma-separated).
    pub api_urls: Vec<String>,
    /// `ipa-agent-token`.
    pub agent_token: Option<String>,
    /// `ipa-advertise-host`.
    pub advertise_host: Option<IpAddr>,
    /// `ipa-listen-port`.
    pub listen_port: Option<u16>,
    /// `ipa-insecure`.
    pub insecure: Option<bool>,
    /// `ipa-global-request-id`.
    pub global_request_id: Option<String>,
    /// `ipa-lookup-timeout`.
    pub lookup_timeout: Option<f64>,
    /// `ipa-lookup-interval`.
    pub lookup_interval: Option<f64>,
    /// The MAC from `BOOTIF=01-aa-bb-cc-dd-ee-ff`.
    pub bootif_mac: Option<String>,
    /// The kernel's `ip=` value (parsed by [`crate::net::ipconfig::parse_ip_param`]).
    pub ip: Option<String>,
    /// `ipa-network-interface`: the one interface to configure (name or MAC).
    pub network_interface: Option<String>,
    /// Parameters that were recognized as `ipa-*` but had unusable values.
    pub warnings: Vec<String>,
}

/// Splits a kernel command line into words, honouring double quotes.
fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses the `ipa-*` parameters and `BOOTIF` from a kernel command line.
///
/// Unknown parameters are ignored; `ipa-*` parameters with unusable values are
/// reported in [`KernelParams::warnings`] and otherwise ignored.
pub fn parse_kernel_cmdline(cmdline: &str) -> KernelParams {
    let mut p = KernelParams::default();
    for word in split_cmdline(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (word.clone(), String::new()),
        };
        // IPA accepts both ipa-foo and ipa_foo.
        let key = key.replace('_', "-");
        let bad = || p_warn(&key, &value);
        match key.as_str() {
            "ipa-api-url" => {
                p.api_urls = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "ipa-agent-token" => p.agent_token = Some(value).filter(|v| !v.is_empty()),
            "ipa-advertise-host" => match value.parse() {
                Ok(ip) => p.advertise_host = Some(ip),
                Err(_) => p.warnings.push(bad()),
            },
            "ipa-listen-port" => match value.parse() {
                Ok(port) => p.listen_port = Some(port),
                Err(_) => p.warnings.push(bad()),
            },
            "ipa-insecure" => match parse_bool(&value) {
                Some(b) => p.insecure = Some(b),
                None => p.warnings.push(bad()),
            },
            "ipa-global-request-id" => {
                p.global_request_id = Some(value).filter(|v| !v.is_empty());
            }
            "ipa-lookup-timeout" => match value.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => p.lookup_timeout = Some(v),
                _ => p.warnings.push(bad()),
            },
            "ipa-lookup-interval" => match value.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => p.lookup_interval = Some(v),
                _ => p.warnings.push(bad()),
            },
            "ip" => p.ip = Some(value).filter(|v| !v.is_empty()),
            "ipa-network-interface" => {
                p.network_interface = Some(value).filter(|v| !v.is_empty());
            }
            "BOOTIF" => {
                // PXELINUX form: 01-aa-bb-cc-dd-ee-ff (01 = Ethernet).
                let mac = value
                    .strip_prefix("01-")
                    .filter(|rest| rest.len() == 17)
                    .unwrap_or(&value);
                match normalize_mac(mac) {
                    Ok(m) => p.bootif_mac = Some(m),
                    Err(_) => p.warnings.push(bad()),
                }
            }
            _ => {}
        }
    }
    p
}

fn p_warn(key: &str, value: &str) -> String {
    format!("ignoring kernel parameter {key}={value:?}: unusable value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_cmdline_is_parsed() {
        let p = parse_kernel_cmdline(
            "BOOT_IMAGE=/vmlinuz root=/dev/ram0 ipa-api-url=http://10.0.0.1:6385,http://10.0.0.2:6385 \
             ipa-agent-token=abc ipa-advertise-host=10.0.0.5 ipa-listen-port=9998 ipa-insecure=1 \
             ipa_global_request_id=req-1 ipa-lookup-timeout=300 BOOTIF=01-52-54-00-AA-BB-CC quiet \
             console=\"ttyS0 115200\" ip=dhcp ipa-network-interface=eth1",
        );
        assert_eq!(p.ip.as_deref(), Some("dhcp"));
        assert_eq!(p.network_interface.as_deref(), Some("eth1"));
        assert_eq!(p.api_urls, ["http://10.0.0.1:6385", "http://10.0.0.2:6385"]);
        assert_eq!(p.agent_token.as_deref(), Some("abc"));
        assert_eq!(p.advertise_host, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(p.listen_port, Some(9998));
        assert_eq!(p.insecure, Some(true));
        assert_eq!(p.global_request_id.as_deref(), Some("req-1"));
        assert_eq!(p.lookup_timeout, Some(300.0));
        assert_eq!(p.bootif_mac.as_deref(), Some("52:54:00:aa:bb:cc"));
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn bad_values_are_reported_not_fatal() {
        let p = parse_kernel_cmdline("ipa-listen-port=abc ipa-insecure=maybe ipa-api-url=http://x");
        assert_eq!(p.listen_port, None);
        assert_eq!(p.insecure, None);
        assert_eq!(p.warnings.len(), 2);
        assert_eq!(p.api_urls, ["http://x"]);
    }

    #[test]
    fn quoted_words_keep_spaces() {
        assert_eq!(
            split_cmdline("a=\"b c\" d"),
            vec!["a=b c".to_owned(), "d".to_owned()]
        );
    }

    #[test]
    fn macs_are_normalized() {
        assert_eq!(
            normalize_mac("52-54-00-AA-bb-0c").unwrap(),
            "52:54:00:aa:bb:0c"
        );
        assert!(normalize_mac("52:54:00:aa:bb").is_err());
        assert!(normalize_mac("zz:54:00:aa:bb:cc").is_err());
    }

    #[test]
    fn kernel_params_override_flags() {
        let cli = Cli::parse_from(["ironclad-agent"]);
        let p = parse_kernel_cmdline("ipa-api-url=http://10.0.0.1:6385 ipa-listen-port=9000");
        let c = Config::from_kernel(&cli, &p).unwrap();
        assert_eq!(c.mode, Mode::Init);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.api_urls[0].as_str(), "http://10.0.0.1:6385/");
        assert_eq!(c.lookup_timeout, Duration::from_secs(600));
    }

    #[test]
    fn host_mode_refuses_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Cli::parse_from([
            "ironclad-agent",
            "--api-url",
            "http://127.0.0.1:1",
            "--disk",
            dir.path().to_str().unwrap(),
        ]);
        assert!(matches!(
            Config::from_cli(&cli),
            Err(ConfigError::DiskNotRegularFile(_))
        ));
        let cli = Cli::parse_from(["ironclad-agent"]);
        assert!(matches!(Config::from_cli(&cli), Err(ConfigError::NoApiUrl)));
    }
}
