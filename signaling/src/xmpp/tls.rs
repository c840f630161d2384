//! rustls client configuration for STARTTLS: either verify against trust anchors, or trust any
//! certificate (`disable_certificate_verification`, as docker-jitsi-meet's JVB does) while still
//! checking the handshake signature against the presented key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::config::XmppConfig;
use super::XmppError;

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Builds the TLS client configuration once per client (it is reused for every reconnect).
pub(crate) fn client_config(cfg: &XmppConfig) -> Result<Arc<ClientConfig>, XmppError> {
    // An explicit provider: the workspace also links aws-lc-rs, so rustls has no unambiguous
    // process default.
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| XmppError::TlsConfig(e.to_string()))?;
    let config = if cfg.disable_certificate_verification {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let path = cfg.ca_file.clone().unwrap_or_else(|| SYSTEM_BUNDLE.into());
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| XmppError::TlsConfig(format!("{}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| XmppError::TlsConfig(format!("{}: {e}", path.display())))?;
            // A bundle may hold certificates webpki cannot use as anchors; skip those.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(XmppError::TlsConfig(format!(
                "no usable trust anchors in {}",
                path.display()
            )));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Server name for SNI and (when verifying) the certificate check: the XMPP domain.
pub(crate) fn server_name(domain: &str) -> Result<ServerName<'static>, XmppError> {
    ServerName::try_from(domain.to_owned()).map_err(|e| XmppError::TlsConfig(format!("server name {domain:?}: {e}")))
}

/// Accepts any certificate chain and name; the handshake signatures are still verified, so
/// the peer must hold the key of the certificate it presents.
#[derive(Debug)]
struct TrustAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for TrustAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
