#![allow(clippy::unwrap_used)]
//! The ramdisk, booted for real: the static agent and the `qemu` profile are built
//! into a kernel + initramfs, QEMU (TCG) boots it with a virtio disk and a virtio
//! NIC on QEMU's user network, and the real controller on the host deploys it.
//!
//! Networking: the guest reaches the host's loopback at 10.0.2.2 (slirp), so the
//! controller and the HTTP server listen on 127.0.0.1. The controller reaches the
//! agent through a slirp port forward (host 127.0.0.1:P → guest :P), so the agent
//! listens on P and advertises 127.0.0.1 (`ipa-listen-port`, `ipa-advertise-host`).
//!
//! The controller does not serve iPXE scripts yet: the iPXE test serves its boot
//! script, kernel and initramfs from a small HTTP server of its own.
//!
//! Guests run one at a time (a lock shared by every test process). QEMU is killed by
//! the test on every path: [`Vm`] kills it when dropped, including on panic.
//!
//! Benchmark (not a test): `scripts/bench-ramdisk`, or
//! `cargo test -p ironclad-tests --test ramdisk_boot -- --ignored --nocapture benchmark`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ironclad_image_builder::{build, BuildOptions, Manifest, Profile};
use ironclad_qemu_ci::{Boot, NetBackend, Nic, Vm, VmSpec};
use ironclad_tests::{
    create_disk, free_port, sha256_prefix, wait_for, write_sample_image, Controller, ImageServer,
};

const IMAGE_SIZE: u64 = 8 * 1024 * 1024;
const DISK_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Port held while a guest runs, so that guests run one at a time across test processes.
const GUEST_LOCK_PORT: u16 = 47391;

/// Holds the one-guest-at-a-time lock until dropped.
struct GuestLock(#[allow(dead_code)] TcpListener);

impl GuestLock {
    fn acquire() -> Result<Self> {
        wait_for(
            "the other QEMU test to finish (guest lock)",
            Duration::from_secs(1800),
            || Ok(TcpListener::bind(("127.0.0.1", GUEST_LOCK_PORT)).ok()),
        )
        .map(GuestLock)
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

fn require_tools(ipxe: bool) -> Result<()> {
    if !on_path("qemu-system-x86_64") {
        bail!("qemu-system-x86_64 is not installed: run scripts/setup (installs qemu-system-x86 and ipxe-qemu)");
    }
    if ipxe
        && !Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom").is_file()
        && !Path::new("/usr/lib/ipxe/qemu/pxe-virtio.rom").is_file()
    {
        bail!("QEMU's iPXE ROMs are missing: run scripts/setup (installs ipxe-qemu)");
    }
    Ok(())
}

fn target_dir() -> Result<PathBuf> {
    let bin = ironclad_tests::bin_dir()?;
    bin.parent()
        .map(Path::to_path_buf)
        .context("no target directory above the test binary")
}

/// The static (musl) agent: `IRONCLAD_STATIC_AGENT` when set (scripts/test sets
/// it), else built here with cargo.
fn static_agent(release: bool) -> Result<PathBuf> {
    if !release {
        if let Some(path) = std::env::var_os("IRONCLAD_STATIC_AGENT") {
            let path = PathBuf::from(path);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args([
        "build",
        "-p",
        "ironclad-agent",
        "--target",
        "x86_64-unknown-linux-musl",
    ]);
    if release {
        command.arg("--release");
    }
    let status = command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo to build the static agent")?;
    if !status.success() {
        bail!(
            "building the static agent failed ({status}); is musl-tools installed (scripts/setup)?"
        );
    }
    let path = target_dir()?
        .join("x86_64-unknown-linux-musl")
        .join(if release { "release" } else { "debug" })
        .join("ironclad-agent");
    if !path.is_file() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}

/// Builds a ramdisk of `profile` in `out` from `agent` (symbols and debug information stripped
/// first: a debug build is 140 MB with it, 16 MB without).
fn build_ramdisk(agent: &Path, profile: Profile, out: &Path) -> Result<Manifest> {
    std::fs::create_dir_all(out)?;
    let stripped = out.join("init.stripped");
    let status = Command::new("objcopy")
        .arg("--strip-all")
        .arg(agent)
        .arg(&stripped)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        std::fs::copy(agent, &stripped).context("copying the agent")?;
    }
    let cache = match std::env::var_os("IRONCLAD_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/ironclad/packages"),
    };
    let manifest = build(&BuildOptions {
        agent: stripped,
        profile,
        output: out.to_owned(),
        kernel_package: None,
        kernel_tree: None,
        firmware_dirs: Vec::new(),
        iso: false,
        config_drive: None,
        cmdline: String::new(),
        cache,
    })
    .with_context(|| format!("building the {} ramdisk", profile.name()))?;
    Ok(manifest)
}

/// Everything on the host side: files, image server, controller.
struct Lab {
    dir: tempfile::TempDir,
    www: PathBuf,
    disk: PathBuf,
    image_sha256: String,
    images: ImageServer,
    controller: Controller,
    controller_port: u16,
    www_port: u16,
}

impl Lab {
    fn new(agent: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let www = dir.path().join("www");
        std::fs::create_dir(&www)?;
        build_ramdisk(agent, Profile::Qemu, &www)?;
        let image_sha256 = write_sample_image(&www.join("disk.raw"), IMAGE_SIZE, 11)?;
        let disk = dir.path().join("node-disk.img");
        create_disk(&disk, DISK_SIZE)?;
        let images = ImageServer::start(&www)?;
        let www_port = port_of(&images.url)?;
        let controller = Controller::start(&dir.path().join("ironclad.sqlite"), &[])?;
        let controller_port = port_of(&controller.url)?;
        Ok(Self {
            dir,
            www,
            disk,
            image_sha256,
            images,
            controller,
            controller_port,
            www_port,
        })
    }

    /// Enrolls a node whose port is `mac`, takes it to `available`, then starts
    /// the deploy; returns its UUID once it waits for the agent.
    fn node_waiting_for_agent(&self, mac: &str) -> Result<String> {
        self.node_waiting_for_agent_with(mac, &self.image_sha256)
    }

    /// Like [`Lab::node_waiting_for_agent`], with the image checksum given.
    fn node_waiting_for_agent_with(&self, mac: &str, checksum: &str) -> Result<String> {
        let api = &self.controller.api;
        // As the guest sees the image server.
        let image = format!("http://10.0.2.2:{}/disk.raw", self.www_port);
        let uuid = api.enroll_available("qemu-node", &image, checksum, mac, STEP_TIMEOUT)?;
        api.provision(&uuid, "deploy")?;
        api.wait_state(&uuid, "wait call-back", &["deploy failed"], STEP_TIMEOUT)?;
        Ok(uuid)
    }

    /// The kernel command line for the agent.
    fn agent_cmdline(&self, agent_port: u16, bootif: &str) -> String {
        format!(
            "console=ttyS0 quiet ipa-api-url=http://10.0.2.2:{} ipa-advertise-host=127.0.0.1 \
             ipa-listen-port={agent_port} ipa-lookup-interval=0.5 BOOTIF={bootif}",
            self.controller_port
        )
    }

    fn spec(
        &self,
        name: &str,
        mac: &str,
        agent_port: u16,
        boot: Boot,
        bootfile: Option<String>,
    ) -> VmSpec {
        VmSpec {
            name: name.to_owned(),
            memory_mib: 256,
            disk: Some(self.disk.clone()),
            nics: vec![Nic {
                mac: mac.to_owned(),
                backend: NetBackend::UserForwarded {
                    bootfile,
                    forwards: vec![(agent_port, agent_port)],
                },
            }],
            boot,
            state_dir: self.dir.path().join("vm"),
            start_paused: false,
            netns: None,
        }
    }
}

fn port_of(url: &str) -> Result<u16> {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .with_context(|| format!("no port in {url}"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Direct kernel boot: DHCP from slirp, lookup, heartbeat, whole-disk deploy,
/// power-off by the agent as PID 1; the node ends `active` with the image on disk.
#[test]
fn ramdisk_boots_in_qemu_and_deploys_the_node() -> Result<()> {
    require_tools(false)?;
    let agent = static_agent(false)?;
    let lab = Lab::new(&agent)?;
    let mac = "52:54:00:c1:00:01";
    let uuid = lab.node_waiting_for_agent(mac)?;
    let agent_port = free_port()?;

    let _lock = GuestLock::acquire()?;
    let rt = runtime()?;
    let started = Instant::now();
    let spec = lab.spec(
        "direct",
        mac,
        agent_port,
        Boot::Kernel {
            kernel: lab.www.join("ironclad.kernel"),
            initrd: lab.www.join("ironclad.initramfs"),
            append: lab.agent_cmdline(agent_port, "01-52-54-00-c1-00-01"),
        },
        None,
    );
    let mut vm = rt.block_on(Vm::start(spec))?;
    rt.block_on(vm.wait_for_serial("starting as PID 1", BOOT_TIMEOUT))?;
    rt.block_on(vm.wait_for_serial("DHCP lease", STEP_TIMEOUT))?;
    rt.block_on(vm.wait_for_serial("first heartbeat sent", STEP_TIMEOUT))?;
    let node = lab
        .controller
        .api
        .wait_state(&uuid, "active", &["deploy failed"], BOOT_TIMEOUT);
    let node = match node {
        Ok(node) => node,
        Err(e) => {
            let serial = vm.serial();
            rt.block_on(vm.kill());
            bail!("{e:#}\nserial console:\n{serial}");
        }
    };
    // The agent powered the guest off itself (sync, then reboot(RB_POWER_OFF)).
    let exited = rt.block_on(vm.wait_exit(STEP_TIMEOUT));
    let serial = vm.serial();
    rt.block_on(vm.kill());
    exited.with_context(|| format!("QEMU did not exit after the deploy:\n{serial}"))?;
    eprintln!(
        "deployed through QEMU in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    assert_eq!(node["last_error"], serde_json::Value::Null);
    assert_eq!(
        sha256_prefix(&lab.disk, IMAGE_SIZE)?,
        lab.image_sha256,
        "the virtio disk must hold exactly the image"
    );
    assert!(serial.contains("loaded module virtio_net"), "{serial}");
    assert!(serial.contains("power off"), "{serial}");
    assert!(!serial.contains("Kernel panic"), "{serial}");
    show_agent_lines(&serial);
    let _ = &lab.images;
    Ok(())
}

/// Network boot: QEMU's iPXE ROM gets a bootfile URL from slirp's DHCP, chains a
/// script from the test's HTTP server, loads kernel + initramfs, and the agent
/// reaches the controller and heartbeats.
#[test]
fn ramdisk_network_boots_through_ipxe_to_the_first_heartbeat() -> Result<()> {
    require_tools(true)?;
    let agent = static_agent(false)?;
    let lab = Lab::new(&agent)?;
    let mac = "52:54:00:c1:00:02";
    let uuid = lab.node_waiting_for_agent(mac)?;
    let agent_port = free_port()?;
    let base = format!("http://10.0.2.2:{}", lab.www_port);
    let script = format!(
        "#!ipxe\nkernel {base}/ironclad.kernel {}\ninitrd {base}/ironclad.initramfs\nboot\n",
        lab.agent_cmdline(agent_port, "01-${net0/mac:hexhyp}")
    );
    std::fs::write(lab.www.join("boot.ipxe"), script)?;

    let _lock = GuestLock::acquire()?;
    let rt = runtime()?;
    let spec = lab.spec(
        "ipxe",
        mac,
        agent_port,
        Boot::Network,
        Some(format!("{base}/boot.ipxe")),
    );
    let mut vm = rt.block_on(Vm::start(spec))?;
    rt.block_on(vm.wait_for_serial("starting as PID 1", BOOT_TIMEOUT))?;
    rt.block_on(vm.wait_for_serial("first heartbeat sent", STEP_TIMEOUT))?;
    let left = wait_for("the node to leave wait call-back", STEP_TIMEOUT, || {
        let node = lab.controller.api.node(&uuid)?;
        Ok((node["provision_state"] != "wait call-back").then_some(node))
    });
    let serial = vm.serial();
    rt.block_on(vm.kill());
    let node = left.with_context(|| format!("serial console:\n{serial}"))?;
    assert_ne!(node["provision_state"], "deploy failed", "{node}");
    // No -kernel was given: reaching PID 1 means iPXE chained kernel and initramfs
    // (iPXE itself prints to the VGA console, not to the serial log).
    assert!(serial.contains("lookup found node"), "{serial}");
    show_agent_lines(&serial);
    Ok(())
}

/// Prints the agent's milestones (visible with `--nocapture`).
fn show_agent_lines(serial: &str) {
    for line in serial.lines().filter(|l| {
        l.contains("ironclad:") || l.contains("DHCP lease") || l.contains("network configured")
    }) {
        eprintln!("  serial: {line}");
    }
}

fn serial_number(serial: &str, before: &str, after: &str) -> Option<u64> {
    let start = serial.find(before)? + before.len();
    let rest = &serial[start..];
    let end = rest.find(after)?;
    rest[..end].trim().parse().ok()
}

/// Benchmark, not a test: builds both profiles from the release agent, reports
/// sizes, then boots the `qemu` profile to the first heartbeat under TCG.
#[test]
#[ignore = "benchmark: run scripts/bench-ramdisk"]
fn benchmark_ramdisk_size_boot_time_and_rss() -> Result<()> {
    require_tools(false)?;
    let agent = static_agent(true)?;
    let out = tempfile::tempdir()?;
    for profile in [Profile::Qemu, Profile::Server] {
        let manifest = build_ramdisk(&agent, profile, &out.path().join(profile.name()))?;
        println!(
            "BENCH {} ramdisk: kernel {} B + initramfs {} B = {} B ({:.1} MiB; budget {:.0} MiB)",
            profile.name(),
            manifest.kernel.size,
            manifest.initramfs.size,
            manifest.total_size,
            manifest.total_size as f64 / 1048576.0,
            manifest.size_budget as f64 / 1048576.0
        );
    }
    let lab = Lab::new(&agent)?;
    let mac = "52:54:00:c1:00:03";
    // A wrong checksum fails the deploy after the write, so the agent stays up
    // (instead of powering the guest off) and its idle memory can be read.
    let _uuid = lab.node_waiting_for_agent_with(mac, &"0".repeat(64))?;
    let agent_port = free_port()?;
    let _lock = GuestLock::acquire()?;
    let rt = runtime()?;
    let spec = lab.spec(
        "bench",
        mac,
        agent_port,
        Boot::Kernel {
            kernel: lab.www.join("ironclad.kernel"),
            initrd: lab.www.join("ironclad.initramfs"),
            append: lab.agent_cmdline(agent_port, "01-52-54-00-c1-00-03"),
        },
        None,
    );
    let started = Instant::now();
    let mut vm = rt.block_on(Vm::start(spec))?;
    rt.block_on(vm.wait_for_serial("first heartbeat sent", BOOT_TIMEOUT))?;
    let total = started.elapsed();
    rt.block_on(vm.wait_for_serial("idle VmRSS", STEP_TIMEOUT))?;
    let serial = vm.serial();
    rt.block_on(vm.kill());
    let agent_ms = serial_number(&serial, "first heartbeat sent ", " ms after /init start");
    let rss_first = serial_number(&serial, "(VmRSS ", " KiB)");
    let rss = serial_number(&serial, "idle VmRSS ", " KiB");
    println!(
        "BENCH QEMU (TCG) start to first heartbeat: {:.2} s (serial log polled every 100 ms)",
        total.as_secs_f64()
    );
    println!("BENCH agent /init start to first heartbeat: {agent_ms:?} ms");
    println!("BENCH agent VmRSS at the first heartbeat: {rss_first:?} KiB");
    println!("BENCH agent idle VmRSS 10 s after the first heartbeat (after a failed 8 MiB image write): {rss:?} KiB");
    for line in serial.lines().filter(|l| l.contains("ironclad:")) {
        println!("  serial: {line}");
    }
    Ok(())
}
