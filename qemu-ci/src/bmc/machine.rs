//! The machine a BMC drives: powered on with a boot device, reset, powered off.
//! [`QemuMachine`] is a real QEMU process (powered off = no process);
//! [`MemoryMachine`] only records what was asked, for fast tests of the BMC's
//! state machine.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::qmp::QmpError;
use crate::vm::{Boot, Vm, VmError, VmSpec};

/// What the machine boots from when it is powered on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDevice {
    /// The firmware boots from the first disk.
    Disk,
    /// The firmware boots from the network (iPXE on the first NIC).
    Network,
    /// The firmware boots from the virtual CD-ROM; `None` when no media is inserted.
    Cdrom(Option<PathBuf>),
}

/// Why the machine refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// QEMU could not be started or watched.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A QMP command failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The operation needs the machine to be powered on.
    #[error("the machine is powered off")]
    PoweredOff,
}

/// A machine a BMC can drive. Every method is called with the BMC's state lock
/// held, so calls never overlap.
pub trait Machine: Send + 'static {
    /// Powers on, booting from `device`. Called only when [`Machine::is_on`] is false.
    fn power_on(
        &mut self,
        device: BootDevice,
    ) -> impl Future<Output = Result<(), MachineError>> + Send;

    /// Whether the machine is powered on; a machine that turned itself off
    /// (the guest powered off) reports false.
    fn is_on(&mut self) -> bool;

    /// Cuts the power at once.
    fn force_off(&mut self) -> impl Future<Output = ()> + Send;

    /// Presses the ACPI power button; the guest may or may not obey.
    fn acpi_powerdown(&mut self) -> impl Future<Output = Result<(), MachineError>> + Send;

    /// Resets the machine in place (the firmware runs again, same devices).
    fn reset(&mut self) -> impl Future<Output = Result<(), MachineError>> + Send;

    /// Injects a non-maskable interrupt.
    fn nmi(&mut self) -> impl Future<Output = Result<(), MachineError>> + Send;

    /// The device the machine booted from at its last power-on, while it is on.
    fn booted_from(&self) -> Option<BootDevice>;

    /// The process id of the emulator, if there is one.
    fn pid(&self) -> Option<u32>;

    /// Best-effort immediate power cut without waiting, for `Drop`.
    fn halt_now(&mut self);
}

/// What a [`MemoryMachine`] has been asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    /// Powered on.
    pub on: bool,
    /// The device of the current power-on.
    pub booted_from: Option<BootDevice>,
    /// Every power-on, oldest first.
    pub power_ons: Vec<BootDevice>,
    /// How many resets were asked for.
    pub resets: u32,
    /// How many ACPI power-button presses were asked for.
    pub powerdowns: u32,
    /// How many NMIs were asked for.
    pub nmis: u32,
    /// Whether the simulated guest obeys the ACPI power button.
    pub obeys_acpi: bool,
}

/// An in-memory machine for unit tests; clones share the same state, so a test
/// keeps one clone to look at while the BMC drives the other.
#[derive(Debug, Clone, Default)]
pub struct MemoryMachine {
    state: Arc<Mutex<MemoryState>>,
}

impl MemoryMachine {
    /// A powered-off machine whose guest obeys the power button if `obeys_acpi`.
    pub fn new(obeys_acpi: bool) -> Self {
        let machine = Self::default();
        machine.update(|s| s.obeys_acpi = obeys_acpi);
        machine
    }

    /// A copy of the current state.
    pub fn state(&self) -> MemoryState {
        match self.state.lock() {
            Ok(state) => state.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Simulates the guest powering itself off.
    pub fn guest_poweroff(&self) {
        self.update(|s| {
            s.on = false;
            s.booted_from = None;
        });
    }

    fn update<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        match self.state.lock() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

impl Machine for MemoryMachine {
    async fn power_on(&mut self, device: BootDevice) -> Result<(), MachineError> {
        self.update(|s| {
            s.on = true;
            s.booted_from = Some(device.clone());
            s.power_ons.push(device);
        });
        Ok(())
    }

    fn is_on(&mut self) -> bool {
        self.update(|s| s.on)
    }

    async fn force_off(&mut self) {
        self.guest_poweroff();
    }

    async fn acpi_powerdown(&mut self) -> Result<(), MachineError> {
        self.update(|s| {
            if !s.on {
                return Err(MachineError::PoweredOff);
            }
            s.powerdowns += 1;
            if s.obeys_acpi {
                s.on = false;
                s.booted_from = None;
            }
            Ok(())
        })
    }

    async fn reset(&mut self) -> Result<(), MachineError> {
        self.update(|s| {
            if !s.on {
                return Err(MachineError::PoweredOff);
            }
            s.resets += 1;
            Ok(())
        })
    }

    async fn nmi(&mut self) -> Result<(), MachineError> {
        self.update(|s| {
            if !s.on {
                return Err(MachineError::PoweredOff);
            }
            s.nmis += 1;
            Ok(())
        })
    }

    fn booted_from(&self) -> Option<BootDevice> {
        match self.state.lock() {
            Ok(state) => state.booted_from.clone(),
            Err(poisoned) => poisoned.into_inner().booted_from.clone(),
        }
    }

    fn pid(&self) -> Option<u32> {
        None
    }

    fn halt_now(&mut self) {
        self.guest_poweroff();
    }
}

/// A QEMU node: powered off means no QEMU process; power-on starts one with the
/// boot device chosen by the BMC; a guest power-off ends the process (QEMU runs
/// without `-no-shutdown`), which the BMC then reports as `Off`.
pub struct QemuMachine {
    template: VmSpec,
    disk_boot: Option<Boot>,
    vm: Option<Vm>,
    booted_from: Option<BootDevice>,
}

impl QemuMachine {
    /// A machine started from `template` (its `boot` is replaced at each
    /// power-on and `start_paused` is ignored).
    pub fn new(template: VmSpec) -> Self {
        Self {
            template,
            disk_boot: None,
            vm: None,
            booted_from: None,
        }
    }

    /// Boots `boot` (typically [`Boot::Kernel`]) whenever the BMC asks for a
    /// disk boot: a direct-kernel mode for tests that need an OS without
    /// installing one.
    pub fn with_disk_boot(mut self, boot: Boot) -> Self {
        self.disk_boot = Some(boot);
        self
    }

    /// The running VM, if powered on.
    pub fn vm(&self) -> Option<&Vm> {
        self.vm.as_ref()
    }

    fn running(&mut self) -> Result<&mut Vm, MachineError> {
        if !self.is_on() {
            return Err(MachineError::PoweredOff);
        }
        self.vm.as_mut().ok_or(MachineError::PoweredOff)
    }

    async fn qmp(&mut self, command: &str) -> Result<(), MachineError> {
        let vm = self.running()?;
        let mut qmp = vm.qmp().await?;
        qmp.execute(command, None).await?;
        Ok(())
    }
}

impl Machine for QemuMachine {
    async fn power_on(&mut self, device: BootDevice) -> Result<(), MachineError> {
        if self.is_on() {
            return Ok(());
        }
        let mut spec = self.template.clone();
        spec.start_paused = false;
        spec.boot = match &device {
            BootDevice::Disk => self.disk_boot.clone().unwrap_or(Boot::Disk),
            BootDevice::Network => Boot::Network,
            BootDevice::Cdrom(Some(iso)) => Boot::Cdrom(iso.clone()),
            // An empty drive: the firmware finds nothing there and falls back to disk.
            BootDevice::Cdrom(None) => Boot::Disk,
        };
        tracing::info!(node = %spec.name, ?device, "powering on");
        let vm = Vm::start(spec).await?;
        // Ready means QEMU answers QMP (its devices, taps included, are set up by then).
        let status = vm.qmp().await?.status().await?;
        tracing::debug!(node = %self.template.name, %status, "QEMU is up");
        self.vm = Some(vm);
        self.booted_from = Some(device);
        Ok(())
    }

    fn is_on(&mut self) -> bool {
        let exited = match self.vm.as_mut() {
            Some(vm) => vm.has_exited(),
            None => return false,
        };
        if exited {
            tracing::info!(node = %self.template.name, "QEMU exited: powered off");
            self.vm = None;
            self.booted_from = None;
        }
        !exited
    }

    async fn force_off(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            tracing::info!(node = %self.template.name, "forcing power off");
            vm.kill().await;
        }
        self.booted_from = None;
    }

    async fn acpi_powerdown(&mut self) -> Result<(), MachineError> {
        self.qmp("system_powerdown").await
    }

    async fn reset(&mut self) -> Result<(), MachineError> {
        self.qmp("system_reset").await
    }

    async fn nmi(&mut self) -> Result<(), MachineError> {
        self.qmp("inject-nmi").await
    }

    fn booted_from(&self) -> Option<BootDevice> {
        self.booted_from.clone()
    }

    fn pid(&self) -> Option<u32> {
        self.vm.as_ref().and_then(Vm::pid)
    }

    fn halt_now(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            vm.start_kill();
        }
        self.booted_from = None;
    }
}
