//! REST API tests against the real controller binary over a real socket and SQLite file.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

mod common;

use common::Controller;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn versions_are_negotiated_and_announced_on_every_response() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);

    for (path, header, expected) in [
        ("/", None, "1.1"),
        ("/v1/", None, "1.1"),
        ("/v1/nodes", None, "1.1"),
        ("/v1/nodes", Some("latest"), "1.95"),
        ("/v1/nodes", Some("1.40"), "1.40"),
        ("/v1/does-not-exist", Some("latest"), "1.95"),
    ] {
        let (_, headers, _) = c.call(Method::GET, path, header, None).await;
        assert_eq!(
            headers["x-openstack-ironic-api-minimum-version"], "1.1",
            "{path}"
        );
        assert_eq!(
            headers["x-openstack-ironic-api-maximum-version"], "1.95",
            "{path}"
        );
        assert_eq!(
            headers["x-openstack-ironic-api-version"], expected,
            "{path}"
        );
    }

    let (status, headers, body) = c.call(Method::GET, "/v1/nodes", Some("1.999"), None).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert!(headers.contains_key("x-openstack-ironic-api-maximum-version"));
    let message = Controller::fault(&body);
    assert!(
        message.contains("1.1") && message.contains("1.95"),
        "{message}"
    );
    let (status, _, _) = c.call(Method::GET, "/v1/nodes", Some("banana"), None).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);

    let (status, _, root) = c.call(Method::GET, "/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(root["default_version"]["version"], "1.95");
    let (_, _, v1) = c.call(Method::GET, "/v1/", Some("latest"), None).await;
    assert!(v1["lookup"][0]["href"]
        .as_str()
        .unwrap()
        .ends_with("/v1/lookup/"));
    assert!(v1["nodes"].is_array() && v1["heartbeat"].is_array());

    // Fallbacks and parse errors use the Ironic error body too.
    let (status, _, body) = c.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Controller::fault(&body);
    let (status, _, body) = c.call(Method::DELETE, "/v1/", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    Controller::fault(&body);
    let (status, _, body) = c
        .call(
            Method::POST,
            "/v1/nodes",
            Some("latest"),
            Some(json!(["not", "a node"])),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Controller::fault(&body);
}

#[tokio::test]
async fn nodes_are_created_shown_patched_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);

    let uuid = c
        .create_node(json!({
            "driver": "fake-hardware", "name": "node-1",
            "driver_info": {"ipmi_password": "hunter2", "ipmi_address": "10.0.0.1"},
            "properties": {"memory_mb": 4096}
        }))
        .await;
    let (status, node) = c.get("/v1/nodes/node-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["uuid"], uuid.as_str());
    assert_eq!(node["provision_state"], "enroll");
    assert!(node["power_state"].is_null());
    assert_eq!(node["deploy_interface"], "direct");
    assert_eq!(node["driver_info"]["ipmi_password"], "******");
    assert_eq!(node["driver_info"]["ipmi_address"], "10.0.0.1");

    // Without a header the request is 1.1: newer fields are absent, new nodes are available.
    let (_, _, old) = c
        .call(Method::GET, &format!("/v1/nodes/{uuid}"), None, None)
        .await;
    assert!(old.get("name").is_none() && old.get("driver_internal_info").is_none());
    let (status, _, created) = c
        .call(
            Method::POST,
            "/v1/nodes",
            None,
            Some(json!({"driver": "fake-hardware"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        created["provision_state"].is_null(),
        "available shows as null before 1.2"
    );
    let (status, _, _) = c
        .call(
            Method::POST,
            "/v1/nodes",
            None,
            Some(json!({"driver": "fake-hardware", "name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);

    let (status, body) = c
        .post(
            "/v1/nodes",
            json!({"driver": "fake-hardware", "name": "node-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = c
        .post("/v1/nodes", json!({"driver": "no-such-driver"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(Controller::fault(&body).contains("no-such-driver"));
    let (status, _) = c.post("/v1/nodes", json!({"name": "nodriver"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, node) = c
        .patch(
            "/v1/nodes/node-1",
            json!([{"op": "add", "path": "/instance_info/image_source", "value": "http://x/i.raw"},
                   {"op": "replace", "path": "/name", "value": "node-one"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{node}");
    assert_eq!(node["instance_info"]["image_source"], "http://x/i.raw");
    assert_eq!(node["name"], "node-one");
    let (status, body) = c
        .patch(
            "/v1/nodes/node-one",
            json!([{"op": "replace", "path": "/uuid", "value": "x"}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(Controller::fault(&body).contains("internal attribute"));
    let (status, _) = c
        .patch(
            "/v1/nodes/node-one",
            json!([{"op": "replace", "path": "/maintenance", "value": "x"}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _) = c.get("/v1/nodes?fields=uuid,name").await;
    assert_eq!(status, StatusCode::OK);
    let (_, one) = c
        .get(&format!("/v1/nodes/{uuid}?fields=uuid,provision_state"))
        .await;
    assert_eq!(one.as_object().unwrap().len(), 2);

    let (status, _) = c.delete("/v1/nodes/node-one").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = c.get(&format!("/v1/nodes/{uuid}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(Controller::fault(&body).contains(&uuid));
}

#[tokio::test]
async fn ports_have_unique_lower_case_macs() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "n"}))
        .await;

    let (status, port) = c
        .post(
            "/v1/ports",
            json!({"node_uuid": node, "address": "52:54:00:AB:CD:EF"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{port}");
    assert_eq!(port["address"], "52:54:00:ab:cd:ef");
    let (status, body) = c
        .post(
            "/v1/ports",
            json!({"node_uuid": node, "address": "52:54:00:ab:cd:ef"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        Controller::fault(&body),
        "A port with MAC address 52:54:00:ab:cd:ef already exists."
    );
    let (status, _) = c
        .post("/v1/ports", json!({"node_uuid": node, "address": "nope"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = c
        .post(
            "/v1/ports",
            json!({"node_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "address": "52:54:00:00:00:01"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, list) = c.get("/v1/nodes/n/ports").await;
    assert_eq!(list["ports"].as_array().unwrap().len(), 1);
    let (_, list) = c.get("/v1/ports/detail").await;
    assert_eq!(list["ports"][0]["node_uuid"], node.as_str());
    let uuid = port["uuid"].as_str().unwrap();
    let (status, _) = c.get(&format!("/v1/ports/{uuid}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = c.delete(&format!("/v1/ports/{uuid}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = c.get("/v1/ports").await;
    assert!(list["ports"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn node_lists_paginate_with_next_links() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);
    for i in 0..5 {
        c.create_node(json!({"driver": "fake-hardware", "name": format!("node-{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    let mut path = "/v1/nodes?limit=2".to_owned();
    loop {
        let (status, page) = c.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for node in page["nodes"].as_array().unwrap() {
            seen.push(node["name"].as_str().unwrap().to_owned());
            assert!(node.get("driver").is_none(), "short view only");
        }
        match page["next"].as_str() {
            Some(next) => path = next.strip_prefix(&c.url).unwrap().to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ["node-0", "node-1", "node-2", "node-3", "node-4"]);

    let (_, page) = c
        .get("/v1/nodes/detail?sort_key=name&sort_dir=desc&limit=3")
        .await;
    let names: Vec<&str> = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-4", "node-3", "node-2"]);
    assert!(page["nodes"][0].get("driver").is_some(), "detail view");
    assert!(page["next"].as_str().unwrap().contains("marker="));

    let (status, _) = c.get("/v1/nodes?sort_key=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = c.get("/v1/nodes?limit=-1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = c.get("/v1/nodes?detail=true").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn provision_verbs_follow_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "sm"}))
        .await;

    let (status, body) = c
        .put(
            "/v1/nodes/sm/states/provision",
            json!({"target": "provide"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(Controller::fault(&body).contains("enroll"));

    c.provision("sm", "manage").await;
    let shown = c.wait_state(&node, "manageable").await;
    assert_eq!(shown["power_state"], "power off");
    c.provision("sm", "provide").await;
    c.wait_state(&node, "available").await;

    let (status, _, _) = c
        .call(
            Method::PUT,
            "/v1/nodes/sm/states/provision",
            Some("1.72"),
            Some(json!({"target": "deploy"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_ACCEPTABLE,
        "deploy alias needs 1.73"
    );
    let (status, body) = c
        .put("/v1/nodes/sm/states/provision", json!({"target": "active"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "instance_info is validated first"
    );
    assert!(Controller::fault(&body).contains("image_source"));
    let (_, shown) = c.get("/v1/nodes/sm").await;
    assert_eq!(
        shown["provision_state"], "available",
        "state unchanged after refusal"
    );

    c.patch(
        "/v1/nodes/sm",
        json!([{"op": "add", "path": "/instance_info", "value":
            {"image_source": "http://x/i.raw", "image_checksum": "0123456789abcdef0123456789abcdef"}}]),
    )
    .await;
    let (status, headers, _) = c
        .call(
            Method::PUT,
            "/v1/nodes/sm/states/provision",
            Some("latest"),
            Some(json!({"target": "deploy"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers["location"]
        .to_str()
        .unwrap()
        .ends_with(&format!("/v1/nodes/{node}/states")));
    let shown = c.wait_state(&node, "wait call-back").await;
    assert_eq!(shown["target_provision_state"], "active");
    assert_eq!(shown["power_state"], "power on");
    let (status, _) = c.delete("/v1/nodes/sm").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "cannot delete while deploying"
    );

    c.provision("sm", "undeploy").await;
    let shown = c.wait_state(&node, "available").await;
    assert_eq!(shown["power_state"], "power off");
    assert!(shown["instance_info"].as_object().unwrap().is_empty());

    let (status, _) = c
        .put("/v1/nodes/sm/states/power", json!({"target": "power on"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, states) = c.get("/v1/nodes/sm/states").await;
    assert!(states.get("provision_state").is_some());
    let (status, _) = c
        .put("/v1/nodes/sm/states/power", json!({"target": "sideways"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn lookup_finds_only_waiting_nodes_and_hands_out_the_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "lk"}))
        .await;
    c.post(
        "/v1/ports",
        json!({"node_uuid": node, "address": "52:54:00:12:34:56"}),
    )
    .await;
    let lookup = |version: &'static str, query: &'static str| {
        let c = &c;
        async move {
            c.call(
                Method::GET,
                &format!("/v1/lookup?{query}"),
                Some(version),
                None,
            )
            .await
        }
    };

    let (status, _, body) = lookup("1.62", "addresses=52:54:00:12:34:56").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "enroll does not allow lookup"
    );
    assert_eq!(Controller::fault(&body), "Node not found.");
    let (status, _, _) = lookup("1.62", "addresses=zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = lookup("1.21", "addresses=52:54:00:12:34:56").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    c.provision("lk", "manage").await;
    c.wait_state(&node, "manageable").await;
    c.provision("lk", "provide").await;
    c.wait_state(&node, "available").await;
    c.patch(
        "/v1/nodes/lk",
        json!([{"op": "add", "path": "/instance_info", "value":
            {"image_source": "http://x/i.raw", "image_os_hash_algo": "sha256", "image_os_hash_value": "ab"}}]),
    )
    .await;
    c.provision("lk", "active").await;
    c.wait_state(&node, "wait call-back").await;

    let (status, _, first) = lookup("1.62", "addresses=52:54:00:12:34:56,aa:bb").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["node"]["uuid"], node.as_str());
    let token = first["config"]["agent_token"].as_str().unwrap();
    assert_eq!(token.len(), 43);
    assert_eq!(first["config"]["agent_token_required"], true);
    assert_eq!(first["config"]["heartbeat_timeout"], 300.0);
    assert_eq!(
        first["node"]["driver_internal_info"]["agent_secret_token"],
        "******"
    );
    let (_, _, second) = lookup("1.62", "addresses=52:54:00:12:34:56").await;
    assert_eq!(second["config"]["agent_token"], "******");
    let (status, _, by_uuid) = c
        .call(
            Method::GET,
            &format!("/v1/lookup?node_uuid={node}"),
            Some("1.62"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_uuid["config"]["agent_token"], "******");
    let (_, shown) = c.get("/v1/nodes/lk").await;
    assert_eq!(
        shown["driver_internal_info"]["agent_secret_token"],
        "******"
    );
}

#[tokio::test]
async fn nodes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Controller::start(dir.path(), &[]);
    let node = c
        .create_node(json!({"driver": "fake-hardware", "name": "durable"}))
        .await;
    c.post(
        "/v1/ports",
        json!({"node_uuid": node, "address": "52:54:00:00:00:99"}),
    )
    .await;
    c.provision("durable", "manage").await;
    c.wait_state(&node, "manageable").await;
    c.restart();
    let (status, shown) = c.get("/v1/nodes/durable").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["uuid"], node.as_str());
    assert_eq!(shown["provision_state"], "manageable");
    let (_, ports) = c.get("/v1/nodes/durable/ports").await;
    assert_eq!(ports["ports"][0]["address"], "52:54:00:00:00:99");
}

#[tokio::test]
async fn the_cli_drives_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), &[]);
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ironclad"))
            .args(args)
            .env("IRONCLAD_URL", &c.url)
            .output()
            .expect("run ironclad")
    };
    let out = cli(&[
        "node",
        "create",
        "--driver",
        "fake-hardware",
        "--name",
        "cli-1",
        "--property",
        "memory_mb=2048",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["node", "manage", "cli-1", "--wait", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("manageable"));
    let out = cli(&["port", "create", "--node", "cli-1", "52:54:00:aa:bb:cc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["node", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cli-1") && text.contains("manageable"),
        "{text}"
    );
    let out = cli(&["--json", "node", "show", "cli-1"]);
    let node: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node["properties"]["memory_mb"], 2048);
    let out = cli(&["node", "show", "missing"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Node missing could not be found."));
    // `demo` now really runs (tests/tests/demo.rs covers it end to end); here only its help.
    let out = cli(&["demo", "--help"]);
    assert!(out.status.success());
}
