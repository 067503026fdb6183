//! A virtual BMC per node serving Redfish, shaped as sushy and Ironic expect:
//! ServiceRoot, Systems (power, boot override, reset actions, NICs, processors,
//! storage), Managers with VirtualMedia, Chassis. It drives a [`Machine`]: a QEMU
//! process ([`QemuMachine`]) or an in-memory one ([`MemoryMachine`]) for fast tests.
//!
//! Plain HTTP by default, HTTPS with a generated self-signed certificate on
//! request, optional HTTP Basic auth (the service root stays open, as Redfish
//! requires). A fault-injection knob makes it answer 500 to the next N requests
//! ([`Bmc::fail_next`] or `POST /ironclad-lab/fail-next?count=N`).

pub mod machine;
mod redfish;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;

pub use machine::{BootDevice, Machine, MachineError, MemoryMachine, MemoryState, QemuMachine};

/// The Redfish `PowerState` of a system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
}

impl PowerState {
    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "On",
            Self::Off => "Off",
        }
    }
}

/// `Boot.BootSourceOverrideEnabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideEnabled {
    /// No override: the machine boots its default device (the disk).
    Disabled,
    /// The override applies to the next boot only, then becomes `Disabled`.
    Once,
    /// The override applies to every boot.
    Continuous,
}

impl OverrideEnabled {
    /// Every value, in Redfish spelling.
    pub const ALL: [&'static str; 3] = ["Disabled", "Once", "Continuous"];

    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "Disabled",
            Self::Once => "Once",
            Self::Continuous => "Continuous",
        }
    }

    /// Parses the Redfish spelling.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Disabled" => Some(Self::Disabled),
            "Once" => Some(Self::Once),
            "Continuous" => Some(Self::Continuous),
            _ => None,
        }
    }
}

/// `Boot.BootSourceOverrideTarget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideTarget {
    /// No override target.
    None,
    /// Network boot (iPXE).
    Pxe,
    /// The disk.
    Hdd,
    /// The virtual CD-ROM.
    Cd,
}

impl OverrideTarget {
    /// The allowable values the BMC advertises.
    pub const ALL: [&'static str; 4] = ["None", "Pxe", "Hdd", "Cd"];

    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Pxe => "Pxe",
            Self::Hdd => "Hdd",
            Self::Cd => "Cd",
        }
    }

    /// Parses the Redfish spelling.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(Self::None),
            "Pxe" => Some(Self::Pxe),
            "Hdd" => Some(Self::Hdd),
            "Cd" => Some(Self::Cd),
            _ => None,
        }
    }
}

/// `Boot.BootSourceOverrideMode`. Stored and reported; the QEMU machine always
/// runs SeaBIOS (legacy BIOS) whatever is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// UEFI.
    Uefi,
    /// Legacy BIOS.
    Legacy,
}

impl BootMode {
    /// Every value, in Redfish spelling.
    pub const ALL: [&'static str; 2] = ["UEFI", "Legacy"];

    /// The Redfish spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uefi => "UEFI",
            Self::Legacy => "Legacy",
        }
    }

    /// Parses the Redfish spelling.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "UEFI" => Some(Self::Uefi),
            "Legacy" => Some(Self::Legacy),
            _ => None,
        }
    }
}

/// The system's boot override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOverride {
    /// How long the override holds.
    pub enabled: OverrideEnabled,
    /// The device.
    pub target: OverrideTarget,
    /// The boot mode.
    pub mode: BootMode,
}

impl Default for BootOverride {
    fn default() -> Self {
        Self {
            enabled: OverrideEnabled::Disabled,
            target: OverrideTarget::None,
            mode: BootMode::Legacy,
        }
    }
}

/// The virtual CD-ROM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaState {
    /// The image URL as given to `InsertMedia`.
    pub image: Option<String>,
    /// The local copy (or the `file://` path) QEMU is given.
    pub local: Option<PathBuf>,
    /// Whether media is inserted.
    pub inserted: bool,
    /// Whether the media is write-protected.
    pub write_protected: bool,
    /// Whether `local` was downloaded by the BMC (and is deleted on eject).
    pub downloaded: bool,
}

/// A point-in-time view of the BMC, for tests and the lab's status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Power state.
    pub power: PowerState,
    /// Boot override.
    pub boot: BootOverride,
    /// Virtual CD-ROM.
    pub media: MediaState,
    /// The device the machine booted from, while on.
    pub booted_from: Option<BootDevice>,
    /// The emulator's process id, while on.
    pub pid: Option<u32>,
}

/// HTTP Basic credentials the BMC requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// How a BMC is set up.
#[derive(Debug, Clone)]
pub struct BmcConfig {
    /// The system's Redfish `Id` (it appears in `/redfish/v1/Systems/{id}`).
    pub system_id: String,
    /// The system's UUID.
    pub uuid: String,
    /// The NICs' MAC addresses, in order.
    pub macs: Vec<String>,
    /// Memory, in MiB.
    pub memory_mib: u32,
    /// Number of CPUs.
    pub cpus: u32,
    /// Disk size in bytes (0: no disk).
    pub disk_bytes: u64,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Serve HTTPS with a self-signed certificate.
    pub tls: bool,
    /// Require HTTP Basic auth with these credentials.
    pub credentials: Option<Credentials>,
    /// Where virtual media images are downloaded.
    pub state_dir: PathBuf,
}

/// Why a BMC could not start.
#[derive(Debug, thiserror::Error)]
pub enum BmcError {
    /// The listening socket could not be opened.
    #[error("BMC for {system}: listening on {addr}: {source}")]
    Bind {
        /// The system.
        system: String,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The HTTP client for virtual media could not be built.
    #[error("building the virtual media HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The state directory could not be created.
    #[error("creating {path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

struct Inner<M> {
    machine: M,
    boot: BootOverride,
    media: MediaState,
}

impl<M: Machine> Inner<M> {
    fn power(&mut self) -> PowerState {
        if self.machine.is_on() {
            PowerState::On
        } else {
            PowerState::Off
        }
    }

    /// The device the next power-on boots from; a `Once` override is consumed.
    fn take_boot_device(&mut self) -> BootDevice {
        let device = match (self.boot.enabled, self.boot.target) {
            (OverrideEnabled::Disabled, _) | (_, OverrideTarget::None) => BootDevice::Disk,
            (_, OverrideTarget::Pxe) => BootDevice::Network,
            (_, OverrideTarget::Hdd) => BootDevice::Disk,
            (_, OverrideTarget::Cd) => BootDevice::Cdrom(if self.media.inserted {
                self.media.local.clone()
            } else {
                None
            }),
        };
        if self.boot.enabled == OverrideEnabled::Once {
            self.boot.enabled = OverrideEnabled::Disabled;
        }
        device
    }

    fn snapshot(&mut self) -> Snapshot {
        let power = self.power();
        Snapshot {
            power,
            boot: self.boot,
            media: self.media.clone(),
            booted_from: self.machine.booted_from(),
            pid: self.machine.pid(),
        }
    }
}

struct Shared<M> {
    config: BmcConfig,
    inner: Mutex<Inner<M>>,
    fail_next: AtomicU32,
    http: reqwest::Client,
}

/// A running BMC; dropping it stops the server and cuts the machine's power.
pub struct Bmc<M: Machine> {
    shared: Arc<Shared<M>>,
    addr: SocketAddr,
    tls: bool,
    cert_pem: Option<String>,
    handle: axum_server::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl<M: Machine> Bmc<M> {
    /// Starts serving Redfish for `machine`; returns once the socket listens.
    pub async fn start(config: BmcConfig, machine: M) -> Result<Self, BmcError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| BmcError::StateDir {
            path: config.state_dir.display().to_string(),
            source,
        })?;
        let bind_error = |source| BmcError::Bind {
            system: config.system_id.clone(),
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()?;
        let tls = config.tls;
        let shared = Arc::new(Shared {
            config,
            inner: Mutex::new(Inner {
                machine,
                boot: BootOverride::default(),
                media: MediaState::default(),
            }),
            fail_next: AtomicU32::new(0),
            http,
        });
        let app = redfish::router(shared.clone());
        let handle = axum_server::Handle::new();
        let (task, cert_pem) = if tls {
            let hosts = vec![addr.ip().to_string(), "localhost".to_owned()];
            let cert = tls::self_signed(&hosts)?;
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(cert.config);
            let server = axum_server::from_tcp_rustls(listener, rustls).handle(handle.clone());
            let task = tokio::spawn(async move {
                if let Err(error) = server.serve(app.into_make_service()).await {
                    tracing::error!(%error, "BMC server stopped");
                }
            });
            (task, Some(cert.cert_pem))
        } else {
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            let task = tokio::spawn(async move {
                if let Err(error) = server.serve(app.into_make_service()).await {
                    tracing::error!(%error, "BMC server stopped");
                }
            });
            (task, None)
        };
        Ok(Self {
            shared,
            addr,
            tls,
            cert_pem,
            handle,
            task,
        })
    }

    /// The address the BMC listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The BMC's base URL, e.g. `http://127.0.0.1:8000` (Ironic's `redfish_address`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The system's path, e.g. `/redfish/v1/Systems/node-0` (Ironic's `redfish_system_id`).
    pub fn system_path(&self) -> String {
        format!("/redfish/v1/Systems/{}", self.shared.config.system_id)
    }

    /// The configuration the BMC was started with.
    pub fn config(&self) -> &BmcConfig {
        &self.shared.config
    }

    /// The self-signed certificate in PEM form, when serving HTTPS.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// Makes the BMC answer 500 to the next `count` Redfish requests.
    pub fn fail_next(&self, count: u32) {
        self.shared.fail_next.store(count, Ordering::SeqCst);
    }

    /// How many injected failures are still pending.
    pub fn failures_pending(&self) -> u32 {
        self.shared.fail_next.load(Ordering::SeqCst)
    }

    /// The current state.
    pub async fn snapshot(&self) -> Snapshot {
        self.shared.inner.lock().await.snapshot()
    }

    /// Runs `f` on the machine, with the BMC's state locked.
    pub async fn with_machine<T>(&self, f: impl FnOnce(&mut M) -> T) -> T {
        f(&mut self.shared.inner.lock().await.machine)
    }

    /// Stops serving and powers the machine off, waiting for both.
    pub async fn shutdown(self) {
        self.handle.shutdown();
        self.shared.inner.lock().await.machine.force_off().await;
    }
}

impl<M: Machine> Drop for Bmc<M> {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.task.abort();
        if let Ok(mut inner) = self.shared.inner.try_lock() {
            inner.machine.halt_now();
        }
    }
}
