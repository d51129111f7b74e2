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
    let verifier: Arc<dyn ServerCertVerifier> =
        if options.tls.verifies(options.root_certificates.is_some()) {
            let checks_chain = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(options)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| Error::InvalidArgument(format!("TLS to PostgreSQL: {e}")))?;
            Arc::new(Checked {
                chain: checks_chain,
                names: options.tls == TlsMode::VerifyFull,
            })
        } else {
            Arc::new(Unchecked(provider))
        };
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

/// `verify-ca` and `verify-full` (and `require` given `sslrootcert`): the
/// chain, and for `verify-full` the host's name too.
#[derive(Debug)]
struct Checked {
    chain: Arc<WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
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
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// `prefer` and `require` without `sslrootcert`: encrypted, the
/// certificate taken as the server presents it (libpq's rule); the
/// handshake's signatures are still checked against it.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
