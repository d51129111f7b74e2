//! TLS to PostgreSQL (rustls), with libpq's `sslmode` rules for what of
//! the server's certificate is checked.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tidings_core::{Error, Result};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::options::{PostgresOptions, TlsMode};

/// The connector for `options`: used whenever the server is asked for TLS
/// (every mode but `disable`).
pub(crate) fn connector(options: &PostgresOptions) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArgument(format!("TLS to PostgreSQL: {e}")))?;
    let chain = if options.tls.verifies(options.root_certificates.is_some()) {
        Some(
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(options)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| Error::InvalidArgument(format!("TLS to PostgreSQL: {e}")))?,
        )
    } else {
        None
    };
    let verifier = Arc::new(Verifier {
        provider,
        chain,
        names: options.tls == TlsMode::VerifyFull,
    });
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Logs, at open, that a server off this machine is reached without a
/// verified certificate (libpq's default, and this one's): the opt-out of
/// `sslmode=verify-full` is the operator's to see.
pub(crate) fn warn_if_unverified(options: &PostgresOptions, config: &tokio_postgres::Config) {
    use tokio_postgres::config::Host;
    let remote = config.get_hosts().iter().any(|host| match host {
        Host::Tcp(name) => !matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1"),
        Host::Unix(_) => false,
    });
    if remote && !options.tls.verifies(options.root_certificates.is_some()) {
        tracing::warn!(
            url = %crate::options::redact(&options.url),
            sslmode = ?options.tls,
            "PostgreSQL is reached without verifying its certificate{}: set sslmode=verify-full (and sslrootcert) to be sure of the server",
            if options.tls == TlsMode::Disable { ", and unencrypted" } else { "" }
        );
    }
}

/// The authorities a certificate must chain to: `sslrootcert`'s, or the
/// Mozilla roots.
fn roots(options: &PostgresOptions) -> Result<RootCertStore> {
    let Some(path) = &options.root_certificates else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let unreadable =
        |why: String| Error::InvalidArgument(format!("sslrootcert={}: {why}", path.display()));
    let mut store = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(e.to_string()))? {
        let certificate = certificate.map_err(|e| unreadable(e.to_string()))?;
        store
            .add(certificate)
            .map_err(|e| unreadable(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(unreadable("holds no certificate".into()));
    }
    Ok(store)
}

/// What of the server's certificate is checked. `chain`: that it chains
/// to a trusted authority (`verify-ca`, `verify-full`, and `require` given
/// `sslrootcert`), and with `names` that it names the host; without
/// `chain` (`prefer`, `require`), the certificate is taken as the server
/// presents it (libpq's rule). The handshake's signatures are checked
/// against it in every mode.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    names: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.names => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
