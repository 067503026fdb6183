//! Driver composition over the API, and the `ipxe` boot interface: the scripts the
//! controller serves per node and mode, and the files of `--http-root`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::Controller;
use reqwest::StatusCode;
use serde_json::json;

const MAC: &str = "52:54:00:12:34:56";

async fn text(url: String) -> (StatusCode, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn interfaces_default_validate_and_reject_what_the_type_does_not_support() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &["--default-interface", "inspect=no-inspect"]);

    let node = c.create_node(json!({"driver": "redfish"})).await;
    let (_, shown) = c.get(&format!("/v1/nodes/{node}")).await;
    assert_eq!(shown["power_interface"], "redfish");
    assert_eq!(
        shown["inspect_interface"], "no-inspect",
        "configured default"
    );
    assert_eq!(shown["deploy_interface"], "direct");
    assert_eq!(shown["network_interface"], "flat");
    let (status, validation) = c.get(&format!("/v1/nodes/{node}/validate")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(validation["power"]["result"], false);
    assert!(validation["power"]["reason"]
        .as_str()
        .unwrap()
        .contains("redfish_address"));
    assert_eq!(validation["boot"]["result"], false);
    assert!(validation["boot"]["reason"]
        .as_str()
        .unwrap()
        .contains("deploy_kernel"));
    assert_eq!(validation["vendor"]["result"], true);
    assert!(validation["vendor"].get("reason").is_none());

    let (status, body) = c
        .post(
            "/v1/nodes",
            json!({"driver": "redfish", "power_interface": "ipmitool"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = Controller::fault(&body);
    assert!(
        message.contains("power_interface") && message.contains("allowed: redfish"),
        "{message}"
    );
    let (status, body) = c
        .patch(
            &format!("/v1/nodes/{node}"),
            json!([{"op": "replace", "path": "/boot_interface", "value": "pxe"}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(Controller::fault(&body).contains("allowed: ipxe"));

    // A new hardware type brings its own defaults, except what the patch sets.
    let (status, body) = c
        .patch(
            &format!("/v1/nodes/{node}"),
            json!([
                {"op": "replace", "path": "/driver", "value": "ipmi"},
                {"op": "replace", "path": "/network_interface", "value": "noop"}
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["power_interface"], "ipmitool");
    assert_eq!(body["management_interface"], "ipmitool");
    assert_eq!(body["network_interface"], "noop");
    let (_, validation) = c.get(&format!("/v1/nodes/{node}/validate")).await;
    assert!(validation["power"]["reason"]
        .as_str()
        .unwrap()
        .contains("ipmi_address"));

    let manual = c.create_node(json!({"driver": "manual-management"})).await;
    let (_, shown) = c.get(&format!("/v1/nodes/{manual}")).await;
    assert_eq!(shown["power_interface"], "fake");
    assert_eq!(shown["management_interface"], "noop");

    let (_, drivers) = c.get("/v1/drivers").await;
    assert_eq!(drivers["drivers"].as_array().unwrap().len(), 4, "{drivers}");
    assert_eq!(drivers["drivers"][0]["type"], "dynamic");
}

#[tokio::test]
async fn ipxe_scripts_follow_what_the_node_is_doing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("httpboot");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("agent.kernel"), b"kernel bytes").unwrap();
    std::fs::write(dir.path().join("secret"), b"no").unwrap();
    let c = Controller::start(
        dir.path(),
        &[
            "--http-root",
            root.to_str().unwrap(),
            "--public-url",
            "http://ctl.example:6385",
        ],
    );
    let node = c
        .create_node(json!({
            "driver": "fake-hardware", "boot_interface": "ipxe",
            "driver_info": {
                "deploy_kernel": "agent.kernel",
                "deploy_ramdisk": "https://images.example/agent.initramfs",
                "kernel_append_params": "console=ttyS0 ipa-debug=1"
            },
            "instance_info": {"image_source": "http://x/img.raw", "image_checksum": "abc"}
        }))
        .await;
    let (status, body) = c
        .post("/v1/ports", json!({"node_uuid": node, "address": MAC}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The generic script walks every NIC.
    let (status, chain) = text(format!("{}/boot.ipxe", c.url)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(chain.starts_with("#!ipxe\n"));
    assert!(chain.lines().any(|l| l
        == "chain --autofree http://ctl.example:6385/ipxe/${net${netid}/mac} || goto next_nic"));

    // Enrolled, not booting anything: the local disk.
    let (_, script) = text(format!("{}/ipxe/{MAC}", c.url)).await;
    assert!(
        script
            .lines()
            .any(|l| l.starts_with("sanboot --no-describe --drive 0x80")),
        "{script}"
    );
    assert!(script.lines().any(|l| l == "exit 0"));
    assert!(!script.contains("kernel "));

    // Deploying: the ramdisk, with the agent's kernel parameters.
    c.provision(&node, "manage").await;
    c.wait_state(&node, "manageable").await;
    c.provision(&node, "provide").await;
    c.wait_state(&node, "available").await;
    c.provision(&node, "active").await;
    c.wait_state(&node, "wait call-back").await;
    for ident in [MAC.to_uppercase(), node.clone()] {
        let (_, script) = text(format!("{}/ipxe/{ident}", c.url)).await;
        let kernel = script
            .lines()
            .find(|l| l.starts_with("kernel "))
            .unwrap_or_else(|| panic!("no kernel line in {script}"));
        assert!(
            kernel.starts_with(
                "kernel http://ctl.example:6385/httpboot/agent.kernel console=ttyS0 ipa-debug=1 "
            ),
            "{kernel}"
        );
        for arg in [
            "ipa-api-url=http://ctl.example:6385",
            "BOOTIF=${mac}",
            "initrd=deploy_ramdisk",
        ] {
            assert!(kernel.split(' ').any(|a| a == arg), "{arg} in {kernel}");
        }
        assert!(kernel.contains(" ipa-global-request-id=req-"), "{kernel}");
        assert!(kernel.ends_with("|| goto retry"));
        assert!(script.lines().any(|l| l == "initrd --name deploy_ramdisk https://images.example/agent.initramfs || goto retry"), "{script}");
        assert!(script.lines().any(|l| l == "boot"));
    }

    // Unknown MACs and garbage boot nothing and fail, so boot.ipxe tries the next NIC.
    for ident in ["52:54:00:ff:ff:ff", "not-a-mac"] {
        let (status, script) = text(format!("{}/ipxe/{ident}", c.url)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !script.contains("kernel") && !script.contains("sanboot"),
            "{script}"
        );
        assert!(script.lines().any(|l| l == "exit 1"), "{script}");
    }

    // Boot from an iSCSI volume once deployed.
    c.provision(&node, "deleted").await;
    c.wait_state(&node, "available").await;
    let (status, body) = c
        .patch(
            &format!("/v1/nodes/{node}"),
            json!([{"op": "add", "path": "/instance_info/iscsi_boot", "value": {
                "target_portal": "10.0.0.9:3260", "target_iqn": "iqn.2026-11.test:boot",
                "target_lun": 1, "auth_username": "chap", "auth_password": "s3cret",
                "initiator_iqn": "iqn.2026-11.test:node"
            }}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, script) = text(format!("{}/ipxe/{MAC}", c.url)).await;
    for line in [
        "set username chap",
        "set password s3cret",
        "set initiator-iqn iqn.2026-11.test:node",
        "sanhook --drive 0x80 iscsi:10.0.0.9::3260:1:iqn.2026-11.test:boot || goto fail_iscsi_retry",
        "sanboot --no-describe || goto fail_iscsi_retry",
    ] {
        assert!(script.lines().any(|l| l == line), "{line} in {script}");
    }

    // The HTTP root serves files and nothing outside it.
    let (status, body) = text(format!("{}/httpboot/agent.kernel", c.url)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "kernel bytes"));
    for path in ["../secret", "%2e%2e/secret", "missing"] {
        let (status, _) = text(format!("{}/httpboot/{path}", c.url)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}
