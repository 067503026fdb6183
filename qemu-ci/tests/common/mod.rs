//! Helpers shared by the BMC tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use ironclad_qemu_ci::bmc::{BmcConfig, Credentials};
use serde_json::Value;

/// A BMC configuration on a free loopback port.
pub fn config(state_dir: &Path, credentials: Option<(&str, &str)>, tls: bool) -> BmcConfig {
    BmcConfig {
        system_id: "node-0".into(),
        uuid: "0b7e2f6a-3c1d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        macs: vec!["52:54:00:1c:00:00".into(), "52:54:00:1c:00:01".into()],
        memory_mib: 64,
        cpus: 1,
        disk_bytes: 64 << 20,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls,
        credentials: credentials.map(|(username, password)| Credentials {
            username: username.into(),
            password: password.into(),
        }),
        state_dir: state_dir.to_path_buf(),
    }
}

/// A small Redfish client over reqwest.
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
    pub auth: Option<(String, String)>,
}

impl Client {
    pub fn new(base: &str, auth: Option<(&str, &str)>) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap(),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    fn with_auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.with_auth(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.with_auth(self.http.post(format!("{}{path}", self.base)))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(
        &self,
        path: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.with_auth(self.http.patch(format!("{}{path}", self.base)));
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        request.json(&body).send().await.unwrap()
    }

    /// POSTs a reset and checks it was accepted.
    pub async fn reset(&self, reset_type: &str) {
        let response = self
            .post(
                "/redfish/v1/Systems/node-0/Actions/ComputerSystem.Reset",
                serde_json::json!({ "ResetType": reset_type }),
            )
            .await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 204, "reset {reset_type}: {body}");
    }

    pub async fn power_state(&self) -> String {
        self.get_json("/redfish/v1/Systems/node-0").await["PowerState"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}
