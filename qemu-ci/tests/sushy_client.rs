//! The BMC driven by the real `sushy` Redfish library from PyPI (the one Ironic
//! uses), over HTTPS with a self-signed certificate and Basic auth, with a real
//! QEMU behind it. The virtualenv is cached in ~/.cache/ironclad/venvs/sushy;
//! the test is skipped, loudly, only when PyPI cannot be reached.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::config;
use ironclad_qemu_ci::bmc::{Bmc, OverrideEnabled, PowerState, QemuMachine};
use ironclad_qemu_ci::{Boot, NetBackend, Nic, VmSpec};
use tokio::process::Command;

const SCRIPT: &str = r#"
import json, sys, time
import requests, sushy

url, user, password, system_path, iso_url = sys.argv[1:6]

# Record the headers of every PATCH sushy sends.
patches = []
_request = requests.Session.request
def recording_request(self, method, url, *args, **kwargs):
    if method.upper() == "PATCH":
        patches.append(dict(kwargs.get("headers") or {}))
    return _request(self, method, url, *args, **kwargs)
requests.Session.request = recording_request

def wait_power(system, want):
    deadline = time.time() + 20
    while True:
        system.refresh()
        if system.power_state == want:
            return
        if time.time() > deadline:
            raise SystemExit(f"power state stayed {system.power_state}, wanted {want}")
        time.sleep(0.1)

def lab_state():
    r = requests.get(url + "/ironclad-lab/state", auth=(user, password), verify=False)
    r.raise_for_status()
    return r.json()

try:
    bad = sushy.Sushy(url, username=user, password="wrong", verify=False)
    bad.get_system(system_path)
    raise SystemExit("a wrong password was accepted")
except sushy.exceptions.AccessError:
    print("wrong password refused")

root = sushy.Sushy(url, username=user, password=password, verify=False)
print("redfish version", root.redfish_version)
system = root.get_system(system_path)
assert system.identity == "node-0", system.identity
assert system.power_state == sushy.POWER_STATE_OFF, system.power_state
assert sushy.BOOT_SOURCE_TARGET_PXE in system.get_allowed_system_boot_source_values()
assert sushy.RESET_FORCE_OFF in system.get_allowed_reset_system_values()
assert system.memory_summary.size_gib is not None
macs = sorted(system.ethernet_interfaces.summary)
assert macs == ["52:54:00:1c:00:00", "52:54:00:1c:00:01"], macs
print("system", system.identity, system.uuid, macs)

# Boot override through PATCH (sushy sends If-Match with the ETag).
system.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_PXE,
                               enabled=sushy.BOOT_SOURCE_ENABLED_ONCE)
system.refresh()
assert system.boot.target == sushy.BOOT_SOURCE_TARGET_PXE, system.boot.target
assert system.boot.enabled == sushy.BOOT_SOURCE_ENABLED_ONCE, system.boot.enabled
assert patches and patches[-1].get("If-Match", "").startswith('"'), patches
print("PATCH carried If-Match", patches[-1]["If-Match"])
try:
    system.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_UEFI_HTTP)
    raise SystemExit("a target outside AllowableValues was sent")
except sushy.exceptions.InvalidParameterValueError:
    print("sushy refuses targets the BMC does not allow")

system.reset_system(sushy.RESET_ON)
wait_power(system, sushy.POWER_STATE_ON)
state = lab_state()
assert state["booted_from"] == "Network", state
assert state["pid"], state
assert system.boot.enabled == sushy.BOOT_SOURCE_ENABLED_DISABLED, system.boot.enabled
print("powered on from the network, QEMU pid", state["pid"])

# Virtual media through the manager.
manager = root.get_manager()
cd = manager.virtual_media.get_member(manager.virtual_media.members_identities[0])
cd.insert_media(iso_url, inserted=True, write_protected=True)
cd.refresh()
assert cd.inserted and cd.image == iso_url, (cd.inserted, cd.image)
cd.eject_media()
cd.refresh()
assert not cd.inserted
print("virtual media inserted and ejected")

system.reset_system(sushy.RESET_FORCE_OFF)
wait_power(system, sushy.POWER_STATE_OFF)
print("SUSHY-OK")
"#;

fn venv_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ironclad/venvs/sushy")
}

/// The venv's python with sushy importable, or `None` when PyPI is unreachable.
async fn sushy_python() -> Option<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let works = |python: PathBuf| async move {
        Command::new(python)
            .args(["-c", "import sushy"])
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if works(python.clone()).await {
        return Some(python);
    }
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let created = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .await
        .expect("python3 is needed for the sushy test");
    assert!(created.success(), "python3 -m venv {}", venv.display());
    let install = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "sushy>=5,<6"])
            .output(),
    )
    .await
    .expect("pip install sushy took over 5 minutes")
    .unwrap();
    if !install.status.success() {
        let stderr = String::from_utf8_lossy(&install.stderr);
        let unreachable = [
            "NewConnectionError",
            "Max retries exceeded",
            "Temporary failure in name resolution",
            "Network is unreachable",
            "No matching distribution found",
            "ConnectTimeout",
        ]
        .iter()
        .any(|marker| stderr.contains(marker));
        if unreachable {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 SKIPPED: the sushy test needs PyPI (pip install 'sushy>=5,<6'), \
                 which is unreachable:\n{stderr}\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            let _ = std::fs::remove_dir_all(&venv);
            return None;
        }
        panic!("pip install sushy failed:\n{stderr}");
    }
    assert!(
        works(python.clone()).await,
        "sushy installed but not importable"
    );
    Some(python)
}

#[tokio::test]
async fn sushy_drives_the_bmc_and_a_real_qemu() {
    let Some(python) = sushy_python().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let template = VmSpec {
        name: "node-0".into(),
        memory_mib: 64,
        disk: None,
        nics: vec![
            Nic {
                mac: "52:54:00:1c:00:00".into(),
                backend: NetBackend::User { bootfile: None },
            },
            Nic {
                mac: "52:54:00:1c:00:01".into(),
                backend: NetBackend::User { bootfile: None },
            },
        ],
        boot: Boot::Disk,
        state_dir: dir.path().join("vm"),
        start_paused: false,
        netns: None,
    };
    let bmc = Bmc::start(
        config(&dir.path().join("bmc"), Some(("admin", "password")), true),
        QemuMachine::new(template),
    )
    .await
    .unwrap();
    assert!(bmc.url().starts_with("https://"));
    let iso = dir.path().join("boot.iso");
    std::fs::write(&iso, b"an ISO").unwrap();
    let script = dir.path().join("drive_bmc.py");
    std::fs::write(&script, SCRIPT).unwrap();

    let output = tokio::time::timeout(
        Duration::from_secs(90),
        Command::new(&python)
            .arg(&script)
            .arg(bmc.url())
            .arg("admin")
            .arg("password")
            .arg(bmc.system_path())
            .arg(format!("file://{}", iso.display()))
            .env("PYTHONWARNINGS", "ignore")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the sushy script took over 90 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("SUSHY-OK"),
        "sushy script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
    let snapshot = bmc.snapshot().await;
    assert_eq!(snapshot.power, PowerState::Off);
    assert_eq!(snapshot.pid, None);
    assert_eq!(snapshot.boot.enabled, OverrideEnabled::Disabled);
}
