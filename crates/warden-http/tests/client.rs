//! The client against small local servers: plain HTTP framing, timeouts, and every TLS
//! verification mode with the certificate Patroni's acceptance harness makes.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use warden_http::{ClientTls, HttpError, RestClient, RestSettings};

const T: Duration = Duration::from_secs(5);

fn client(settings: RestSettings) -> RestClient {
    RestClient::new(&settings, "Patroni/4.1.5 test").expect("client")
}

/// Serves each connection with `answer`, after reading the request head; returns the
/// port and the request heads seen.
async fn serve_plain(
    answer: &'static [u8],
    close: bool,
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let _ = s.write_all(answer).await;
                if close {
                    let _ = s.shutdown().await;
                } else {
                    // A server ignoring `Connection: close`: the client must stop at the
                    // end of the framed body rather than wait for EOF.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn plain_http_framing_and_headers() {
    let c = client(RestSettings {
        auth: Some("username:password".into()),
        ..Default::default()
    });
    let (port, seen) = serve_plain(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        false,
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/patroni");
    let r = c.request("GET", &url, None, T).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "{}"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /patroni HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains("authorization: Basic dXNlcm5hbWU6cGFzc3dvcmQ=\r\n"),
        "{head}"
    );
    assert!(
        head.contains("user-agent: Patroni/4.1.5 test\r\n"),
        "{head}"
    );

    // Patroni's bare health-check answer: no length, body until close.
    let (port, _) = serve_plain(b"HTTP/1.0 503 Service Unavailable\r\n\r\n", true).await;
    let r = c
        .request("GET", &format!("http://127.0.0.1:{port}/liveness"), None, T)
        .await
        .unwrap();
    assert_eq!((r.status, r.body.len()), (503, 0));

    // Content-Length on a connection left open.
    let (port, _) = serve_plain(b"HTTP/1.1 412 X\r\nContent-Length: 3\r\n\r\nabc", false).await;
    let r = c
        .request("POST", &format!("http://127.0.0.1:{port}/x"), Some("{}"), T)
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (412, "abc"));
}

#[tokio::test]
async fn failures_are_errors() {
    let c = client(RestSettings::default());
    // Nothing listens on a port just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = c
        .request("GET", &format!("http://127.0.0.1:{port}/"), None, T)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Connect(_)), "{e:?}");

    // A server that never answers: the request's timeout bounds it.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let t0 = std::time::Instant::now();
    let e = c
        .request(
            "GET",
            &format!("http://127.0.0.1:{port}/"),
            None,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Timeout(_)), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(3));

    // Too large.
    let (port, _) = serve_plain(b"HTTP/1.0 200 OK\r\n\r\n0123456789abcdef", true).await;
    let e = client(RestSettings::default())
        .with_max_response(20)
        .request("GET", &format!("http://127.0.0.1:{port}/"), None, T)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Protocol(_)), "{e:?}");

    // Not HTTP.
    let (port, _) = serve_plain(b"SSH-2.0-OpenSSH\r\n\r\n", true).await;
    let e = c
        .request("GET", &format!("http://127.0.0.1:{port}/"), None, T)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Protocol(_)), "{e:?}");
    assert!(matches!(
        c.request("GET", "ftp://h/", None, T).await,
        Err(HttpError::Url(_))
    ));
}

// ---------------------------------------------------------------------------------------
// TLS

/// `patroni.crt`/`patroni.key` exactly as Patroni's acceptance harness makes them: one
/// self-signed certificate (OpenSSL 3: `CA:TRUE`) used as server certificate, client
/// certificate and CA file.
fn harness_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = warden_testkit::harness_cert(dir, name);
    let text = std::fs::read_to_string(&crt).unwrap();
    let der = CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
    // The case this is about: a CA certificate used as an end entity.
    let decoded = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&crt)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&decoded.stdout).contains("CA:TRUE"));
    assert!(!der.is_empty());
    (crt, key)
}

/// A TLS server answering every request with `HTTP/1.0 200 OK` and `ok`, closing
/// without close_notify like Python's ssl server. `client_ca`: require a client
/// certificate from this CA file.
async fn serve_tls(crt: &Path, key: &Path, client_ca: Option<&Path>) -> u16 {
    let certs = warden_http::tls::load_certs("certfile", crt).unwrap();
    let key: PrivateKeyDer<'static> =
        warden_http::tls::load_key("keyfile", "keyfile_password", key, None).unwrap();
    let b = rustls::ServerConfig::builder_with_provider(warden_http::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => b.with_client_cert_verifier(
            warden_http::client_cert_verifier(
                "cafile",
                ca,
                warden_http::tls::load_certs("cafile", ca).unwrap(),
                true,
            )
            .unwrap(),
        ),
        None => b.with_no_client_auth(),
    };
    let cfg = Arc::new(b.with_single_cert(certs, key).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nok").await;
                let _ = s.flush().await;
                // Drop the TCP stream without a TLS close_notify.
                let (tcp, _) = s.into_inner();
                drop(tcp);
            });
        }
    });
    port
}

fn tls(cacert: Option<&Path>, cert: Option<(&Path, &Path)>, insecure: bool) -> RestClient {
    client(RestSettings {
        auth: None,
        tls: ClientTls {
            certfile: cert.map(|c| c.0.to_path_buf()),
            keyfile: cert.map(|c| c.1.to_path_buf()),
            keyfile_password: None,
            cacert: cacert.map(Path::to_path_buf),
            insecure,
        },
    })
}

async fn get(c: &RestClient, host: &str, port: u16) -> Result<u16, HttpError> {
    c.request("GET", &format!("https://{host}:{port}/patroni"), None, T)
        .await
        .map(|r| {
            assert_eq!(r.text(), "ok");
            r.status
        })
}

#[tokio::test]
async fn tls_verification_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = harness_cert(dir.path(), "patroni");
    let (other, other_key) = harness_cert(dir.path(), "other");
    let port = serve_tls(&crt, &key, None).await;

    // Full verification: the harness certificate is its own CA, its SAN is 127.0.0.1.
    assert_eq!(
        get(&tls(Some(&crt), None, false), "127.0.0.1", port).await,
        Ok(200)
    );
    // ... but not for another name (the SAN holds only the IP).
    let e = get(&tls(Some(&crt), None, false), "localhost", port)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Tls(_)), "{e:?}");
    // A wrong CA is rejected.
    let e = get(&tls(Some(&other), None, false), "127.0.0.1", port)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Tls(_)), "{e:?}");

    // Insecure with a client certificate: chain checked, host name not.
    let me = Some((crt.as_path(), key.as_path()));
    assert_eq!(
        get(&tls(Some(&crt), me, true), "localhost", port).await,
        Ok(200)
    );
    let e = get(&tls(Some(&other), me, true), "localhost", port)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Tls(_)), "{e:?}");

    // Insecure without a client certificate: nothing checked.
    assert_eq!(
        get(&tls(Some(&other), None, true), "localhost", port).await,
        Ok(200)
    );
    assert_eq!(
        get(&tls(None, None, true), "127.0.0.1", port).await,
        Ok(200)
    );

    // Server requiring a client certificate from its CA file.
    let port = serve_tls(&crt, &key, Some(&crt)).await;
    assert_eq!(
        get(&tls(Some(&crt), me, true), "127.0.0.1", port).await,
        Ok(200)
    );
    assert_eq!(
        get(&tls(Some(&crt), me, false), "127.0.0.1", port).await,
        Ok(200)
    );
    let e = get(&tls(Some(&crt), None, false), "127.0.0.1", port).await;
    assert!(e.is_err(), "answered without a client certificate");
    let stranger = Some((other.as_path(), other_key.as_path()));
    let e = get(&tls(Some(&crt), stranger, false), "127.0.0.1", port).await;
    assert!(e.is_err(), "answered a client certificate from another CA");
}

#[tokio::test]
async fn expired_self_signed_anchor_is_refused() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(2001, 1, 1);
    p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let k = KeyPair::generate().unwrap();
    let cert = p.self_signed(&k).unwrap();
    let crt = dir.path().join("old.crt");
    let key = dir.path().join("old.key");
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&key, k.serialize_pem()).unwrap();
    let port = serve_tls(&crt, &key, None).await;
    let e = get(&tls(Some(&crt), None, false), "127.0.0.1", port)
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Tls(_)), "{e:?}");
    // The same certificate while valid is accepted.
    p.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let cert = p.self_signed(&k).unwrap();
    std::fs::write(&crt, cert.pem()).unwrap();
    let port = serve_tls(&crt, &key, None).await;
    assert_eq!(
        get(&tls(Some(&crt), None, false), "127.0.0.1", port).await,
        Ok(200)
    );
}

#[test]
fn settings_errors_name_the_option_and_hide_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let e = RestClient::new(
        &RestSettings {
            auth: Some("u:secret-auth".into()),
            tls: ClientTls {
                cacert: Some(missing.clone()),
                ..Default::default()
            },
        },
        "ua",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ctl.cacert") && e.contains("missing.pem"), "{e}");

    let enc = dir.path().join("enc.key");
    std::fs::write(
        &enc,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let (crt, _) = harness_cert(dir.path(), "c");
    let settings = RestSettings {
        auth: Some("u:secret-auth".into()),
        tls: ClientTls {
            certfile: Some(crt),
            keyfile: Some(enc),
            keyfile_password: Some("secret-pw".into()),
            insecure: true,
            ..Default::default()
        },
    };
    let e = RestClient::new(&settings, "ua").unwrap_err().to_string();
    assert!(
        e.contains("ctl.keyfile_password") && !e.contains("secret-pw"),
        "{e}"
    );
    let dbg = format!("{settings:?}");
    assert!(!dbg.contains("secret"), "{dbg}");
    let ok = RestClient::new(
        &RestSettings {
            auth: Some("u:secret-auth".into()),
            ..Default::default()
        },
        "ua",
    )
    .unwrap();
    assert!(!format!("{ok:?}").contains("secret"));
}
