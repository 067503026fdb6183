//! The `ironclad-qemu` binary: `up` brings nodes up behind BMCs in a network
//! namespace, prints them, and tears everything down on SIGTERM. Needs root.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use ironclad_qemu_ci::network;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Kills the lab process and removes its namespace however the test ends.
struct LabGuard {
    child: Child,
    namespace: String,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        // SIGTERM first, so that the lab stops its QEMUs; SIGKILL if it hangs.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.start_kill();
        let _ = network::cleanup_leftovers(&self.namespace);
    }
}

fn process_exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// Reads stdout lines until they form one JSON document.
async fn read_json(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let mut text = String::new();
    let deadline = Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout(deadline, lines.next_line())
            .await
            .expect("ironclad-qemu printed nothing in 30 s")
            .unwrap()
            .expect("ironclad-qemu closed its output");
        text.push_str(&line);
        if let Ok(value) = serde_json::from_str(&text) {
            return value;
        }
    }
}

fn lab(args: &[&str], state_dir: &std::path::Path, namespace: &str) -> LabGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_ironclad-qemu"))
        .arg("up")
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--nodes", "2", "--memory-mib", "64", "--disk-size-gib", "1"])
        .args(["--bmc-port-base", "0", "--netns-name", namespace])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    LabGuard {
        child,
        namespace: namespace.to_owned(),
    }
}

#[tokio::test]
async fn up_serves_bmcs_in_a_namespace_and_tears_down_on_sigterm() {
    assert!(
        network::is_root(),
        "this test creates a network namespace and needs root"
    );
    let dir = tempfile::tempdir().unwrap();
    let namespace = format!("icl-lab-{}", std::process::id() % 100_000);
    let mut guard = lab(
        &["--json", "--password", "pw", "--network", "netns"],
        dir.path(),
        &namespace,
    );
    let mut lines = BufReader::new(guard.child.stdout.take().unwrap()).lines();
    let table = read_json(&mut lines).await;
    assert_eq!(table["namespace"], namespace.as_str());
    let nodes = table["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1]["macs"][0], "52:54:00:1c:01:00");
    let disk = std::path::PathBuf::from(nodes[0]["disk"].as_str().unwrap());
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(meta.len(), 1 << 30);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) < 64,
        "the disk is sparse"
    );
    assert!(network::namespaces().unwrap().contains(&namespace));

    let http = reqwest::Client::new();
    let bmc = nodes[0]["bmc_url"].as_str().unwrap();
    let system = format!("{bmc}{}", nodes[0]["system_id"].as_str().unwrap());
    let off: Value = http
        .get(&system)
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(off["PowerState"], "Off", "nodes start powered off");
    let on = http
        .post(format!("{system}/Actions/ComputerSystem.Reset"))
        .basic_auth("admin", Some("pw"))
        .json(&serde_json::json!({"ResetType": "On"}))
        .send()
        .await
        .unwrap();
    assert_eq!(on.status(), 204);
    let state: Value = http
        .get(format!("{bmc}/ironclad-lab/state"))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["power_state"], "On");
    let pid = state["pid"].as_u64().unwrap() as u32;
    let qemu_log = std::fs::read_to_string(dir.path().join("node-0/node-0.qemu.log")).unwrap();
    assert!(qemu_log.trim().is_empty(), "QEMU complained: {qemu_log}");
    let identify = std::process::Command::new("ip")
        .args(["netns", "identify", &pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&identify.stdout).trim(),
        namespace,
        "QEMU runs inside the lab's namespace"
    );

    let lab_pid = guard.child.id().unwrap();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &lab_pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(20), guard.child.wait())
        .await
        .expect("the lab did not stop within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_exists(pid) {
        assert!(Instant::now() < deadline, "QEMU {pid} outlived the lab");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !network::namespaces().unwrap().contains(&namespace),
        "the namespace is removed"
    );
}

#[tokio::test]
async fn print_enrollment_gives_ironic_node_bodies_with_ports() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = format!("icl-enr-{}", std::process::id() % 100_000);
    let mut guard = lab(
        &[
            "--print-enrollment",
            "--password",
            "pw",
            "--tls",
            "--network",
            "user",
        ],
        dir.path(),
        &namespace,
    );
    let mut lines = BufReader::new(guard.child.stdout.take().unwrap()).lines();
    let enrollment = read_json(&mut lines).await;
    let nodes = enrollment["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let node = &nodes[0];
    assert_eq!(node["driver"], "redfish");
    let info = &node["driver_info"];
    assert!(info["redfish_address"]
        .as_str()
        .unwrap()
        .starts_with("https://127.0.0.1:"));
    assert_eq!(info["redfish_system_id"], "/redfish/v1/Systems/node-0");
    assert_eq!(info["redfish_username"], "admin");
    assert_eq!(info["redfish_password"], "pw");
    assert_eq!(info["redfish_verify_ca"], false);
    assert_eq!(node["ports"][0]["address"], "52:54:00:1c:00:00");
    // The address answers Redfish over HTTPS.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let root: Value = http
        .get(format!(
            "{}/redfish/v1/",
            info["redfish_address"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["Systems"]["@odata.id"], "/redfish/v1/Systems");
    drop(guard);
}
