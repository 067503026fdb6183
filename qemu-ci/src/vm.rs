//! One virtual node: a QEMU process (TCG) with a virtio disk, virtio NICs, a serial
//! console captured to a file and a QMP socket. The process is killed when the
//! [`Vm`] is dropped, so a failing test never leaves QEMU behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::qmp::{Qmp, QmpError};

/// How a NIC reaches the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// QEMU's user-mode network (slirp): the host's loopback is 10.0.2.2.
    User {
        /// A bootfile (URL or TFTP name) handed out by slirp's DHCP, for iPXE boots.
        bootfile: Option<String>,
    },
    /// QEMU's user-mode network, with TCP ports on the host's loopback forwarded
    /// into the guest (so a process on the host can reach a service in the guest).
    UserForwarded {
        /// A bootfile (URL or TFTP name) handed out by slirp's DHCP, for iPXE boots.
        bootfile: Option<String>,
        /// `(host port on 127.0.0.1, guest port)` pairs.
        forwards: Vec<(u16, u16)>,
    },
    /// A tap device that already exists (created by the lab, in its namespace).
    Tap {
        /// The tap's name.
        ifname: String,
    },
}

/// A virtio NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// MAC address.
    pub mac: String,
    /// Where it is connected.
    pub backend: NetBackend,
}

/// What the node boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// QEMU loads a kernel and initramfs directly.
    Kernel {
        /// Kernel image.
        kernel: PathBuf,
        /// Initramfs.
        initrd: PathBuf,
        /// Kernel command line.
        append: String,
    },
    /// The firmware boots from the network (iPXE ROM).
    Network,
    /// The firmware boots from the disk.
    Disk,
    /// The firmware boots from an ISO on the CD-ROM drive.
    Cdrom(PathBuf),
}

/// Everything needed to start a node.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Name, used in file names and logs.
    pub name: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Raw disk image attached as virtio-blk, if any.
    pub disk: Option<PathBuf>,
    /// NICs, in order.
    pub nics: Vec<Nic>,
    /// What to boot.
    pub boot: Boot,
    /// Directory for the serial log and the QMP socket.
    pub state_dir: PathBuf,
    /// Start paused (powered off until `cont`).
    pub start_paused: bool,
    /// Run QEMU inside this network namespace (through `ip netns exec`), so that
    /// it can open taps that live there. `None`: the caller's namespace.
    pub netns: Option<String>,
}

/// Why a VM could not be started or watched.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// QEMU could not be started.
    #[error("starting qemu-system-x86_64 ({0}); install it with `apt-get install qemu-system-x86 ipxe-qemu`")]
    Spawn(std::io::Error),
    /// QEMU exited.
    #[error("QEMU for {name} exited ({status}); serial console:\n{serial}")]
    Exited {
        /// The node.
        name: String,
        /// Exit status.
        status: String,
        /// The end of the serial log.
        serial: String,
    },
    /// A wait timed out.
    #[error("timed out after {timeout:?} waiting for {what} on {name}; serial console:\n{serial}")]
    Timeout {
        /// The node.
        name: String,
        /// What was awaited.
        what: String,
        /// How long.
        timeout: Duration,
        /// The end of the serial log.
        serial: String,
    },
    /// The QMP socket failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl VmSpec {
    /// Path of the serial console log.
    pub fn serial_log(&self) -> PathBuf {
        self.state_dir.join(format!("{}.serial.log", self.name))
    }

    /// Path of the QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.state_dir.join(format!("{}.qmp", self.name))
    }

    /// Path of the file that receives QEMU's own standard error.
    pub fn qemu_log(&self) -> PathBuf {
        self.state_dir.join(format!("{}.qemu.log", self.name))
    }

    /// The program and arguments that start this VM: `qemu-system-x86_64 ...`,
    /// or `ip netns exec NS qemu-system-x86_64 ...` (which execs QEMU, so the
    /// process id is QEMU's).
    pub fn command(&self) -> (String, Vec<String>) {
        match &self.netns {
            Some(ns) => {
                let mut args = vec![
                    "netns".to_owned(),
                    "exec".to_owned(),
                    ns.clone(),
                    "qemu-system-x86_64".to_owned(),
                ];
                args.extend(self.args());
                ("ip".to_owned(), args)
            }
            None => ("qemu-system-x86_64".to_owned(), self.args()),
        }
    }

    /// The QEMU command line (without the program name).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-machine",
            "pc",
            "-nodefaults",
            "-display",
            "none",
            "-no-user-config",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("-m".into());
        args.push(self.memory_mib.to_string());
        args.push("-serial".into());
        args.push(format!("file:{}", self.serial_log().display()));
        args.push("-qmp".into());
        args.push(format!(
            "unix:{},server=on,wait=off",
            self.qmp_socket().display()
        ));
        args.push("-device".into());
        args.push("virtio-rng-pci".into());
        if self.start_paused {
            args.push("-S".into());
        }
        if let Some(disk) = &self.disk {
            let bootindex = if self.boot == Boot::Disk {
                ",bootindex=1"
            } else {
                ""
            };
            args.push("-drive".into());
            args.push(format!(
                "file={},if=none,id=disk0,format=raw,cache=unsafe",
                disk.display()
            ));
            args.push("-device".into());
            args.push(format!("virtio-blk-pci,drive=disk0{bootindex}"));
        }
        for (index, nic) in self.nics.iter().enumerate() {
            let netdev = match &nic.backend {
                NetBackend::User { bootfile } => match bootfile {
                    Some(file) => format!("user,id=net{index},bootfile={file}"),
                    None => format!("user,id=net{index}"),
                },
                NetBackend::UserForwarded { bootfile, forwards } => {
                    let mut netdev = format!("user,id=net{index}");
                    if let Some(file) = bootfile {
                        netdev.push_str(&format!(",bootfile={file}"));
                    }
                    for (host, guest) in forwards {
                        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
                    }
                    netdev
                }
                NetBackend::Tap { ifname } => {
                    format!("tap,id=net{index},ifname={ifname},script=no,downscript=no")
                }
            };
            let bootindex = if self.boot == Boot::Network && index == 0 {
                ",bootindex=1"
            } else {
                ""
            };
            let romfile = if self.boot == Boot::Network {
                ""
            } else {
                ",romfile="
            };
            args.push("-netdev".into());
            args.push(netdev);
            args.push("-device".into());
            args.push(format!(
                "virtio-net-pci,netdev=net{index},mac={}{bootindex}{romfile}",
                nic.mac
            ));
        }
        match &self.boot {
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => {
                args.extend([
                    "-kernel".to_owned(),
                    kernel.display().to_string(),
                    "-initrd".to_owned(),
                    initrd.display().to_string(),
                    "-append".to_owned(),
                    append.clone(),
                ]);
            }
            Boot::Cdrom(iso) => {
                args.push("-drive".into());
                args.push(format!(
                    "file={},media=cdrom,readonly=on,if=ide,index=2",
                    iso.display()
                ));
                args.push("-boot".into());
                args.push("order=d".into());
            }
            Boot::Network | Boot::Disk => {}
        }
        args
    }
}

/// A running node.
pub struct Vm {
    spec: VmSpec,
    child: Child,
}

impl Vm {
    /// Starts QEMU for `spec`; returns once the QMP socket exists.
    pub async fn start(spec: VmSpec) -> Result<Self, VmError> {
        std::fs::create_dir_all(&spec.state_dir).map_err(|source| VmError::Io {
            context: format!("creating {}", spec.state_dir.display()),
            source,
        })?;
        let _ = std::fs::remove_file(spec.qmp_socket());
        let _ = std::fs::remove_file(spec.serial_log());
        let stderr = std::fs::File::create(spec.qemu_log()).map_err(|source| VmError::Io {
            context: format!("creating {}", spec.qemu_log().display()),
            source,
        })?;
        let (program, args) = spec.command();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(VmError::Spawn)?;
        let mut vm = Self { spec, child };
        let socket = vm.spec.qmp_socket();
        vm.wait_until("the QMP socket", Duration::from_secs(20), |_| {
            socket.exists()
        })
        .await?;
        Ok(vm)
    }

    /// The spec the VM was started with.
    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// The process id of QEMU.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Opens a QMP session.
    pub async fn qmp(&self) -> Result<Qmp, VmError> {
        Ok(Qmp::connect(&self.spec.qmp_socket()).await?)
    }

    /// Everything the guest printed on its serial console so far.
    pub fn serial(&self) -> String {
        std::fs::read(self.spec.serial_log())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn serial_tail(&self) -> String {
        let serial = self.serial();
        let lines: Vec<&str> = serial.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Whether QEMU has exited.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// QEMU's exit status, if it has exited (it is reaped then).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What QEMU printed on its standard error so far.
    pub fn qemu_stderr(&self) -> String {
        std::fs::read(self.spec.qemu_log())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    async fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<(), VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut serial = self.serial_tail();
                let stderr = self.qemu_stderr();
                if !stderr.trim().is_empty() {
                    serial.push_str("\nQEMU's standard error:\n");
                    serial.push_str(stderr.trim());
                }
                return Err(VmError::Exited {
                    name: self.spec.name.clone(),
                    status: status.to_string(),
                    serial,
                });
            }
            if Instant::now() > deadline {
                return Err(VmError::Timeout {
                    name: self.spec.name.clone(),
                    what: what.to_owned(),
                    timeout,
                    serial: self.serial_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the serial console contains `needle`.
    pub async fn wait_for_serial(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), VmError> {
        self.wait_until(
            &format!("{needle:?} on the serial console"),
            timeout,
            |vm| vm.serial().contains(needle),
        )
        .await
    }

    /// Waits for QEMU to exit by itself (the guest powered off).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<(), VmError> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(VmError::Io {
                context: "waiting for QEMU".to_owned(),
                source,
            }),
            Err(_) => Err(VmError::Timeout {
                name: self.spec.name.clone(),
                what: "QEMU to exit".to_owned(),
                timeout,
                serial: self.serial_tail(),
            }),
        }
    }

    /// Sends QEMU a kill signal without waiting for it to exit (usable in `Drop`).
    pub fn start_kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Kills QEMU (a hard power-off) and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
