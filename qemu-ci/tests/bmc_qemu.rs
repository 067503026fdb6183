//! The BMC driving a real QEMU (TCG, 64 MiB, an empty disk: SeaBIOS just sits
//! there), over real HTTP.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{config, Client};
use ironclad_qemu_ci::bmc::{Bmc, BootDevice, OverrideEnabled, QemuMachine};
use ironclad_qemu_ci::{Boot, NetBackend, Nic, Qmp, VmSpec};
use serde_json::json;

const SYSTEM: &str = "/redfish/v1/Systems/node-0";

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn process_exists(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

async fn qmp_status(socket: &Path) -> String {
    Qmp::connect(socket).await.unwrap().status().await.unwrap()
}

async fn wait_power(client: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = client.power_state().await;
        if state == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PowerState stayed {state}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redfish_power_and_boot_control_a_real_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let template = VmSpec {
        name: "node-0".into(),
        memory_mib: 64,
        disk: Some(disk),
        nics: vec![Nic {
            mac: "52:54:00:1c:00:00".into(),
            backend: NetBackend::User { bootfile: None },
        }],
        boot: Boot::Disk,
        state_dir: dir.path().join("vm"),
        start_paused: false,
        netns: None,
    };
    let qmp_socket = template.qmp_socket();
    let bmc = Bmc::start(
        config(&dir.path().join("bmc"), Some(("admin", "password")), false),
        QemuMachine::new(template),
    )
    .await
    .unwrap();
    let client = Client::new(&bmc.url(), Some(("admin", "password")));

    // Powered off: no QEMU at all.
    assert_eq!(client.power_state().await, "Off");
    assert_eq!(bmc.snapshot().await.pid, None);

    // On: a QEMU process, running, booting from disk.
    client.reset("On").await;
    let snapshot = bmc.snapshot().await;
    let pid = snapshot.pid.unwrap();
    assert!(process_exists(pid));
    assert_eq!(snapshot.booted_from, Some(BootDevice::Disk));
    assert_eq!(qmp_status(&qmp_socket).await, "running");
    assert_eq!(client.power_state().await, "On");
    let args = cmdline(pid);
    assert!(args.iter().any(|a| a == "tcg"), "{args:?}");
    assert!(
        args.iter()
            .any(|a| a.starts_with("virtio-blk-pci") && a.contains("bootindex=1")),
        "disk boot: {args:?}"
    );

    // ACPI power button: SeaBIOS with no OS ignores it, the machine stays on.
    client.reset("GracefulShutdown").await;
    assert_eq!(client.power_state().await, "On");
    // ForceRestart with no override: an in-place reset of the same process.
    client.reset("ForceRestart").await;
    assert_eq!(bmc.snapshot().await.pid, Some(pid));

    // ForceOff: the process is gone.
    client.reset("ForceOff").await;
    assert!(!process_exists(pid), "QEMU {pid} still exists");
    assert_eq!(client.power_state().await, "Off");

    // Pxe Once, then On: network boot on the command line, override consumed.
    let patch = client
        .patch(
            SYSTEM,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}),
            None,
        )
        .await;
    assert_eq!(patch.status(), 204);
    client.reset("On").await;
    let pid = bmc.snapshot().await.pid.unwrap();
    let args = cmdline(pid);
    assert!(
        args.iter()
            .any(|a| a.starts_with("virtio-net-pci") && a.contains("bootindex=1")),
        "network boot: {args:?}"
    );
    let system = client.get_json(SYSTEM).await;
    assert_eq!(system["Boot"]["BootSourceOverrideEnabled"], "Disabled");
    assert_eq!(bmc.snapshot().await.boot.enabled, OverrideEnabled::Disabled);

    // The next restart boots the disk again, which needs a new process.
    client.reset("ForceRestart").await;
    let restarted = bmc.snapshot().await;
    assert_ne!(restarted.pid, Some(pid));
    assert_eq!(restarted.booted_from, Some(BootDevice::Disk));
    assert!(!process_exists(pid));

    // QEMU ending by itself (as on a guest power-off) reads as Off.
    let pid = restarted.pid.unwrap();
    let mut qmp = Qmp::connect(&qmp_socket).await.unwrap();
    let _ = qmp.execute("quit", None).await;
    wait_power(&client, "Off").await;
    assert!(!process_exists(pid));

    // Wrong credentials are refused.
    let intruder = Client::new(&bmc.url(), Some(("admin", "wrong")));
    assert_eq!(intruder.get(SYSTEM).await.status(), 401);

    // Fault injection: 500, then back to normal.
    let armed = client
        .post("/ironclad-lab/fail-next?count=1", json!({}))
        .await;
    assert_eq!(armed.status(), 200);
    let failed = client
        .post(
            &format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
            json!({"ResetType": "On"}),
        )
        .await;
    assert_eq!(failed.status(), 500);
    assert_eq!(
        client.power_state().await,
        "Off",
        "a failed request did nothing"
    );
    client.reset("On").await;
    let pid = bmc.snapshot().await.pid.unwrap();
    assert_eq!(qmp_status(&qmp_socket).await, "running");

    // Shutting the BMC down powers the node off.
    bmc.shutdown().await;
    assert!(!process_exists(pid));
}

#[tokio::test]
async fn dropping_the_bmc_kills_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let template = VmSpec {
        name: "node-0".into(),
        memory_mib: 64,
        disk: None,
        nics: Vec::new(),
        boot: Boot::Disk,
        state_dir: dir.path().join("vm"),
        start_paused: false,
        netns: None,
    };
    let bmc = Bmc::start(config(dir.path(), None, false), QemuMachine::new(template))
        .await
        .unwrap();
    Client::new(&bmc.url(), None).reset("On").await;
    let pid = bmc.snapshot().await.pid.unwrap();
    assert!(process_exists(pid));
    drop(bmc);
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "QEMU {pid} outlived its BMC");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
