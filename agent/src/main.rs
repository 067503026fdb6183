//! `ironclad-agent`: the ramdisk agent's entry point.
//!
//! As PID 1 (in the ramdisk): mounts, modules, entropy, power button and network
//! first (see `init` and `net`). Then, in both modes, the order is: configuration → lookup at the controller → auto-TLS → API
//! server → heartbeat loop.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ironclad_agent::api::{self, ApiState};
use ironclad_agent::commands::{AgentContext, CommandExecutor};
use ironclad_agent::config::{self, Cli, Config, Mode};
use ironclad_agent::controller_client::{self, ControllerClient};
use ironclad_agent::disk::{BlockDevices, FileBlockDevices, SysfsBlockDevices};
use ironclad_agent::heartbeat::{Heartbeater, DEFAULT_HEARTBEAT_TIMEOUT};
use ironclad_agent::image::ImageWriter;
use ironclad_agent::inventory::{self, NicSource};
use ironclad_agent::logs::{LogBuffer, DEFAULT_CAPACITY};
use ironclad_agent::power::{HostPower, Power, SystemPower};
use ironclad_agent::tls;
use ironclad_agent::{init, net};
use ironclad_versioning::microversion::AGENT_VERIFY_CA;
use ironclad_versioning::ramdisk::{MASKED_TOKEN, MIN_TOKEN_LEN};
use tokio::sync::Notify;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

fn init_logging(buffer: &LogBuffer) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(buffer.clone()),
        )
        .init();
}

fn load_config(cli: &Cli) -> Result<Config> {
    Config::from_cli(cli).context("invalid command line (host mode)")
}

/// Picks a usable token: the pre-generated one, else a real one from lookup.
fn choose_token(given: Option<&str>, from_lookup: Option<&str>) -> Option<String> {
    if let Some(t) = given {
        return Some(t.to_owned());
    }
    from_lookup
        .filter(|t| *t != MASKED_TOKEN && t.len() >= MIN_TOKEN_LEN)
        .map(str::to_owned)
}

fn callback_url(scheme: &str, host: IpAddr, port: u16) -> String {
    match host {
        IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
        IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
    }
}

fn main() -> Result<()> {
    init::mark_start();
    if init::is_pid1() {
        pid1_main();
    }
    tls::install_crypto_provider();
    let buffer = LogBuffer::new(DEFAULT_CAPACITY);
    init_logging(&buffer);
    let cli = Cli::parse();
    let config = load_config(&cli)?;
    tracing::info!(
        "ironclad-agent {} starting in host mode",
        ironclad_versioning::IRONCLAD_VERSION,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    if let Err(e) = runtime.block_on(run(config, buffer)) {
        tracing::error!("FATAL: {e:#}");
        return Err(e);
    }
    Ok(())
}

/// PID 1: set the machine up, run the agent in its own thread, and reap
/// zombies on this one forever. Nothing here may panic or return: the kernel
/// panics when init exits.
fn pid1_main() -> ! {
    let mount_errors = init::mount_filesystems();
    let console = init::reopen_console();
    let buffer = LogBuffer::new(DEFAULT_CAPACITY);
    init_logging(&buffer);
    init::install_panic_hook(buffer.clone());
    tracing::info!(
        "ironclad-agent {} starting as PID 1",
        ironclad_versioning::IRONCLAD_VERSION
    );
    for e in mount_errors {
        tracing::error!("{e}");
    }
    if let Err(e) = console {
        tracing::error!("{e}");
    }
    init::log_kernel_uptime();
    let spawned = std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || pid1_agent(buffer));
    if let Err(e) = spawned {
        tracing::error!("FATAL: cannot start the agent thread: {e}; the node needs a reboot");
    }
    init::reap_forever()
}

/// How long PID 1 waits before starting the agent again after a fatal error
/// (what the reference ramdisk's service manager does).
const RESTART_DELAY: Duration = Duration::from_secs(30);

/// The agent thread of PID 1: modules, entropy, power button, network, then the
/// agent proper, restarted after fatal errors. Panics are caught and logged, and
/// the thread then parks so that tasks already running (the API) stay up.
fn pid1_agent(buffer: LogBuffer) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("FATAL: cannot start the Tokio runtime: {e}");
            return;
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(pid1_sequence(buffer));
    }));
    if outcome.is_err() {
        tracing::error!(
            "FATAL: the agent panicked (see above); the API stays up if it was running"
        );
    }
    init::idle_forever()
}

async fn pid1_sequence(buffer: LogBuffer) {
    let loaded = init::modules::load_all(std::path::Path::new(init::MODULES_DIR));
    tracing::info!(
        "loaded {} kernel modules by {} ms after /init start",
        loaded.len(),
        init::since_start().map(|d| d.as_millis()).unwrap_or(0)
    );
    init::seed_entropy();
    init::watch_power_button(Arc::new(SystemPower));
    tls::install_crypto_provider();
    // The kernel hands init any parameter it does not know as an argument; the
    // agent's settings come from /proc/cmdline instead.
    let cli = Cli::parse_from(["ironclad-agent"]);
    let params = match std::fs::read_to_string("/proc/cmdline") {
        Ok(cmdline) => config::parse_kernel_cmdline(&cmdline),
        Err(e) => {
            tracing::error!("reading /proc/cmdline: {e}");
            config::KernelParams::default()
        }
    };
    for warning in &params.warnings {
        tracing::warn!("{warning}");
    }
    let ip = match params.ip.as_deref().map(net::ipconfig::parse_ip_param) {
        None => net::ipconfig::IpParam::Dhcp { device: None },
        Some(Ok(ip)) => ip,
        Some(Err(e)) => {
            tracing::error!("{e}; using DHCP");
            net::ipconfig::IpParam::Dhcp { device: None }
        }
    };
    let settings = net::NetSettings {
        ip,
        bootif: params.bootif_mac.clone(),
        interface: params.network_interface.clone(),
    };
    match net::configure(&settings).await {
        Ok(status) => tracing::info!(
            "network configured from {} by {} ms after /init start: {:?}",
            status.source,
            init::since_start().map(|d| d.as_millis()).unwrap_or(0),
            status.addresses
        ),
        Err(e) => tracing::error!("network: {e}"),
    }
    loop {
        let attempt = Config::from_kernel(&cli, &params)
            .context("kernel command line")
            .map(|config| run(config, buffer.clone()));
        let result = match attempt {
            Ok(running) => running.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!("the agent stopped; PID 1 stays up");
                return;
            }
            Err(e) => tracing::error!(
                "FATAL: {e:#}; starting the agent again in {} s",
                RESTART_DELAY.as_secs()
            ),
        }
        tokio::time::sleep(RESTART_DELAY).await;
    }
}

async fn run(config: Config, buffer: LogBuffer) -> Result<()> {
    let http = controller_client::http_client(config.insecure, config.ca_file.as_deref())
        .context("building the HTTP client")?;
    let client = ControllerClient::new(
        http.clone(),
        config.api_urls.clone(),
        config.global_request_id.clone(),
    );

    let (disks, power, nics): (Arc<dyn BlockDevices>, Arc<dyn Power>, NicSource) = match config.mode
    {
        Mode::Host => {
            let nics = if config.macs.is_empty() {
                NicSource::System
            } else {
                NicSource::Given {
                    macs: config.macs.clone(),
                    address: config.advertise_host,
                }
            };
            (
                Arc::new(FileBlockDevices::new(config.disks.clone())),
                Arc::new(HostPower::new()),
                nics,
            )
        }
        Mode::Init => (
            Arc::new(SysfsBlockDevices::new(&config.sysroot)),
            Arc::new(SystemPower),
            NicSource::System,
        ),
    };

    let lookup_macs: Vec<String> = if config.macs.is_empty() || config.mode == Mode::Init {
        let discovered: Vec<String> = inventory::system_macs(&config.sysroot)
            .into_iter()
            .map(|(_, mac)| mac)
            .collect();
        controller_client::lookup_addresses(&config.macs, &discovered)
    } else {
        config.macs.clone()
    };
    if lookup_macs.is_empty() {
        bail!("no MAC address to look the node up with; pass --mac MAC");
    }

    // 1. Lookup (needs no server).
    let version = client.controller_version().await;
    tracing::info!(
        "controller API version {version}; looking up MACs {}",
        lookup_macs.join(",")
    );
    let lookup = client
        .lookup_with_retry(
            &lookup_macs,
            version,
            config.lookup_interval,
            config.lookup_timeout,
        )
        .await
        .context("looking the node up at the controller")?;
    let node_uuid = lookup.node.uuid.clone();
    tracing::info!("lookup found node {node_uuid}");
    let token = choose_token(
        config.agent_token.as_deref(),
        lookup.config.agent_token.as_deref(),
    );

    // 2. TLS.
    let advertise = match config.advertise_host {
        Some(ip) => ip,
        None => config
            .api_urls
            .iter()
            .find_map(controller_client::source_address_toward)
            .context("could not find the address to advertise; pass --advertise-host IP")?,
    };
    let use_tls = config.auto_tls && version >= AGENT_VERIFY_CA;
    let certificate = if use_tls {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "ironclad-agent".to_owned());
        Some(tls::generate(&hostname, advertise).context("generating the auto-TLS certificate")?)
    } else {
        None
    };

    // 3. API server.
    let ctx = Arc::new(AgentContext {
        disks,
        power,
        node: Some(lookup.node.clone()),
        lookup_config: lookup.config.clone(),
        logs: buffer,
        sysroot: config.sysroot.clone(),
        nics,
        image_writer: {
            let mut w = ImageWriter::new(http);
            w.policy = config.image_download;
            w.insecure = config.insecure;
            w.ca_file = config.ca_file.clone();
            w
        },
        written_device: Mutex::new(None),
    });
    let async_done = Arc::new(Notify::new());
    let executor = Arc::new(CommandExecutor::new(ctx, async_done.clone()));
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let state = Arc::new(ApiState {
        executor,
        token: token.clone(),
        started_at,
        scheme: if use_tls { "https" } else { "http" },
    });
    let app = api::router(state);
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding the API to {}", config.listen))?;
    listener
        .set_nonblocking(true)
        .context("setting the API socket non-blocking")?;
    let local: SocketAddr = listener.local_addr().context("reading the API address")?;
    let handle = axum_server::Handle::new();
    let server = match &certificate {
        Some(cert) => {
            let tls_config = tls::server_config(cert, lookup.config.tls_min_version.as_deref())
                .context("configuring TLS")?;
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(tls_config);
            let server = axum_server::from_tcp_rustls(listener, rustls).handle(handle.clone());
            tokio::spawn(async move { server.serve(app.into_make_service()).await })
        }
        None => {
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            tokio::spawn(async move { server.serve(app.into_make_service()).await })
        }
    };
    if handle.listening().await.is_none() {
        let result = server.await.context("API server task")?;
        result.context("starting the API server")?;
        bail!("the API server stopped before listening");
    }
    let callback = callback_url(
        if use_tls { "https" } else { "http" },
        advertise,
        local.port(),
    );
    tracing::info!("agent API listening on {local}, advertised as {callback}");

    // 4. Heartbeats.
    match token {
        Some(agent_token) => {
            let heartbeater = Heartbeater {
                client,
                node_uuid,
                controller_version: version,
                callback_url: callback,
                agent_token,
                verify_ca: certificate.as_ref().map(|c| c.pem.clone()),
                heartbeat_timeout: lookup
                    .effective_heartbeat_timeout()
                    .unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT),
            };
            tokio::spawn(heartbeater.run(async_done));
        }
        None => {
            tracing::error!(
                "FATAL: no usable agent token (none given with --agent-token and lookup returned {:?}); not heartbeating. The controller hands out a token once per boot: reboot the node to get a new one",
                lookup.config.agent_token.as_deref().map(|t| if t == MASKED_TOKEN { t } else { "an invalid token" })
            );
        }
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = server => {
            r.context("API server task")?.context("API server")?;
            bail!("the API server stopped");
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, exiting"),
        _ = sigterm.recv() => tracing::info!("terminated, exiting"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_chosen_like_ipa() {
        let long = "x".repeat(43);
        assert_eq!(
            choose_token(Some("given"), Some(&long)).as_deref(),
            Some("given")
        );
        assert_eq!(choose_token(None, Some(&long)), Some(long.clone()));
        assert_eq!(choose_token(None, Some(MASKED_TOKEN)), None);
        assert_eq!(choose_token(None, Some("short")), None);
        assert_eq!(choose_token(None, None), None);
    }

    #[test]
    fn callback_urls_bracket_ipv6() {
        assert_eq!(
            callback_url("https", "10.0.0.5".parse().unwrap(), 9999),
            "https://10.0.0.5:9999"
        );
        assert_eq!(
            callback_url("http", "fd00::5".parse().unwrap(), 9999),
            "http://[fd00::5]:9999"
        );
    }
}
