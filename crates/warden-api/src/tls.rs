//! HTTPS for the REST API (rest-api.md §1 TLS): rustls with the ring provider.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// `restapi.verify_client`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyClient {
    /// No client certificate asked for.
    #[default]
    None,
    /// Asked for; without one only the protected endpoints refuse (403).
    Optional,
    /// The TLS handshake fails without a valid client certificate.
    Required,
}

impl FromStr for VerifyClient {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(VerifyClient::None),
            "optional" => Ok(VerifyClient::Optional),
            "required" => Ok(VerifyClient::Required),
            other => Err(format!(
                "Bad value in the \"restapi.verify_client\": {other} (expected none, optional or required)"
            )),
        }
    }
}

/// HTTPS settings (`restapi.certfile`, `keyfile`, `keyfile_password`, `cafile`,
/// `verify_client`).
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM certificate chain (may also hold the key).
    pub certfile: PathBuf,
    /// PEM private key; `None` = read the key from `certfile`.
    pub keyfile: Option<PathBuf>,
    /// `restapi.keyfile_password`. Encrypted keys are not supported: loading one fails
    /// with an error naming this option.
    pub keyfile_password: Option<String>,
    /// CA bundle for client certificates.
    pub cafile: Option<PathBuf>,
    /// Client certificate policy.
    pub verify_client: VerifyClient,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("certfile", &self.certfile)
            .field("keyfile", &self.keyfile)
            .field(
                "keyfile_password",
                &self.keyfile_password.as_ref().map(|_| "<redacted>"),
            )
            .field("cafile", &self.cafile)
            .field("verify_client", &self.verify_client)
            .finish()
    }
}

/// A TLS configuration problem; the message names the file or option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError(pub String);

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsConfigError {}

impl From<TlsConfigError> for std::io::Error {
    fn from(e: TlsConfigError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0)
    }
}

/// The ring crypto provider shared with the REST client (installed as the process
/// default on first use).
pub use warden_http::crypto_provider;

fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    warden_http::tls::load_certs(what, path).map_err(|e| TlsConfigError(e.0))
}

fn load_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    warden_http::tls::load_key(
        "restapi.keyfile",
        "restapi.keyfile_password",
        path,
        password,
    )
    .map_err(|e| TlsConfigError(e.0))
}

/// The CA file for client certificates: `restapi.cafile`, else the system bundle (Python's
/// ssl loads the system store in that case).
fn client_ca_file(opts: &TlsOptions) -> Result<PathBuf, TlsConfigError> {
    match &opts.cafile {
        Some(p) => Ok(p.clone()),
        None => warden_http::tls::system_ca_file().ok_or_else(|| {
            TlsConfigError(
                "restapi.verify_client needs restapi.cafile (no system CA bundle found)".into(),
            )
        }),
    }
}

/// Builds the rustls server configuration; errors name the file and the problem.
pub fn load_server_config(opts: &TlsOptions) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = crypto_provider();
    let certs = load_certs("restapi.certfile", &opts.certfile)?;
    let key_path = opts.keyfile.as_deref().unwrap_or(&opts.certfile);
    let key = load_key(key_path, opts.keyfile_password.as_deref())?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(format!("TLS setup: {e}")))?;
    let builder = match opts.verify_client {
        VerifyClient::None => builder.with_no_client_auth(),
        mode => {
            // webpki's verifier, plus acceptance of a client certificate identical to one
            // of the CA file (Patroni's harness uses one self-signed CA:TRUE certificate
            // for everything; OpenSSL accepts it, webpki alone would not).
            let path = client_ca_file(opts)?;
            let certs = load_certs("restapi.cafile", &path)?;
            let v = warden_http::client_cert_verifier(
                "restapi.cafile",
                &path,
                certs,
                mode == VerifyClient::Required,
            )
            .map_err(|e| TlsConfigError(e.0))?;
            builder.with_client_cert_verifier(v)
        }
    };
    let cfg = builder.with_single_cert(certs, key).map_err(|e| {
        TlsConfigError(format!(
            "restapi.certfile {} / restapi.keyfile {}: {e}",
            opts.certfile.display(),
            key_path.display()
        ))
    })?;
    // No ALPN: like Python's ssl module here, any client offer is accepted as HTTP/1.x.
    Ok(Arc::new(cfg))
}
