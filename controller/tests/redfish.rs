//! The `redfish` hardware type against the real `sushy-emulator --fake` from PyPI,
//! through the real controller binary. The fake driver applies power changes
//! after a random 1–11 s, so these tests poll rather than sleep.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};

use common::sushy::{FakeSystem, Sushy, SYSTEM_A, SYSTEM_B};
use common::Controller;
use reqwest::StatusCode;
use serde_json::{json, Value};

const FAST_RETRIES: &[&str] = &[
    "--redfish-connection-attempts",
    "3",
    "--redfish-retry-interval",
    "0.2",
    "--power-state-change-timeout",
    "40",
];

fn redfish_node(sushy: &Sushy, system: Option<&FakeSystem>, password: &str) -> Value {
    let mut info = json!({
        "redfish_address": sushy.url,
        "redfish_username": "admin",
        "redfish_password": password,
        "deploy_kernel": "http://127.0.0.1:1/agent.kernel",
        "deploy_ramdisk": "http://127.0.0.1:1/agent.initramfs",
    });
    if let Some(system) = system {
        info["redfish_system_id"] = json!(format!("/redfish/v1/Systems/{}", system.uuid));
    }
    json!({"driver": "redfish", "driver_info": info})
}

/// Polls the node until `check` holds and its lock is free.
async fn wait_node(
    c: &Controller,
    node: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (_, shown) = c.get(&format!("/v1/nodes/{node}")).await;
        if shown["reservation"].is_null() && check(&shown) {
            return shown;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node {node} never got {what}; last seen: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn power(c: &Controller, node: &str, target: &str) {
    let (status, body) = c
        .put(
            &format!("/v1/nodes/{node}/states/power"),
            json!({"target": target, "timeout": 40}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn redfish_nodes_are_verified_powered_and_boot_from_the_chosen_device() {
    let sushy = Sushy::start(&[SYSTEM_A], Some(("admin", "secret")));
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), FAST_RETRIES);

    // One system on the BMC: the system id may be left out.
    let node = c.create_node(redfish_node(&sushy, None, "secret")).await;
    let (_, shown) = c.get(&format!("/v1/nodes/{node}")).await;
    assert_eq!(shown["power_interface"], "redfish");
    assert_eq!(shown["management_interface"], "redfish");
    assert_eq!(shown["boot_interface"], "ipxe");
    assert_eq!(shown["driver_info"]["redfish_password"], "******");
    let (status, validation) = c.get(&format!("/v1/nodes/{node}/validate")).await;
    assert_eq!(status, StatusCode::OK);
    for kind in ["power", "management", "boot", "deploy", "network"] {
        assert_eq!(validation[kind]["result"], true, "{kind}: {validation}");
    }

    c.provision(&node, "manage").await;
    let shown = wait_node(&c, &node, "manageable", |n| {
        n["provision_state"] != "verifying"
    })
    .await;
    assert_eq!(shown["provision_state"], "manageable", "{shown}");
    assert_eq!(shown["power_state"], "power off");

    power(&c, &node, "power on").await;
    let shown = wait_node(&c, &node, "power on", |n| n["target_power_state"].is_null()).await;
    assert_eq!(shown["power_state"], "power on", "{shown}");
    assert!(shown["last_error"].is_null(), "{shown}");
    assert_eq!(sushy.system(&SYSTEM_A).await["PowerState"], "On");

    let path = format!("/v1/nodes/{node}/management/boot_device");
    let (status, body) = c
        .put(&path, json!({"boot_device": "pxe", "persistent": false}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        sushy.system(&SYSTEM_A).await["Boot"]["BootSourceOverrideTarget"],
        "Pxe"
    );
    let (status, body) = c.put(&path, json!({"boot_device": "cdrom"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, shown) = c.get(&path).await;
    assert_eq!(shown["boot_device"], "cdrom", "{shown}");
    let (status, body) = c.put(&path, json!({"boot_device": "floppy"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    power(&c, &node, "power off").await;
    let shown = wait_node(&c, &node, "power off", |n| {
        n["target_power_state"].is_null()
    })
    .await;
    assert_eq!(shown["power_state"], "power off", "{shown}");
    assert_eq!(sushy.system(&SYSTEM_A).await["PowerState"], "Off");

    // Inventory read out of band: properties merged, a port per NIC.
    let (status, body) = c
        .patch(
            &format!("/v1/nodes/{node}"),
            json!([{"op": "add", "path": "/properties/capabilities", "value": "boot_mode:bios,secure_boot:false"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    c.provision(&node, "inspect").await;
    let shown = wait_node(&c, &node, "inspected", |n| {
        n["provision_state"] != "inspecting"
    })
    .await;
    assert_eq!(shown["provision_state"], "manageable", "{shown}");
    assert_eq!(
        shown["properties"]["capabilities"],
        "boot_mode:uefi,secure_boot:false"
    );
    assert_eq!(shown["properties"]["vendor"], "Sushy Emulator");
    assert!(!shown["inspection_finished_at"].is_null());
    let (_, ports) = c.get(&format!("/v1/nodes/{node}/ports")).await;
    assert_eq!(ports["ports"][0]["address"], SYSTEM_A.mac, "{ports}");

    let (_, drivers) = c.get("/v1/drivers").await;
    let names: Vec<&str> = drivers["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"redfish") && names.contains(&"ipmi"),
        "{names:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_and_ambiguous_systems_end_in_last_error() {
    let sushy = Sushy::start(&[SYSTEM_A, SYSTEM_B], Some(("admin", "secret")));
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), FAST_RETRIES);

    let wrong = c
        .create_node(redfish_node(&sushy, Some(&SYSTEM_A), "not-the-password"))
        .await;
    c.provision(&wrong, "manage").await;
    let shown = c.wait_state(&wrong, "enroll").await;
    let error = shown["last_error"].as_str().unwrap();
    assert!(
        error.contains("refused the credentials") && error.contains("redfish_password"),
        "{error}"
    );

    let ambiguous = c.create_node(redfish_node(&sushy, None, "secret")).await;
    c.provision(&ambiguous, "manage").await;
    let shown = c.wait_state(&ambiguous, "enroll").await;
    let error = shown["last_error"].as_str().unwrap();
    assert!(
        error.contains("redfish_system_id") && error.contains(SYSTEM_B.uuid),
        "{error}"
    );

    // A system the BMC does not have.
    let mut body = redfish_node(&sushy, Some(&SYSTEM_A), "secret");
    body["driver_info"]["redfish_system_id"] = json!("/redfish/v1/Systems/missing");
    let missing = c.create_node(body).await;
    c.provision(&missing, "manage").await;
    let shown = c.wait_state(&missing, "enroll").await;
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap()
            .contains("/redfish/v1/Systems/missing"),
        "{shown}"
    );
}

#[tokio::test]
async fn an_unreachable_bmc_is_retried_then_reported() {
    let mut sushy = Sushy::start(&[SYSTEM_A], None);
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), FAST_RETRIES);
    let node = c
        .create_node(redfish_node(&sushy, Some(&SYSTEM_A), ""))
        .await;
    c.provision(&node, "manage").await;
    c.wait_state(&node, "manageable").await;

    // Down for good: every attempt fails and last_error says so.
    sushy.stop();
    let started = Instant::now();
    power(&c, &node, "power on").await;
    let shown = wait_node(&c, &node, "an error", |n| !n["last_error"].is_null()).await;
    let error = shown["last_error"].as_str().unwrap();
    assert!(
        error.contains("after 3 attempts") && error.contains(&sushy.url),
        "{error}"
    );
    // 0.2 s then 0.4 s of back-off between the three attempts.
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(shown["target_power_state"].is_null());

    // Back within the retries: the request goes through.
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        sushy.restart();
        sushy
    });
    power(&c, &node, "power on").await;
    let shown = wait_node(&c, &node, "power on", |n| n["target_power_state"].is_null()).await;
    let sushy = restart.join().unwrap();
    assert_eq!(shown["power_state"], "power on", "{shown}");
    sushy.wait_power(&SYSTEM_A, "On").await;
}

#[tokio::test]
async fn deploy_boots_the_ramdisk_over_pxe_and_undeploy_powers_off() {
    let sushy = Sushy::start(&[SYSTEM_A], None);
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), FAST_RETRIES);
    let node = c
        .create_node(redfish_node(&sushy, Some(&SYSTEM_A), ""))
        .await;
    let (status, body) = c
        .post(
            "/v1/ports",
            json!({"node_uuid": node, "address": SYSTEM_A.mac}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    c.provision(&node, "manage").await;
    c.wait_state(&node, "manageable").await;
    c.provision(&node, "provide").await;
    c.wait_state(&node, "available").await;
    c.patch(
        &format!("/v1/nodes/{node}"),
        json!([
            {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:1/img.raw"},
            {"op": "add", "path": "/instance_info/image_checksum", "value": "abc"}
        ]),
    )
    .await;
    c.provision(&node, "active").await;
    let shown = wait_node(&c, &node, "wait call-back", |n| {
        n["provision_state"] != "deploying"
    })
    .await;
    assert_eq!(shown["provision_state"], "wait call-back", "{shown}");
    assert_eq!(shown["power_state"], "power on");
    let system = sushy.system(&SYSTEM_A).await;
    assert_eq!(system["PowerState"], "On");
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Pxe");

    // The node's iPXE script now boots the deploy ramdisk.
    let script = reqwest::get(format!("{}/ipxe/{}", c.url, SYSTEM_A.mac))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        script.contains("kernel http://127.0.0.1:1/agent.kernel"),
        "{script}"
    );

    c.provision(&node, "deleted").await;
    let shown = c.wait_state(&node, "available").await;
    assert_eq!(shown["power_state"], "power off", "{shown}");
    assert_eq!(sushy.system(&SYSTEM_A).await["PowerState"], "Off");
}

#[tokio::test]
async fn deploy_over_virtual_media_inserts_the_iso_and_boots_the_cd() {
    let sushy = Sushy::start(&[SYSTEM_B], None);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("httpboot");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("agent.iso"), vec![0u8; 64 * 1024]).unwrap();
    let mut args = FAST_RETRIES.to_vec();
    args.extend(["--http-root", root.to_str().unwrap()]);
    let c = Controller::start(dir.path(), &args);
    let mut body = redfish_node(&sushy, Some(&SYSTEM_B), "");
    body["boot_interface"] = json!("redfish-virtual-media");
    let node = c.create_node(body).await;
    let (_, validation) = c.get(&format!("/v1/nodes/{node}/validate")).await;
    assert_eq!(validation["boot"]["result"], false, "{validation}");
    assert!(validation["boot"]["reason"]
        .as_str()
        .unwrap()
        .contains("deploy_iso"));
    c.patch(
        &format!("/v1/nodes/{node}"),
        json!([
            {"op": "add", "path": "/driver_info/deploy_iso", "value": "agent.iso"},
            {"op": "add", "path": "/instance_info/image_source", "value": "http://127.0.0.1:1/img.raw"},
            {"op": "add", "path": "/instance_info/image_checksum", "value": "abc"}
        ]),
    )
    .await;
    for (target, state) in [("manage", "manageable"), ("provide", "available")] {
        c.provision(&node, target).await;
        c.wait_state(&node, state).await;
    }
    c.provision(&node, "active").await;
    let shown = wait_node(&c, &node, "wait call-back", |n| {
        n["provision_state"] != "deploying"
    })
    .await;
    assert_eq!(shown["provision_state"], "wait call-back", "{shown}");
    let cd = sushy
        .get(&format!(
            "/redfish/v1/Systems/{}/VirtualMedia/Cd",
            SYSTEM_B.uuid
        ))
        .await;
    assert_eq!(cd["Inserted"], true, "{cd}");
    assert_eq!(cd["Image"], format!("{}/httpboot/agent.iso", c.url));
    let system = sushy.system(&SYSTEM_B).await;
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Cd");
    assert_eq!(system["PowerState"], "On");

    c.provision(&node, "deleted").await;
    c.wait_state(&node, "available").await;
    let cd = sushy
        .get(&format!(
            "/redfish/v1/Systems/{}/VirtualMedia/Cd",
            SYSTEM_B.uuid
        ))
        .await;
    assert_eq!(cd["Inserted"], false, "{cd}");
}

/// A STAND-IN agent (an in-test axum server shaped like the agent's command API):
/// every command succeeds at once. Only the BMC side is under test here.
async fn stand_in_agent() -> (String, Arc<Mutex<Vec<String>>>) {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = received.clone();
    let post = move |Json(body): Json<Value>| {
        let seen = seen.clone();
        async move {
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            seen.lock().unwrap().push(name.clone());
            let result = match name.as_str() {
                "deploy.get_deploy_steps" => json!({"deploy_steps": {"GenericHardwareManager": [
                    {"step": "write_image", "priority": 80, "interface": "deploy", "reboot_requested": false}]},
                    "hardware_manager_version": {"generic_hardware_manager": "1.2"}}),
                "standby.get_partition_uuids" => json!({"root uuid": "0xabcd"}),
                _ => Value::Null,
            };
            Json(
                json!({"id": name, "command_name": name.rsplit('.').next().unwrap_or_default(),
                "command_status": "SUCCEEDED", "command_error": null, "command_result": result}),
            )
        }
    };
    let list = || async {
        Json(
            json!({"commands": [{"id": "w", "command_name": "execute_deploy_step",
            "command_status": "SUCCEEDED", "command_error": null,
            "command_result": {"deploy_result": null, "deploy_step": {"step": "write_image"}}}]}),
        )
    };
    let app = Router::new().route("/v1/commands/", get(list).post(post));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn the_end_of_a_deploy_powers_off_boots_the_disk_and_powers_on() {
    let sushy = Sushy::start(&[SYSTEM_A], None);
    let dir = tempfile::tempdir().unwrap();
    let mut args = FAST_RETRIES.to_vec();
    args.push("--allow-insecure-agent");
    let c = Controller::start(dir.path(), &args);
    let mut body = redfish_node(&sushy, Some(&SYSTEM_A), "");
    body["instance_info"] = json!({"image_source": "http://127.0.0.1:1/img.raw",
        "image_checksum": "abc"});
    let node = c.create_node(body).await;
    c.post(
        "/v1/ports",
        json!({"node_uuid": node, "address": SYSTEM_A.mac}),
    )
    .await;
    for (target, state) in [("manage", "manageable"), ("provide", "available")] {
        c.provision(&node, target).await;
        c.wait_state(&node, state).await;
    }
    c.provision(&node, "active").await;
    wait_node(&c, &node, "wait call-back", |n| {
        n["provision_state"] == "wait call-back"
    })
    .await;
    assert_eq!(
        sushy.system(&SYSTEM_A).await["Boot"]["BootSourceOverrideTarget"],
        "Pxe"
    );

    let (agent_url, received) = stand_in_agent().await;
    let (_, lookup) = c
        .get(&format!("/v1/lookup?addresses={}", SYSTEM_A.mac))
        .await;
    let token = lookup["config"]["agent_token"].as_str().unwrap().to_owned();
    let beat = json!({"callback_url": agent_url, "agent_token": token, "agent_version": "0.1.0"});
    for _ in 0..2 {
        let (status, body) = c.post(&format!("/v1/heartbeat/{node}"), beat.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        wait_node(&c, &node, "the heartbeat handled", |_| true).await;
    }
    let shown = wait_node(&c, &node, "active", |n| {
        n["provision_state"] != "wait call-back"
    })
    .await;
    assert_eq!(shown["provision_state"], "active", "{shown}");
    assert_eq!(shown["power_state"], "power on");
    assert!(received
        .lock()
        .unwrap()
        .iter()
        .any(|n| n == "standby.power_off"));
    let system = sushy.system(&SYSTEM_A).await;
    assert_eq!(system["PowerState"], "On");
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Hdd");
}

#[tokio::test]
async fn tls_is_verified_by_default_against_a_ca_file_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_path = dir.path().join("bmc.pem");
    let key_path = dir.path().join("bmc.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let sushy = Sushy::start_with(&[SYSTEM_A], None, Some((&cert_path, &key_path)));
    assert!(sushy.url.starts_with("https://"));
    let c = Controller::start(dir.path(), FAST_RETRIES);

    let mut nodes = Vec::new();
    for verify in [
        json!(null),
        json!(cert_path.to_str().unwrap()),
        json!("false"),
    ] {
        let mut body = redfish_node(&sushy, Some(&SYSTEM_A), "");
        if !verify.is_null() {
            body["driver_info"]["redfish_verify_ca"] = verify;
        }
        let node = c.create_node(body).await;
        c.provision(&node, "manage").await;
        nodes.push(node);
    }
    // Default: the self-signed certificate is not trusted.
    let shown = c.wait_state(&nodes[0], "enroll").await;
    let error = shown["last_error"].as_str().unwrap();
    assert!(error.contains(&sushy.url), "{error}");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // Trusted through the CA file, or not checked at all.
    for node in &nodes[1..] {
        let shown = c.wait_state(node, "manageable").await;
        assert_eq!(shown["power_state"], "power off", "{shown}");
    }
}
