//! Auto-TLS: an in-memory self-signed certificate for the agent API, whose PEM
//! the controller pins (`agent_verify_ca`).

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// How far in the past the certificate starts, to tolerate clock skew.
pub const ALLOWED_CLOCK_SKEW: Duration = Duration::hours(1);
/// How long the certificate is valid.
pub const VALIDITY: Duration = Duration::days(30);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Key or certificate generation failed.
    #[error("could not generate the agent certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("could not configure TLS: {0}")]
    Config(#[from] rustls::Error),
    /// Unknown `tls_min_version`.
    #[error("unsupported tls_min_version {0:?}; expected 1.2 or 1.3")]
    MinVersion(String),
}

/// The agent's certificate and key, stable for the process lifetime.
#[derive(Debug)]
pub struct AgentCertificate {
    /// The certificate in PEM, sent as `agent_verify_ca`.
    pub pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// Installs ring as the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    // An error only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Generates an EC P-256 key and a self-signed certificate with CN = `hostname`
/// and SubjectAltName = `ip`, valid from an hour ago for 30 days.
pub fn generate(hostname: &str, ip: IpAddr) -> Result<AgentCertificate, TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hostname);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::IpAddress(ip)];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - ALLOWED_CLOCK_SKEW;
    params.not_after = now + VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(AgentCertificate {
        pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    })
}

/// The rustls server configuration for `cert`; `min_version` `"1.3"` allows TLS 1.3 only.
pub fn server_config(
    cert: &AgentCertificate,
    min_version: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match min_version.map(str::trim) {
        None | Some("") | Some("1.2") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("1.3") => &[&rustls::version::TLS13],
        Some(other) => return Err(TlsError::MinVersion(other.to_owned())),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_and_configs() {
        install_crypto_provider();
        let cert = generate("node-1", "127.0.0.1".parse().unwrap()).unwrap();
        assert!(cert.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server_config(&cert, None).is_ok());
        assert!(server_config(&cert, Some("1.3")).is_ok());
        assert!(matches!(
            server_config(&cert, Some("1.1")),
            Err(TlsError::MinVersion(_))
        ));
    }
}
