//! TLS for the REST API, both directions, with rustls and the ring provider.
//!
//! The client side follows Patroni 4.1's `PatroniRequest.reload_config`:
//! * a client certificate (`ctl.certfile`, key `ctl.keyfile` or else inside the
//!   certfile) makes urllib3 keep `CERT_REQUIRED` even when insecure; insecure then
//!   only drops the host name check (`assert_hostname = False`);
//! * insecure without a client certificate: `CERT_NONE`, nothing about the server is
//!   verified;
//! * otherwise the chain is verified against `ctl.cacert`/`restapi.cafile` (or the
//!   system bundle, as Python's `ssl` does without `ca_certs`) and the host name or IP
//!   address against the certificate's subjectAltName.
//!
//! Both directions also accept what OpenSSL accepts and webpki refuses: a peer
//! certificate that is byte-identical to a certificate of the CA file. Patroni's
//! acceptance harness makes one self-signed certificate with `openssl req -x509`
//! (OpenSSL 3 marks it `CA:TRUE`) and uses it as server certificate, client certificate
//! and CA file at once; webpki rejects it with `CaUsedAsEndEntity`. Such a certificate
//! is trusted because it *is* a trust anchor; its validity dates are still checked, and
//! the handshake signature is always verified with the provider's algorithms, so the
//! peer must hold its private key.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{Error as TlsError, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// A certificate, key or CA file that cannot be used; the message names the option and
/// the file (never a password).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsFileError(pub String);

/// The ring crypto provider, installed as the process default on first use (a no-op
/// if another default is installed already).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| {
        let p = rustls::crypto::ring::default_provider();
        let _ = p.clone().install_default();
        Arc::new(p)
    })
    .clone()
}

/// Client-side TLS settings (Patroni's `ctl` section, with `restapi.cafile` as the CA
/// fallback).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// `ctl.certfile`: client certificate chain (PEM; may also hold the key).
    pub certfile: Option<PathBuf>,
    /// `ctl.keyfile`; `None` = the key is in `certfile`.
    pub keyfile: Option<PathBuf>,
    /// `ctl.keyfile_password`. Encrypted keys are not supported (rustls cannot decrypt
    /// them): loading one fails with an error naming this option.
    pub keyfile_password: Option<String>,
    /// `ctl.cacert`, else `restapi.cafile`; `None` = the system CA bundle.
    pub cacert: Option<PathBuf>,
    /// `-k/--insecure`, `ctl.insecure`, or the agent's own peer probes (always insecure,
    /// as Patroni's agent calls `PatroniRequest(config, True)`).
    pub insecure: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("certfile", &self.certfile)
            .field("keyfile", &self.keyfile)
            .field(
                "keyfile_password",
                &self.keyfile_password.as_ref().map(|_| "<redacted>"),
            )
            .field("cacert", &self.cacert)
            .field("insecure", &self.insecure)
            .finish()
    }
}

fn file_err(what: &str, path: &Path, problem: impl fmt::Display) -> TlsFileError {
    TlsFileError(format!("{what} {}: {problem}", path.display()))
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| file_err(what, path, e))
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM items found".into(),
        other => format!("invalid PEM: {other:?}"),
    }
}

/// Every certificate of a PEM file; `what` names the option in errors
/// (e.g. `restapi.certfile`).
pub fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let data = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(what, path, pem_error(e)))?;
    if certs.is_empty() {
        return Err(file_err(what, path, "no certificates found"));
    }
    Ok(certs)
}

/// The first private key of a PEM file. `what` / `what_password` name the key and
/// password options in errors; an encrypted key is refused with a hint (rustls cannot
/// decrypt keys), and the password itself never appears in a message.
pub fn load_key(
    what: &str,
    what_password: &str,
    path: &Path,
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let data = read(what, path)?;
    let text = String::from_utf8_lossy(&data);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        let hint = if password.is_some() {
            format!(
                "the private key is encrypted; encrypted keys are not supported \
                 ({what_password} is ignored): decrypt it, e.g. `openssl pkey -in KEY -out KEY.plain`"
            )
        } else {
            format!(
                "the private key is encrypted and {what_password} is not set; \
                 encrypted keys are not supported: decrypt it, e.g. `openssl pkey -in KEY -out KEY.plain`"
            )
        };
        return Err(file_err(what, path, hint));
    }
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_err(what, path, "no private key found"),
        other => file_err(what, path, pem_error(other)),
    })
}

/// CA bundles tried without an explicit CA file, as Python's `ssl` loads the system
/// store (`SSL_CERT_FILE` first, like OpenSSL).
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The system CA bundle's path, if there is one.
pub fn system_ca_file() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            SYSTEM_CA_FILES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
}

/// Trust anchors plus the raw CA-file certificates (for the identical-certificate rule).
struct Trust {
    roots: Arc<RootCertStore>,
    anchors: Vec<CertificateDer<'static>>,
}

/// Builds the trust store from CA certificates; `what` names the option in errors.
fn trust_from(
    what: &str,
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<Trust, TlsFileError> {
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(file_err(what, path, "no usable CA certificates"));
    }
    Ok(Trust {
        roots: Arc::new(roots),
        anchors: certs,
    })
}

/// Whether `cert` is byte-identical to a CA-file certificate and inside its validity
/// period: OpenSSL trusts such a certificate directly, whatever its basicConstraints.
fn is_trusted_anchor(
    anchors: &[CertificateDer<'_>],
    cert: &CertificateDer<'_>,
    now: UnixTime,
) -> bool {
    if !anchors.iter().any(|a| a.as_ref() == cert.as_ref()) {
        return false;
    }
    use x509_cert::der::Decode;
    // webpki never looks at a certificate trusted by identity, so its dates are read here.
    let Ok(c) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let v = &c.tbs_certificate.validity;
    let now = now.as_secs();
    v.not_before.to_unix_duration().as_secs() <= now
        && now <= v.not_after.to_unix_duration().as_secs()
}

/// What a client checks about the server (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerCheck {
    /// Chain and host name.
    Full,
    /// Chain only (insecure with a client certificate).
    ChainOnly,
    /// Nothing but the handshake signature (insecure without a client certificate).
    Nothing,
}

struct ServerVerifier {
    check: ServerCheck,
    trust: Option<Trust>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerVerifier")
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        if self.check == ServerCheck::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        let chain = match &self.trust {
            Some(t) => rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                &t.roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )
            .or_else(|e| {
                if is_trusted_anchor(&t.anchors, end_entity, now) {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
            None => Err(TlsError::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        chain?;
        if self.check == ServerCheck::Full {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
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
    ) -> Result<HandshakeSignatureValid, TlsError> {
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

/// The rustls client configuration for `settings`; certificates and keys are read here,
/// once.
pub fn client_config(settings: &ClientTls) -> Result<Arc<ClientConfig>, TlsFileError> {
    let provider = crypto_provider();
    let check = match (settings.insecure, settings.certfile.is_some()) {
        (false, _) => ServerCheck::Full,
        (true, true) => ServerCheck::ChainOnly,
        (true, false) => ServerCheck::Nothing,
    };
    let trust = if check == ServerCheck::Nothing {
        None
    } else {
        match &settings.cacert {
            Some(path) => {
                let what = "ctl.cacert (or restapi.cafile)";
                Some(trust_from(what, path, load_certs(what, path)?)?)
            }
            // Without a bundle every server is unknown: the handshake says so.
            None => match system_ca_file() {
                Some(path) => {
                    let what = "system CA bundle";
                    Some(trust_from(what, &path, load_certs(what, &path)?)?)
                }
                None => None,
            },
        }
    };
    let verifier = Arc::new(ServerVerifier {
        check,
        trust,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cfg = match &settings.certfile {
        Some(certfile) => {
            let certs = load_certs("ctl.certfile", certfile)?;
            let key_path = settings.keyfile.as_deref().unwrap_or(certfile);
            let key = load_key(
                "ctl.keyfile",
                "ctl.keyfile_password",
                key_path,
                settings.keyfile_password.as_deref(),
            )?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                TlsFileError(format!(
                    "ctl.certfile {} / ctl.keyfile {}: {e}",
                    certfile.display(),
                    key_path.display()
                ))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Server side: webpki's client verifier plus the identical-certificate rule, so the
/// harness' self-signed `CA:TRUE` certificate works as a client certificate.
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    anchors: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
            .or_else(|e| {
                if is_trusted_anchor(&self.anchors, end_entity, now) {
                    Ok(ClientCertVerified::assertion())
                } else {
                    Err(e)
                }
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client-certificate verifier for a server whose CA file (`what` names its option,
/// e.g. `restapi.cafile`) holds `ca_certs`; `mandatory` = `verify_client: required`
/// (the handshake fails without a certificate), else `optional`.
pub fn client_cert_verifier(
    what: &str,
    path: &Path,
    ca_certs: Vec<CertificateDer<'static>>,
    mandatory: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsFileError> {
    let trust = trust_from(what, path, ca_certs)?;
    let builder = WebPkiClientVerifier::builder_with_provider(trust.roots, crypto_provider());
    let builder = if mandatory {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let inner = builder.build().map_err(|e| file_err(what, path, e))?;
    Ok(Arc::new(ClientVerifier {
        inner,
        anchors: trust.anchors,
    }))
}
