//! HTTPS for the REST API (rest-api.md §1 TLS): rustls with the ring provider.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

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

fn err(what: &str, path: &Path, problem: impl fmt::Display) -> TlsConfigError {
    TlsConfigError(format!("{what} {}: {problem}", path.display()))
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| err(what, path, e))
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM items found".into(),
        other => format!("invalid PEM: {other:?}"),
    }
}

fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let data = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| err(what, path, pem_error(e)))?;
    if certs.is_empty() {
        return Err(err(what, path, "no certificates found"));
    }
    Ok(certs)
}

fn load_key(path: &Path, password: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let what = "restapi.keyfile";
    let data = read(what, path)?;
    let text = String::from_utf8_lossy(&data);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        let hint = if password.is_some() {
            "the private key is encrypted; encrypted keys are not supported \
             (restapi.keyfile_password is ignored): decrypt it, e.g. `openssl pkey -in KEY -out KEY.plain`"
        } else {
            "the private key is encrypted and restapi.keyfile_password is not set; \
             encrypted keys are not supported: decrypt it, e.g. `openssl pkey -in KEY -out KEY.plain`"
        };
        return Err(err(what, path, hint));
    }
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => err(what, path, "no private key found"),
        other => err(what, path, pem_error(other)),
    })
}

/// CA bundles tried when `verify_client` is set without `cafile` (Python's ssl loads
/// the system store in that case).
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn client_roots(opts: &TlsOptions) -> Result<RootCertStore, TlsConfigError> {
    let path = match &opts.cafile {
        Some(p) => p.clone(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .or_else(|| {
                SYSTEM_CA_FILES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            })
            .ok_or_else(|| {
                TlsConfigError(
                    "restapi.verify_client needs restapi.cafile (no system CA bundle found)".into(),
                )
            })?,
    };
    let mut roots = RootCertStore::empty();
    let certs = load_certs("restapi.cafile", &path)?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(err("restapi.cafile", &path, "no usable CA certificates"));
    }
    Ok(roots)
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
            let roots = Arc::new(client_roots(opts)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let v = if mode == VerifyClient::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v
                .build()
                .map_err(|e| TlsConfigError(format!("restapi.cafile: {e}")))?;
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
