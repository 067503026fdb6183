//! The `ipmi` hardware type (ipmitool over IPMI 2.0 / RMCP+) against OpenIPMI's
//! `ipmi_sim` serving IPMI over LAN on loopback, through the real controller binary.
//!
//! Needs the Debian packages `ipmitool` and `openipmi`; without them the tests say
//! so and pass without checking anything. The simulated chassis keeps its power
//! state and boot device in files written by a small chassis-control script.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Controller;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CHASSIS: &str = r#"#!/bin/sh
# ipmi_sim chassis control: <device> get <parm>... | <device> set <parm> <value>...
dir=$(dirname "$0")
op=$2
shift 2
case $op in
get)
  while [ -n "$1" ]; do
    case $1 in
      power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
      boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
    esac
    shift
  done ;;
set)
  while [ -n "$1" ]; do echo "$2" > "$dir/$1"; shift 2; done ;;
esac
"#;

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// An `ipmi_sim` BMC on a loopback UDP port, killed by PID on drop.
struct IpmiSim {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl IpmiSim {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let chassis = dir.path().join("chassis");
        std::fs::write(&chassis, CHASSIS).unwrap();
        std::fs::set_permissions(
            &chassis,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let auths = "none md2 md5 straight";
        let conf = format!(
            "name \"ironclad\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr 127.0.0.1 {port}\n\
             \x20   priv_limit admin\n\
             \x20   allowed_auths_callback {auths}\n\
             \x20   allowed_auths_user {auths}\n\
             \x20   allowed_auths_operator {auths}\n\
             \x20   allowed_auths_admin {auths}\n\
             \x20   guid a123456789abcdefa123456789abcdef\n\
             \x20 endlan\n\
             \x20 chassis_control \"{} 0x20\"\n\
             \x20 user 2 true \"admin\" \"secret\" admin 10 {auths}\n",
            chassis.display()
        );
        std::fs::write(dir.path().join("lan.conf"), conf).unwrap();
        std::fs::write(
            dir.path().join("sim.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             mc_enable 0x20\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let child = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("sim.emu"))
            .arg("-s")
            .arg(dir.path().join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sim = Self { child, port, dir };
        // Ready when ipmitool gets an answer.
        let started = Instant::now();
        while !sim.ipmitool(&["power", "status"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "ipmi_sim never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sim
    }

    fn ipmitool(&self, args: &[&str]) -> std::process::Output {
        Command::new("ipmitool")
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args([
                "-U", "admin", "-P", "secret", "-C", "3", "-R", "1", "-N", "1",
            ])
            .args(args)
            .output()
            .unwrap()
    }

    fn state(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn path(&self, name: &str) -> PathBuf {
        Path::new(self.dir.path()).join(name)
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ipmi_node(sim: &IpmiSim, password: &str) -> Value {
    json!({"driver": "ipmi", "driver_info": {
        "ipmi_address": "127.0.0.1", "ipmi_port": sim.port,
        "ipmi_username": "admin", "ipmi_password": password,
        // ipmi_sim has no cipher suite discovery: name one.
        "ipmi_cipher_suite": 3
    }})
}

async fn wait_node(c: &Controller, node: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, shown) = c.get(&format!("/v1/nodes/{node}")).await;
        if shown["reservation"].is_null() && check(&shown) {
            return shown;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node {node}: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn ipmi_nodes_are_verified_powered_and_boot_from_the_chosen_device() {
    assert!(
        installed("ipmi_sim") && installed("ipmitool"),
        "needs ipmi_sim and ipmitool: run ./scripts/setup (Debian packages openipmi, ipmitool)"
    );
    let sim = IpmiSim::start();
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &["--power-state-change-timeout", "20"]);

    let node = c.create_node(ipmi_node(&sim, "secret")).await;
    let (_, shown) = c.get(&format!("/v1/nodes/{node}")).await;
    assert_eq!(shown["power_interface"], "ipmitool");
    assert_eq!(shown["driver_info"]["ipmi_password"], "******");
    c.provision(&node, "manage").await;
    let shown = wait_node(&c, &node, |n| n["provision_state"] != "verifying").await;
    assert_eq!(shown["provision_state"], "manageable", "{shown}");
    assert_eq!(shown["power_state"], "power off");

    for (target, file, reached) in [
        ("power on", "1", "power on"),
        ("rebooting", "1", "power on"),
        ("power off", "0", "power off"),
    ] {
        let (status, body) = c
            .put(
                &format!("/v1/nodes/{node}/states/power"),
                json!({"target": target}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let shown = wait_node(&c, &node, |n| n["target_power_state"].is_null()).await;
        assert_eq!(shown["power_state"], reached, "{target}: {shown}");
        assert!(shown["last_error"].is_null(), "{shown}");
        assert_eq!(sim.state("power"), file, "{target}");
    }

    let path = format!("/v1/nodes/{node}/management/boot_device");
    let (status, body) = c
        .put(&path, json!({"boot_device": "pxe", "persistent": true}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(sim.state("boot"), "pxe");
    let (_, shown) = c.get(&path).await;
    assert_eq!(shown["boot_device"], "pxe", "{shown}");
    let (status, body) = c.put(&path, json!({"boot_device": "disk"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, shown) = c.get(&path).await;
    assert_eq!(shown["boot_device"], "disk", "{shown}");
}

#[tokio::test]
async fn a_wrong_ipmi_password_ends_in_last_error() {
    assert!(
        installed("ipmi_sim") && installed("ipmitool"),
        "needs ipmi_sim and ipmitool: run ./scripts/setup (Debian packages openipmi, ipmitool)"
    );
    let sim = IpmiSim::start();
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);
    let node = c.create_node(ipmi_node(&sim, "wrong")).await;
    c.provision(&node, "manage").await;
    let shown = wait_node(&c, &node, |n| n["provision_state"] != "verifying").await;
    assert_eq!(shown["provision_state"], "enroll", "{shown}");
    let error = shown["last_error"].as_str().unwrap();
    assert!(error.contains("ipmi_password"), "{error}");
}
