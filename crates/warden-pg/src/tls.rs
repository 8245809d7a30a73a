//! TLS for the agent's own TCP connections to PostgreSQL, with libpq's semantics of a
//! user's `sslmode`, `sslcert`, `sslkey`, `sslrootcert`, `sslcrl`, `sslcrldir` (rustls with
//! the ring provider; the tools and the walreceiver use libpq itself).
//!
//! * `disable`: plain. `allow`: plain, then TLS when the plain attempt fails. `prefer`
//!   (libpq's default): TLS when the server offers it, plain when it does not or the
//!   handshake fails. `require`: TLS. `verify-ca`: TLS, chain verified. `verify-full`:
//!   chain and host name verified.
//! * As in libpq, the chain is verified in every mode once a root certificate file exists
//!   (`sslrootcert`, else `~/.postgresql/root.crt`; `system` = the system CA bundle), and
//!   `verify-ca`/`verify-full` without one is an error.
//! * A server certificate byte-identical to a certificate in the root file is trusted
//!   (its validity period is still checked, and the handshake signature always is):
//!   OpenSSL accepts a self-signed CA certificate used as the server's own certificate —
//!   Patroni's acceptance harness does that — while webpki refuses it
//!   (`CaUsedAsEndEntity`).
//! * `verify-full` checks the subject alternative names, or the common name when the
//!   certificate has none (libpq does; webpki ignores the CN).
//! * The client certificate (`sslcert`, else `~/.postgresql/postgresql.crt`) is sent when
//!   the file exists, with `sslkey` (else `~/.postgresql/postgresql.key`). Encrypted keys
//!   are not supported: the error names `sslpassword`.
//! * `sslcrl`/`sslcrldir` (else `~/.postgresql/root.crl`) are checked with the chain;
//!   missing CRL files are ignored, as libpq does.
//! * `gssencmode=require` is refused (no GSSAPI here); `channel_binding` and
//!   `sslnegotiation` are handed to tokio-postgres.
//! * Options that are not set fall back to libpq's environment variables (`PGSSLMODE`…).
//!
//! Unix-socket connections never use TLS (libpq does not either).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{ChannelBinding, SslMode, SslNegotiation};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::Decode;

use crate::error::PgError;
use crate::settings::SslOptions;

/// CA bundles used for `sslrootcert=system` (OpenSSL's default locations per distro).
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

const OID_SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// How long one connection attempt may take (connect_timeout is 3 s; the rest is
/// authentication).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(v: &str) -> Option<Mode> {
        Some(match v {
            "disable" => Mode::Disable,
            "allow" => Mode::Allow,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            _ => return None,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// `~/.postgresql/<name>` of the user we run as (libpq takes the home directory from the
/// password database, not from `$HOME`).
fn home_file(name: &str) -> Option<PathBuf> {
    static HOME: OnceLock<Option<PathBuf>> = OnceLock::new();
    HOME.get_or_init(|| {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
    .as_ref()
    .map(|h| h.join(".postgresql").join(name))
}

/// An option's value: the user's setting, else libpq's environment variable.
fn option(opts: &SslOptions, name: &str, env: &str) -> Option<String> {
    opts.get(name)
        .map(str::to_string)
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

/// `Ok(false)` when `p` does not exist (libpq then behaves as if the option were not set).
fn exists(what: &str, p: &Path) -> Result<bool, String> {
    match std::fs::metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        // ENOTDIR: a path component is a file; libpq treats it as missing too.
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
        Err(e) => Err(format!("{what} {}: {e}", p.display())),
    }
}

fn load_certs(what: &str, p: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: invalid PEM: {e:?}", p.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificates found", p.display()));
    }
    Ok(certs)
}

fn load_key(p: &Path, sslpassword_set: bool) -> Result<PrivateKeyDer<'static>, String> {
    let data = std::fs::read(p).map_err(|e| format!("sslkey {}: {e}", p.display()))?;
    let text = String::from_utf8_lossy(&data);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        let why = if sslpassword_set {
            "sslpassword is not supported for Warden's own connections"
        } else {
            "sslpassword is not set, and is not supported for Warden's own connections anyway"
        };
        return Err(format!(
            "sslkey {}: the private key is encrypted and {why}: decrypt it (`openssl pkey -in KEY -out KEY.plain`, mode 0600)",
            p.display()
        ));
    }
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("sslkey {}: no private key found", p.display())
        }
        other => format!("sslkey {}: invalid PEM: {other:?}", p.display()),
    })
}

/// CRLs from a file (PEM, or one DER CRL); a missing file is no CRL.
fn load_crls(
    what: &str,
    p: &Path,
    out: &mut Vec<CertificateRevocationListDer<'static>>,
) -> Result<(), String> {
    if !exists(what, p)? {
        return Ok(());
    }
    let data = std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))?;
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: invalid PEM: {e:?}", p.display()))?;
    if crls.is_empty() {
        out.push(CertificateRevocationListDer::from(data));
    } else {
        out.extend(crls);
    }
    Ok(())
}

/// Server certificate verification with libpq's rules (see the module docs).
#[derive(Debug)]
struct PgVerifier {
    /// None: no root certificate file, nothing verified (sslmode below verify-ca)
    chain: Option<Chain>,
    /// verify-full
    verify_name: bool,
    algs: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct Chain {
    roots: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl Chain {
    fn new(
        roots: Vec<CertificateDer<'static>>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Chain, String> {
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(roots.iter().cloned());
        if added == 0 {
            return Err("no usable CA certificates".to_string());
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .with_crls(crls)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Chain { roots, webpki })
    }
}

fn is_name_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// The validity period (webpki checks it only while building a chain, which a
/// certificate trusted by identity skips).
fn check_validity(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let c = x509_cert::Certificate::from_der(cert.as_ref()).map_err(|_| bad_encoding())?;
    let v = &c.tbs_certificate.validity;
    let now = now.as_secs();
    if now < v.not_before.to_unix_duration().as_secs() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > v.not_after.to_unix_duration().as_secs() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// libpq's host name pattern match: case-insensitive, a leading `*.` matches exactly one
/// label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let h = host.to_ascii_lowercase();
    match p.strip_prefix("*.") {
        Some(rest) => match h.split_once('.') {
            Some((first, tail)) => !first.is_empty() && tail == rest,
            None => false,
        },
        None => p == h,
    }
}

/// libpq's fallback for certificates without subject alternative names: the subject's
/// common name must match the host.
fn common_name_matches(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> bool {
    let host = match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => return false,
    };
    let Ok(c) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let tbs = &c.tbs_certificate;
    let has_san = tbs
        .extensions
        .as_ref()
        .is_some_and(|exts| exts.iter().any(|e| e.extn_id == OID_SUBJECT_ALT_NAME));
    if has_san {
        return false;
    }
    tbs.subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == OID_COMMON_NAME)
        .filter_map(|atv| std::str::from_utf8(atv.value.value()).ok())
        .any(|cn| host_matches(cn, &host))
}

fn check_name(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> Result<(), rustls::Error> {
    let parsed = ParsedCertificate::try_from(cert)?;
    match rustls::client::verify_server_name(&parsed, name) {
        Err(e) if is_name_error(&e) && common_name_matches(cert, name) => Ok(()),
        other => other,
    }
}

impl ServerCertVerifier for PgVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        if chain
            .roots
            .iter()
            .any(|r| r.as_ref() == end_entity.as_ref())
        {
            check_validity(end_entity, now)?;
        } else {
            match chain.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(v) => return Ok(v),
                // webpki checks the name last: the chain (and CRLs) passed.
                Err(e) if is_name_error(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if self.verify_name {
            check_name(end_entity, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// tokio-postgres-rustls with one libpq behaviour added: below verify-full the host is
/// not checked, so a host that is no valid TLS server name (an IPv6 address with a zone,
/// `fe80::1%eth0`) must not stop the handshake; rustls is then given a placeholder name.
#[derive(Clone)]
struct PgMakeTls {
    inner: MakeRustlsConnect,
    verify_name: bool,
}

impl<S> MakeTlsConnect<S> for PgMakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    MakeRustlsConnect: MakeTlsConnect<S, Error = Infallible>,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Infallible> {
        let domain = if !self.verify_name && ServerName::try_from(domain).is_err() {
            "localhost"
        } else {
            domain
        };
        MakeTlsConnect::<S>::make_tls_connect(&mut self.inner, domain)
    }
}

/// How to connect over TCP as one user: the resolved libpq options and, unless
/// `sslmode=disable`, the rustls client configuration.
pub(crate) struct TlsPlan {
    mode: Mode,
    channel_binding: ChannelBinding,
    negotiation: SslNegotiation,
    tls: Option<PgMakeTls>,
}

/// Why one connection attempt failed.
enum AttemptError {
    Pg(tokio_postgres::Error),
    Timeout,
}

impl TlsPlan {
    /// A unix-socket connection: never TLS, whatever the user's options say.
    pub(crate) fn unix_socket() -> TlsPlan {
        TlsPlan {
            mode: Mode::Disable,
            channel_binding: ChannelBinding::Prefer,
            negotiation: SslNegotiation::Postgres,
            tls: None,
        }
    }

    /// Resolves `opts` (and libpq's environment variables) and loads the certificate
    /// files. Errors name the user and the option.
    pub(crate) fn new(opts: &SslOptions, user: &str) -> Result<TlsPlan, PgError> {
        Self::build(opts).map_err(|e| PgError::Tls(format!("TLS settings of user {user}: {e}")))
    }

    fn build(opts: &SslOptions) -> Result<TlsPlan, String> {
        let rootcert = option(opts, "sslrootcert", "PGSSLROOTCERT");
        let system_roots = rootcert.as_deref() == Some("system");
        let sslmode = option(opts, "sslmode", "PGSSLMODE");
        let mode = match &sslmode {
            Some(v) => Mode::parse(v).ok_or_else(|| format!("invalid sslmode value: \"{v}\""))?,
            // libpq 16+: the system CAs only make sense with host name checks.
            None if system_roots => Mode::VerifyFull,
            None => Mode::Prefer,
        };
        if system_roots && mode != Mode::VerifyFull {
            return Err(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                sslmode.as_deref().unwrap_or_default()
            ));
        }
        let channel_binding = match option(opts, "channel_binding", "PGCHANNELBINDING").as_deref() {
            None | Some("prefer") => ChannelBinding::Prefer,
            Some("disable") => ChannelBinding::Disable,
            Some("require") => ChannelBinding::Require,
            Some(v) => return Err(format!("invalid channel_binding value: \"{v}\"")),
        };
        let negotiation = match option(opts, "sslnegotiation", "PGSSLNEGOTIATION").as_deref() {
            None | Some("postgres") => SslNegotiation::Postgres,
            Some("direct") if mode >= Mode::Require => SslNegotiation::Direct,
            Some("direct") => {
                return Err(
                    "sslnegotiation=direct needs sslmode require, verify-ca or verify-full".into(),
                )
            }
            Some(v) => return Err(format!("invalid sslnegotiation value: \"{v}\"")),
        };
        match option(opts, "gssencmode", "PGGSSENCMODE").as_deref() {
            None | Some("disable") | Some("prefer") => {}
            Some("require") => {
                return Err(
                    "gssencmode=require: GSSAPI encryption is not supported for Warden's own connections"
                        .into(),
                )
            }
            Some(v) => return Err(format!("invalid gssencmode value: \"{v}\"")),
        }
        let tls = if mode == Mode::Disable {
            None
        } else {
            Some(Self::tls_config(opts, mode, rootcert, system_roots)?)
        };
        Ok(TlsPlan {
            mode,
            channel_binding,
            negotiation,
            tls,
        })
    }

    fn tls_config(
        opts: &SslOptions,
        mode: Mode,
        rootcert: Option<String>,
        system_roots: bool,
    ) -> Result<PgMakeTls, String> {
        let provider = provider();

        // Root certificates: verification happens whenever they exist.
        let root_path = rootcert
            .map(PathBuf::from)
            .or_else(|| home_file("root.crt"));
        let roots = match &root_path {
            Some(_) if system_roots => {
                let bundle = std::env::var_os("SSL_CERT_FILE")
                    .map(PathBuf::from)
                    .or_else(|| {
                        SYSTEM_CA_FILES
                            .iter()
                            .map(PathBuf::from)
                            .find(|p| p.is_file())
                    })
                    .ok_or("sslrootcert=system: no system CA bundle found")?;
                Some(load_certs("sslrootcert=system", &bundle)?)
            }
            Some(p) if exists("sslrootcert", p)? => Some(load_certs("sslrootcert", p)?),
            _ => None,
        };
        let chain = match roots {
            Some(roots) => {
                let mut crls = Vec::new();
                let crl = option(opts, "sslcrl", "PGSSLCRL");
                let crldir = option(opts, "sslcrldir", "PGSSLCRLDIR");
                match (&crl, &crldir) {
                    (None, None) => {
                        if let Some(p) = home_file("root.crl") {
                            load_crls("sslcrl", &p, &mut crls)?;
                        }
                    }
                    _ => {
                        if let Some(p) = &crl {
                            load_crls("sslcrl", Path::new(p), &mut crls)?;
                        }
                        if let Some(d) = &crldir {
                            if let Ok(rd) = std::fs::read_dir(d) {
                                for entry in rd.flatten() {
                                    if entry.path().is_file() {
                                        load_crls("sslcrldir", &entry.path(), &mut crls)?;
                                    }
                                }
                            }
                        }
                    }
                }
                let chain = Chain::new(roots, crls, &provider).map_err(|e| {
                    format!(
                        "sslrootcert {}: {e}",
                        root_path.as_deref().unwrap_or(Path::new("")).display()
                    )
                })?;
                Some(chain)
            }
            None if mode >= Mode::VerifyCa => {
                return Err(match &root_path {
                    Some(p) => format!(
                        "root certificate file \"{}\" does not exist; either provide the file, use the system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification",
                        p.display()
                    ),
                    None => "could not get home directory to locate root certificate file; either provide the file, use the system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification".to_string(),
                });
            }
            None => None,
        };
        let verify_name = mode == Mode::VerifyFull;
        let verifier = PgVerifier {
            chain,
            verify_name,
            algs: provider.signature_verification_algorithms,
        };

        // Client certificate: sent when the file exists.
        let cert_path = option(opts, "sslcert", "PGSSLCERT")
            .map(PathBuf::from)
            .or_else(|| home_file("postgresql.crt"));
        let client_auth = match &cert_path {
            Some(p) if exists("sslcert", p)? => {
                let certs = load_certs("sslcert", p)?;
                let key_path = option(opts, "sslkey", "PGSSLKEY")
                    .map(PathBuf::from)
                    .or_else(|| home_file("postgresql.key"))
                    .ok_or("certificate present, but sslkey is not set")?;
                if !exists("sslkey", &key_path)? {
                    return Err(format!(
                        "certificate present, but not private key file \"{}\"",
                        key_path.display()
                    ));
                }
                let key = load_key(&key_path, opts.sslpassword.is_some())?;
                Some((certs, key, p.clone(), key_path))
            }
            _ => None,
        };

        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match client_auth {
            Some((certs, key, cert_path, key_path)) => {
                builder.with_client_auth_cert(certs, key).map_err(|e| {
                    format!(
                        "sslcert {} / sslkey {}: {e}",
                        cert_path.display(),
                        key_path.display()
                    )
                })?
            }
            None => builder.with_no_client_auth(),
        };
        // libpq (17+) always offers this ALPN protocol; PostgreSQL 17 requires it for
        // direct TLS negotiation and older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgMakeTls {
            inner: MakeRustlsConnect::new(config),
            verify_name,
        })
    }

    /// Connects with `cfg` (host, port, user, … already set) following `sslmode`.
    /// `desc` names the target in errors.
    pub(crate) async fn connect(&self, cfg: &Config, desc: &str) -> Result<Client, PgError> {
        let mut cfg = cfg.clone();
        cfg.channel_binding(self.channel_binding)
            .ssl_negotiation(self.negotiation);
        let result = match (&self.tls, self.mode) {
            (Some(tls), Mode::Allow) => match plain(&cfg).await {
                Ok(c) => Ok(c),
                Err(e) => {
                    tracing::debug!(
                        "connect to {desc} without TLS failed ({}); trying TLS (sslmode=allow)",
                        describe(&e)
                    );
                    with_tls(&cfg, SslMode::Require, tls.clone()).await
                }
            },
            (Some(tls), Mode::Prefer) => match with_tls(&cfg, SslMode::Prefer, tls.clone()).await {
                Err(AttemptError::Pg(e)) if is_tls_error(&e) => {
                    tracing::debug!(
                        "TLS connection to {desc} failed ({e}); trying without TLS (sslmode=prefer)"
                    );
                    plain(&cfg).await
                }
                other => other,
            },
            (Some(tls), _) => with_tls(&cfg, SslMode::Require, tls.clone()).await,
            (None, _) => plain(&cfg).await,
        };
        result.map_err(|e| match e {
            AttemptError::Pg(e) => PgError::connect(desc.to_string(), e),
            AttemptError::Timeout => PgError::Timeout(format!("connect to {desc}")),
        })
    }
}

fn describe(e: &AttemptError) -> String {
    match e {
        AttemptError::Pg(e) => e.to_string(),
        AttemptError::Timeout => "timed out".to_string(),
    }
}

/// tokio-postgres has no public error kind: a failed handshake (or a server refusing
/// TLS) is reported as "error performing TLS handshake…", and never as a server error.
fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none() && e.to_string().starts_with("error performing TLS handshake")
}

async fn plain(cfg: &Config) -> Result<Client, AttemptError> {
    let mut cfg = cfg.clone();
    cfg.ssl_mode(SslMode::Disable);
    attempt(&cfg, NoTls).await
}

async fn with_tls(cfg: &Config, mode: SslMode, tls: PgMakeTls) -> Result<Client, AttemptError> {
    let mut cfg = cfg.clone();
    cfg.ssl_mode(mode);
    attempt(&cfg, tls).await
}

/// One connection attempt, bounded by [`ATTEMPT_TIMEOUT`]; the connection task is
/// spawned.
async fn attempt<T>(cfg: &Config, tls: T) -> Result<Client, AttemptError>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, conn) = match tokio::time::timeout(ATTEMPT_TIMEOUT, cfg.connect(tls)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(AttemptError::Pg(e)),
        Err(_) => return Err(AttemptError::Timeout),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("postgres connection closed: {e}");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> SslOptions {
        SslOptions::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match TlsPlan::new(&opts(pairs), "u") {
            Ok(_) => panic!("{pairs:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn option_values_are_checked() {
        assert!(err(&[("sslmode", "nope")]).contains("invalid sslmode value: \"nope\""));
        assert!(err(&[("channel_binding", "x")]).contains("channel_binding"));
        assert!(err(&[("gssencmode", "require")]).contains("gssencmode=require"));
        assert!(err(&[("sslmode", "prefer"), ("sslnegotiation", "direct")])
            .contains("sslnegotiation=direct"));
        assert!(err(&[("sslmode", "require"), ("sslrootcert", "system")])
            .contains("weak sslmode \"require\""));
        let e = err(&[
            ("sslmode", "verify-ca"),
            ("sslrootcert", "/nonexistent/root.crt"),
        ]);
        assert!(
            e.starts_with("TLS settings of user u: root certificate file \"/nonexistent/root.crt\" does not exist"),
            "{e}"
        );
        let plan = TlsPlan::new(&opts(&[("sslmode", "disable")]), "u").unwrap();
        assert!(plan.tls.is_none() && plan.mode == Mode::Disable);
        // a missing client certificate is no error (libpq sends none)
        let plan = TlsPlan::new(
            &opts(&[("sslmode", "require"), ("sslcert", "/nonexistent/c.crt")]),
            "u",
        )
        .unwrap();
        assert!(plan.tls.is_some() && plan.mode == Mode::Require);
    }

    #[test]
    fn encrypted_key_names_sslpassword() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.crt");
        let key = dir.path().join("c.key");
        // the content of the certificate does not matter before the key is read
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let c = cert.display().to_string();
        let k = key.display().to_string();
        let e = err(&[("sslcert", &c), ("sslkey", &k), ("sslpassword", "pw")]);
        assert!(e.contains("sslpassword") && e.contains(&k), "{e}");
        assert!(!e.contains("pw\"") && !e.contains('\n'), "{e}");
        let e = err(&[("sslcert", &c), ("sslkey", "/nonexistent/k")]);
        assert!(
            e.contains("certificate present, but not private key file \"/nonexistent/k\""),
            "{e}"
        );
    }

    mod pki {
        use rcgen::{
            date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
        };
        use rustls::pki_types::CertificateDer;

        /// Like the harness's: self-signed, CA:TRUE, SAN IP:127.0.0.1.
        pub fn self_signed_ca(expired: bool) -> CertificateDer<'static> {
            let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(DnType::CommonName, "batman.patroni");
            if expired {
                p.not_before = date_time_ymd(2000, 1, 1);
                p.not_after = date_time_ymd(2001, 1, 1);
            }
            let key = KeyPair::generate().unwrap();
            p.self_signed(&key).unwrap().der().clone()
        }

        /// A CA and a leaf it signed; the leaf has `sans` (none: CN only).
        pub fn ca_and_leaf(
            cn: &str,
            sans: &[&str],
        ) -> (CertificateDer<'static>, CertificateDer<'static>) {
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "test CA");
            let ca_key = KeyPair::generate().unwrap();
            let ca_cert = ca.self_signed(&ca_key).unwrap().der().clone();
            let issuer = Issuer::new(ca, ca_key);
            let mut leaf =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            leaf.distinguished_name.push(DnType::CommonName, cn);
            let leaf_key = KeyPair::generate().unwrap();
            let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap().der().clone();
            (ca_cert, leaf_cert)
        }
    }

    fn verifier(root: &CertificateDer<'static>, verify_name: bool) -> PgVerifier {
        let provider = provider();
        PgVerifier {
            chain: Some(Chain::new(vec![root.clone()], Vec::new(), &provider).unwrap()),
            verify_name,
            algs: provider.signature_verification_algorithms,
        }
    }

    fn verify(v: &PgVerifier, cert: &CertificateDer<'_>, name: &str) -> Result<(), String> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn server_certificate_identical_to_a_root_is_trusted() {
        let ca = pki::self_signed_ca(false);
        // webpki alone refuses it
        let plain = Chain::new(vec![ca.clone()], Vec::new(), &provider()).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        assert!(plain
            .webpki
            .verify_server_cert(&ca, &[], &name, &[], UnixTime::now())
            .is_err());
        assert_eq!(verify(&verifier(&ca, false), &ca, "127.0.0.1"), Ok(()));
        assert_eq!(verify(&verifier(&ca, false), &ca, "localhost"), Ok(()));
        assert_eq!(verify(&verifier(&ca, true), &ca, "127.0.0.1"), Ok(()));
        let e = verify(&verifier(&ca, true), &ca, "localhost").unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        // another self-signed certificate is not trusted
        let other = pki::self_signed_ca(false);
        assert!(verify(&verifier(&ca, false), &other, "127.0.0.1").is_err());
        // identity does not outlive the validity period
        let old = pki::self_signed_ca(true);
        let e = verify(&verifier(&old, false), &old, "127.0.0.1").unwrap_err();
        assert!(e.contains("Expired"), "{e}");
    }

    #[test]
    fn chain_and_names() {
        let (ca, leaf) = pki::ca_and_leaf("leaf", &["db.example.com"]);
        assert_eq!(
            verify(&verifier(&ca, false), &leaf, "other.example"),
            Ok(())
        );
        assert_eq!(
            verify(&verifier(&ca, true), &leaf, "db.example.com"),
            Ok(())
        );
        assert!(verify(&verifier(&ca, true), &leaf, "other.example").is_err());
        let (other_ca, _) = pki::ca_and_leaf("x", &["x"]);
        assert!(verify(&verifier(&other_ca, false), &leaf, "db.example.com").is_err());
        // no subject alternative names: libpq compares the common name
        let (ca, cn_only) = pki::ca_and_leaf("db.example.com", &[]);
        assert_eq!(
            verify(&verifier(&ca, true), &cn_only, "DB.example.com"),
            Ok(())
        );
        assert!(verify(&verifier(&ca, true), &cn_only, "other.example").is_err());
        // with SANs the common name does not count
        let (ca, with_san) = pki::ca_and_leaf("db.example.com", &["other.example"]);
        assert!(verify(&verifier(&ca, true), &with_san, "db.example.com").is_err());
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("db.example.com", "DB.example.com"));
        assert!(host_matches("*.example.com", "db.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "a.db.example.com"));
        assert!(host_matches("127.0.0.1", "127.0.0.1"));
    }
}
