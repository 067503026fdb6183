//! A self-signed certificate for the BMC's HTTPS, as real BMCs ship with.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate could not be generated.
    #[error("generating the BMC's self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS for the BMC: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A generated certificate, with its PEM for clients that want to pin it.
pub struct SelfSigned {
    /// The server configuration (rustls with the ring provider).
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate in PEM form.
    pub cert_pem: String,
}

/// Generates a self-signed ECDSA P-256 certificate for `hosts` (DNS names or IP
/// addresses) and a rustls server configuration using it.
pub fn self_signed(hosts: &[String]) -> Result<SelfSigned, TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Ironclad lab BMC");
    params.distinguished_name = name;
    for host in hosts {
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(SelfSigned {
        config: Arc::new(config),
        cert_pem,
    })
}
