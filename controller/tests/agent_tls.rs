//! The agent client trusts exactly the certificate the agent sent (`agent_verify_ca`).
//!
//! The agent here is a STAND-IN: an in-test HTTPS server with a self-signed
//! certificate for 127.0.0.1 (as the agent's auto-TLS makes), answering `/v1/commands/`.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use axum::routing::get;
use axum::{Json, Router};
use ironclad_controller::agent_client::{AgentClient, AgentEndpoint};
use serde_json::json;

fn self_signed() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}

#[tokio::test]
async fn only_the_pinned_certificate_is_trusted() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = self_signed();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.clone().into_bytes(),
        key.into_bytes(),
    )
    .await
    .unwrap();
    let app = Router::new().route(
        "/v1/commands/",
        get(|| async { Json(json!({"commands": []})) }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = axum_server::from_tcp_rustls(listener, config);
    tokio::spawn(async move {
        server.serve(app.into_make_service()).await.unwrap();
    });

    let client = AgentClient::new();
    let endpoint = AgentEndpoint {
        url: format!("https://127.0.0.1:{port}"),
        token: Some("t".to_owned()),
        verify_ca: Some(cert),
    };
    let commands = client.list_commands(&endpoint).await.unwrap();
    assert!(commands.is_empty());

    let (other, _) = self_signed();
    let wrong = AgentEndpoint {
        verify_ca: Some(other),
        ..endpoint.clone()
    };
    assert!(client.list_commands(&wrong).await.is_err());
    let unpinned = AgentEndpoint {
        verify_ca: None,
        ..endpoint
    };
    assert!(
        client.list_commands(&unpinned).await.is_err(),
        "a self-signed cert is not trusted by default"
    );
}
