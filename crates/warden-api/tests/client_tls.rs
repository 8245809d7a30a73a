//! The REST API over HTTPS with the certificate Patroni's acceptance harness makes, called
//! with Warden's own REST client (the one `wardenctl` and the peer probes use).
//!
//! The harness runs `openssl req -nodes -new -x509 -subj /CN=batman.patroni -addext
//! subjectAltName=IP:127.0.0.1` once and uses that one self-signed certificate (OpenSSL 3:
//! `CA:TRUE`) as server certificate, client certificate and CA file, with
//! `verify_client: required`. Both sides must accept it as OpenSSL does.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use warden_api::{monotonic_ms, serve_with, ApiOptions, StatusHandle, TlsOptions, VerifyClient};
use warden_http::{ClientTls, HttpError, Response, RestClient, RestSettings};

const T: Duration = Duration::from_secs(10);

struct Running {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(T, &mut self.task).await;
    }
}

async fn start(crt: &Path, key: &Path, verify: VerifyClient) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let opts = ApiOptions {
        auth: Some(("username".into(), "password".into())),
        tls: Some(TlsOptions {
            certfile: crt.to_path_buf(),
            keyfile: Some(key.to_path_buf()),
            keyfile_password: None,
            cafile: Some(crt.to_path_buf()),
            verify_client: verify,
        }),
        ..ApiOptions::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let status = StatusHandle::new(primary(monotonic_ms()));
    let task = tokio::spawn(serve_with(listener, status, opts, async {
        let _ = rx.await;
    }));
    // The listener is bound already; the certificate files are read before the first
    // accept, so a failure shows up as an early end of the task.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished(), "the server did not start");
    Running {
        port,
        stop: Some(tx),
        task,
    }
}

fn client(cacert: &Path, cert: Option<(&Path, &Path)>, insecure: bool) -> RestClient {
    let settings = RestSettings {
        auth: Some("username:password".into()),
        tls: ClientTls {
            certfile: cert.map(|c| c.0.to_path_buf()),
            keyfile: cert.map(|c| c.1.to_path_buf()),
            keyfile_password: None,
            cacert: Some(cacert.to_path_buf()),
            insecure,
        },
    };
    RestClient::new(&settings, "Patroni/4.1.5 test").unwrap()
}

async fn call(c: &RestClient, port: u16, method: &str, path: &str) -> Result<Response, HttpError> {
    c.request(method, &format!("https://127.0.0.1:{port}{path}"), None, T)
        .await
}

#[tokio::test]
async fn harness_certificate_with_verify_client_required() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = warden_testkit::harness_cert(dir.path(), "patroni");
    let (other, other_key) = warden_testkit::harness_cert(dir.path(), "other");
    let srv = start(&crt, &key, VerifyClient::Required).await;
    let me = Some((crt.as_path(), key.as_path()));

    // Like Patroni's agent (insecure, ctl.certfile) and like patronictl with
    // PATRONI_CTL_INSECURE=on: the server accepts our certificate, we accept its.
    let r = call(&client(&crt, me, true), srv.port, "GET", "/patroni")
        .await
        .expect("GET /patroni with the harness client certificate");
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("\"role\": \"primary\"") || r.text().contains("\"role\":\"primary\"")
    );
    // Full verification too (chain = the certificate itself, IP SAN 127.0.0.1).
    let r = call(&client(&crt, me, false), srv.port, "GET", "/patroni")
        .await
        .expect("GET /patroni, verifying the server fully");
    assert_eq!(r.status, 200);
    // Health checks over TLS: Patroni's bare answer.
    let r = call(&client(&crt, me, false), srv.port, "GET", "/liveness")
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // Without a client certificate the handshake is refused.
    let e = call(&client(&crt, None, false), srv.port, "GET", "/patroni").await;
    assert!(e.is_err(), "answered without a client certificate: {e:?}");
    let e = call(&client(&crt, None, true), srv.port, "GET", "/patroni").await;
    assert!(e.is_err(), "answered without a client certificate: {e:?}");
    // A self-signed client certificate that is not in restapi.cafile is refused.
    let stranger = Some((other.as_path(), other_key.as_path()));
    let e = call(&client(&crt, stranger, false), srv.port, "GET", "/patroni").await;
    assert!(
        e.is_err(),
        "answered a client certificate from no CA: {e:?}"
    );

    // A wrong CA on our side: the server certificate is rejected, whether or not the
    // host name is checked.
    let e = call(&client(&other, me, false), srv.port, "GET", "/patroni")
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Tls(_)), "{e:?}");
    let e = call(&client(&other, me, true), srv.port, "GET", "/patroni")
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Tls(_)), "{e:?}");
    srv.stop().await;
}

#[tokio::test]
async fn harness_certificate_with_verify_client_optional() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = warden_testkit::harness_cert(dir.path(), "patroni");
    let srv = start(&crt, &key, VerifyClient::Optional).await;
    let me = Some((crt.as_path(), key.as_path()));

    let anon = client(&crt, None, false);
    assert_eq!(
        call(&anon, srv.port, "GET", "/patroni")
            .await
            .unwrap()
            .status,
        200
    );
    // Protected endpoints want the certificate (Basic auth alone is not enough).
    let r = call(&anon, srv.port, "POST", "/reload").await.unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "client certificate required")
    );
    // With it, the request reaches the management side (no agent here: not a 403).
    let r = call(&client(&crt, me, true), srv.port, "POST", "/reload")
        .await
        .unwrap();
    assert_ne!(r.status, 403, "{}", r.text());
    srv.stop().await;
}
