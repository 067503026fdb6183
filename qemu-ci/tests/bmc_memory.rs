//! The BMC's Redfish surface and state machine over real HTTP, driving an
//! in-memory machine (no QEMU): fast checks of every rule.

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, Client};
use ironclad_qemu_ci::bmc::{Bmc, BootDevice, MemoryMachine, OverrideEnabled, OverrideTarget};
use serde_json::json;

const SYSTEM: &str = "/redfish/v1/Systems/node-0";

async fn bmc(obeys_acpi: bool) -> (tempfile::TempDir, MemoryMachine, Bmc<MemoryMachine>, Client) {
    let dir = tempfile::tempdir().unwrap();
    let machine = MemoryMachine::new(obeys_acpi);
    let bmc = Bmc::start(config(dir.path(), None, false), machine.clone())
        .await
        .unwrap();
    let client = Client::new(&bmc.url(), None);
    (dir, machine, bmc, client)
}

#[tokio::test]
async fn resources_are_shaped_as_sushy_expects() {
    let (_dir, _machine, _bmc, client) = bmc(true).await;
    let root = client.get_json("/redfish/v1/").await;
    assert_eq!(root["Systems"]["@odata.id"], "/redfish/v1/Systems");
    assert_eq!(root["Managers"]["@odata.id"], "/redfish/v1/Managers");
    assert_eq!(root["Chassis"]["@odata.id"], "/redfish/v1/Chassis");
    assert!(root["RedfishVersion"].is_string() && root["UUID"].is_string());
    assert_eq!(client.get_json("/redfish/v1").await, root);

    let systems = client.get_json("/redfish/v1/Systems").await;
    assert_eq!(systems["Members"][0]["@odata.id"], SYSTEM);
    assert_eq!(systems["Members@odata.count"], 1);

    let response = client.get(SYSTEM).await;
    assert!(response.headers().get("etag").is_some(), "ETag header");
    let system: serde_json::Value = response.json().await.unwrap();
    assert_eq!(system["Id"], "node-0");
    assert_eq!(system["PowerState"], "Off");
    assert_eq!(system["Boot"]["BootSourceOverrideEnabled"], "Disabled");
    assert_eq!(
        system["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"],
        json!(["None", "Pxe", "Hdd", "Cd"])
    );
    let reset = &system["Actions"]["#ComputerSystem.Reset"];
    assert_eq!(
        reset["target"],
        format!("{SYSTEM}/Actions/ComputerSystem.Reset")
    );
    assert!(reset["ResetType@Redfish.AllowableValues"]
        .as_array()
        .unwrap()
        .contains(&json!("GracefulShutdown")));
    assert_eq!(
        system["Links"]["ManagedBy"][0]["@odata.id"],
        "/redfish/v1/Managers/BMC"
    );
    assert_eq!(system["MemorySummary"]["TotalSystemMemoryGiB"], 0.0625);

    let nics = client
        .get_json(&format!("{SYSTEM}/EthernetInterfaces"))
        .await;
    let nic1 = nics["Members"][1]["@odata.id"].as_str().unwrap();
    assert_eq!(
        client.get_json(nic1).await["MACAddress"],
        "52:54:00:1c:00:01"
    );
    let storage = client
        .get_json(&format!("{SYSTEM}/SimpleStorage/virtio"))
        .await;
    assert_eq!(storage["Devices"][0]["CapacityBytes"], 64 << 20);
    let cpu = client.get_json(&format!("{SYSTEM}/Processors/CPU0")).await;
    assert_eq!(cpu["InstructionSet"], "x86-64");

    let manager = client.get_json("/redfish/v1/Managers/BMC").await;
    let media = client
        .get_json(manager["VirtualMedia"]["@odata.id"].as_str().unwrap())
        .await;
    let cd = client
        .get_json(media["Members"][0]["@odata.id"].as_str().unwrap())
        .await;
    assert_eq!(cd["Id"], "Cd");
    assert_eq!(cd["Inserted"], false);
    assert!(cd["Actions"]["#VirtualMedia.InsertMedia"]["target"].is_string());
    let chassis = client.get_json("/redfish/v1/Chassis").await;
    assert_eq!(chassis["Members@odata.count"], 1);

    let missing = client.get("/redfish/v1/Systems/other").await;
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Base.1.0.GeneralError");
}

#[tokio::test]
async fn boot_override_once_is_consumed_and_continuous_stays() {
    let (_dir, machine, bmc, client) = bmc(true).await;
    let patch = client
        .patch(
            SYSTEM,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}),
            None,
        )
        .await;
    assert_eq!(patch.status(), 204);
    client.reset("On").await;
    assert_eq!(machine.state().booted_from, Some(BootDevice::Network));
    let boot = bmc.snapshot().await.boot;
    assert_eq!(boot.enabled, OverrideEnabled::Disabled, "Once is consumed");
    assert_eq!(client.power_state().await, "On");

    // `On` while on changes nothing.
    client.reset("On").await;
    assert_eq!(machine.state().power_ons.len(), 1);

    // A restart with no override boots the disk: a new power-on, not a reset.
    client.reset("ForceRestart").await;
    assert_eq!(machine.state().booted_from, Some(BootDevice::Disk));
    // Same device again: an in-place reset.
    client.reset("GracefulRestart").await;
    assert_eq!(machine.state().resets, 1);

    client
        .patch(
            SYSTEM,
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Continuous"}}),
            None,
        )
        .await;
    client.reset("PowerCycle").await;
    client.reset("ForceOff").await;
    assert_eq!(client.power_state().await, "Off");
    client.reset("On").await;
    let state = machine.state();
    assert_eq!(
        &state.power_ons[state.power_ons.len() - 2..],
        &[BootDevice::Network, BootDevice::Network],
        "Continuous holds across boots"
    );
    assert_eq!(bmc.snapshot().await.boot.target, OverrideTarget::Pxe);

    // Cd with nothing inserted: an empty drive.
    client
        .patch(
            SYSTEM,
            json!({"Boot": {"BootSourceOverrideTarget": "Cd"}}),
            None,
        )
        .await;
    client.reset("ForceRestart").await;
    assert_eq!(machine.state().booted_from, Some(BootDevice::Cdrom(None)));
}

#[tokio::test]
async fn invalid_patches_get_redfish_errors_and_etags_are_checked() {
    let (_dir, _machine, bmc, client) = bmc(true).await;
    for body in [
        json!({"Boot": {"BootSourceOverrideTarget": "Floppy"}}),
        json!({"Boot": {"BootSourceOverrideEnabled": "Sometimes"}}),
        json!({"Boot": {"BootSourceOverrideMode": "Bios"}}),
        json!({"Boot": {"BootSourceOverrideTarget": 3}}),
        json!({"Boot": {"Nonsense": "x"}}),
        json!({"AssetTag": "x"}),
    ] {
        let response = client.patch(SYSTEM, body.clone(), None).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "Base.1.0.GeneralError", "{body}");
        assert!(error["error"]["message"].is_string());
        assert!(error["error"]["@Message.ExtendedInfo"][0]["MessageId"].is_string());
    }
    assert_eq!(bmc.snapshot().await.boot.target, OverrideTarget::None);

    let etag = client
        .get(SYSTEM)
        .await
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let stale = client
        .patch(
            SYSTEM,
            json!({"Boot": {"BootSourceOverrideMode": "UEFI"}}),
            Some("\"0000\""),
        )
        .await;
    assert_eq!(stale.status(), 412);
    let fresh = client
        .patch(
            SYSTEM,
            json!({"Boot": {"BootSourceOverrideMode": "UEFI"}}),
            Some(&etag),
        )
        .await;
    assert_eq!(fresh.status(), 204);
    let system = client.get_json(SYSTEM).await;
    assert_eq!(system["Boot"]["BootSourceOverrideMode"], "UEFI");
    assert_eq!(
        system["Boot"]["BootSourceOverrideEnabled"], "Disabled",
        "mode alone sets no override"
    );

    let bogus = client
        .post(
            &format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
            json!({"ResetType": "Bogus"}),
        )
        .await;
    assert_eq!(bogus.status(), 400);
    let nmi_off = client
        .post(
            &format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
            json!({"ResetType": "Nmi"}),
        )
        .await;
    assert_eq!(nmi_off.status(), 409, "an NMI needs a running system");
}

#[tokio::test]
async fn graceful_shutdown_depends_on_the_guest_and_guest_poweroff_is_seen() {
    let (_dir, machine, _bmc, client) = bmc(false).await;
    client.reset("On").await;
    client.reset("GracefulShutdown").await;
    assert_eq!(machine.state().powerdowns, 1);
    assert_eq!(client.power_state().await, "On", "this guest ignores ACPI");
    machine.guest_poweroff();
    assert_eq!(client.power_state().await, "Off");

    let (_dir, machine, _bmc, client) = bmc(true).await;
    client.reset("On").await;
    client.reset("GracefulShutdown").await;
    assert_eq!(client.power_state().await, "Off");
    assert_eq!(machine.state().powerdowns, 1);
}

#[tokio::test]
async fn basic_auth_and_fault_injection() {
    let dir = tempfile::tempdir().unwrap();
    let bmc = Bmc::start(
        config(dir.path(), Some(("admin", "s3cret")), false),
        MemoryMachine::new(true),
    )
    .await
    .unwrap();
    let anonymous = Client::new(&bmc.url(), None);
    assert_eq!(
        anonymous.get("/redfish/v1/").await.status(),
        200,
        "the service root is open"
    );
    let refused = anonymous.get(SYSTEM).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("www-authenticate").is_some());
    let wrong = Client::new(&bmc.url(), Some(("admin", "guess")));
    assert_eq!(wrong.get(SYSTEM).await.status(), 401);
    let client = Client::new(&bmc.url(), Some(("admin", "s3cret")));
    assert_eq!(client.get(SYSTEM).await.status(), 200);

    bmc.fail_next(2);
    assert_eq!(client.get(SYSTEM).await.status(), 500);
    let failed = client.get(SYSTEM).await;
    assert_eq!(failed.status(), 500);
    let body: serde_json::Value = failed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "Base.1.0.GeneralError");
    assert_eq!(client.get(SYSTEM).await.status(), 200, "recovers");

    let armed = client
        .post("/ironclad-lab/fail-next?count=1", json!({}))
        .await;
    assert_eq!(armed.status(), 200);
    assert_eq!(bmc.failures_pending(), 1);
    assert_eq!(client.get("/redfish/v1/Systems").await.status(), 500);
    assert_eq!(client.get("/redfish/v1/Systems").await.status(), 200);
}

#[tokio::test]
async fn virtual_media_from_http_and_file_urls() {
    let (dir, machine, bmc, client) = bmc(true).await;
    // A real HTTP server on loopback serving the "ISO".
    let iso = b"not really an ISO, but bytes all the same".to_vec();
    let served = iso.clone();
    let app = axum::Router::new().route(
        "/boot.iso",
        axum::routing::get(move || {
            let body = served.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let cd = "/redfish/v1/Managers/BMC/VirtualMedia/Cd";
    let insert = client
        .post(
            &format!("{cd}/Actions/VirtualMedia.InsertMedia"),
            json!({"Image": format!("http://{server_addr}/boot.iso"), "Inserted": true, "WriteProtected": true}),
        )
        .await;
    assert_eq!(insert.status(), 204);
    let media = bmc.snapshot().await.media;
    let local = media.local.clone().unwrap();
    assert_eq!(std::fs::read(&local).unwrap(), iso, "downloaded");
    let resource = client.get_json(cd).await;
    assert_eq!(resource["Inserted"], true);
    assert_eq!(resource["ImageName"], "boot.iso");
    // The same device is visible under the system.
    let via_system = client.get_json(&format!("{SYSTEM}/VirtualMedia/Cd")).await;
    assert_eq!(via_system["Image"], resource["Image"]);

    client
        .patch(
            SYSTEM,
            json!({"Boot": {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}}),
            None,
        )
        .await;
    client.reset("On").await;
    assert_eq!(
        machine.state().booted_from,
        Some(BootDevice::Cdrom(Some(local.clone())))
    );

    let missing = client
        .post(
            &format!("{cd}/Actions/VirtualMedia.InsertMedia"),
            json!({"Image": format!("http://{server_addr}/nope.iso")}),
        )
        .await;
    assert_eq!(missing.status(), 400);
    let error: serde_json::Value = missing.json().await.unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("404"),
        "{error}"
    );

    let eject = client
        .post(&format!("{cd}/Actions/VirtualMedia.EjectMedia"), json!({}))
        .await;
    assert_eq!(eject.status(), 204);
    assert!(!local.exists(), "the download is removed on eject");
    assert_eq!(client.get_json(cd).await["Inserted"], false);

    let file = dir.path().join("local.iso");
    std::fs::write(&file, b"iso").unwrap();
    let insert = client
        .post(
            &format!("{SYSTEM}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia"),
            json!({"Image": format!("file://{}", file.display())}),
        )
        .await;
    assert_eq!(insert.status(), 204);
    assert_eq!(bmc.snapshot().await.media.local, Some(file.clone()));
    client
        .post(&format!("{cd}/Actions/VirtualMedia.EjectMedia"), json!({}))
        .await;
    assert!(file.exists(), "a file:// image is not the BMC's to delete");
    server.abort();
}
