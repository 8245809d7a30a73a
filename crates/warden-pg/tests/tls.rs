//! Real PostgreSQL 15 set up like Patroni's acceptance harness: `ssl=on` with one
//! self-signed certificate (a CA certificate) used as server certificate, client
//! certificate and root certificate at once, and `hostssl … md5 clientcert=verify-ca` in
//! pg_hba. The agent's own connections, pg_basebackup, `primary_conninfo`, pg_rewind and
//! the post_bootstrap script must all carry the users' TLS options.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use warden_pg::{slot_name_for_member, PgSettings, Postgres, SslOptions, StopMode};
use warden_testkit::pg::{PgNodeDirs, PgTestDir};
use warden_testkit::wait_for_async;

/// Patroni's harness: `hostssl … clientcert=verify-ca`, trust on the unix socket.
fn tls_hba() -> Vec<String> {
    [
        "local all all trust",
        "local replication all trust",
        "hostssl all all all md5 clientcert=verify-ca",
        "hostssl replication all all md5 clientcert=verify-ca",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

struct Certs {
    cert: PathBuf,
    key: PathBuf,
}

/// `openssl req -nodes -new -x509 -subj /CN=batman.patroni -addext
/// subjectAltName=IP:127.0.0.1` into `dir`, owned by the PostgreSQL user, key mode 0600.
fn make_cert(dir: &PgTestDir, sub: &str) -> Certs {
    let d = dir.dir.subdir(sub, true);
    let (cert, key) = warden_testkit::harness_cert(&d, "cert");
    for f in [&cert, &key] {
        dir.dir.run_as.chown(f);
    }
    // The point of the exercise: webpki alone would refuse this as a server certificate.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"));
    Certs { cert, key }
}

fn ssl_options(c: &Certs, mode: &str, with_client_cert: bool) -> SslOptions {
    let cert = c.cert.display().to_string();
    let key = c.key.display().to_string();
    let mut pairs = vec![("sslmode", mode), ("sslrootcert", cert.as_str())];
    if with_client_cert {
        pairs.push(("sslcert", cert.as_str()));
        pairs.push(("sslkey", key.as_str()));
    }
    SslOptions::from_pairs(pairs).unwrap()
}

fn tls_settings(node: &PgNodeDirs, c: &Certs) -> PgSettings {
    let mut s = settings_for(node, "batman");
    for (k, v) in [
        ("ssl", "on".to_string()),
        ("ssl_cert_file", c.cert.display().to_string()),
        ("ssl_key_file", c.key.display().to_string()),
        ("ssl_ca_file", c.cert.display().to_string()),
    ] {
        s.parameters.insert(k.to_string(), v);
    }
    s.pg_hba = Some(tls_hba());
    let opts = ssl_options(c, "verify-ca", true);
    s.superuser.ssl = opts.clone();
    s.replication.ssl = opts.clone();
    if let Some(r) = &mut s.rewind {
        r.ssl = opts;
    }
    s
}

/// A Postgres handle on the same server with other superuser connection settings.
fn with_superuser(pg: &Postgres, listen: &str, ssl: SslOptions) -> Postgres {
    let mut s = pg.settings().clone();
    s.listen_addresses = listen.to_string();
    s.superuser.ssl = ssl;
    Postgres::new(s)
}

async fn wait_streaming(pg: &Postgres, what: &str) {
    wait_for_async(
        what,
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            match pg.query_status().await {
                Ok(st) if st.replication_state.as_deref() == Some("streaming") => Some(()),
                _ => None,
            }
        },
    )
    .await
}

async fn one_value(pg: &Postgres, sql: &str) -> Option<String> {
    pg.query_rows(sql)
        .await
        .expect(sql)
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
}

/// Runs `sql` through psql as a post_bootstrap script and returns what it printed.
async fn post_bootstrap_psql(pg: &Postgres, dir: &Path, sql: &str) -> String {
    let out = dir.join("psql.out");
    let _ = std::fs::remove_file(&out);
    let psql = warden_testkit::pg_bin_dir().join("psql");
    let script = format!(
        "exec {} -w -X -At -c \"{sql}\" \"$1\" > {} 2>&1",
        psql.display(),
        out.display()
    );
    let res = pg
        .run_post_bootstrap_script(&["/bin/sh".into(), "-c".into(), script, "sh".into()])
        .await;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(res.is_ok(), "post_bootstrap script failed: {res:?}: {text}");
    text.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_tls_with_client_certificates() {
    let t0 = Instant::now();
    let dir = PgTestDir::new("warden-pg-tls");
    let certs = make_cert(&dir, "certs");
    let other = make_cert(&dir, "other-certs");
    let n1 = dir.node("node-1");
    let n2 = dir.node("node-2");
    let pg1 = Postgres::new(tls_settings(&n1, &certs));
    let pg2 = Postgres::new(tls_settings(&n2, &certs));

    // post_bootstrap (users) already goes over TLS with the client certificate.
    bootstrap_primary(&pg1).await;
    assert_eq!(
        one_value(
            &pg1,
            "SELECT ssl::text || ' ' || client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await
        .as_deref(),
        Some("true /CN=batman.patroni")
    );

    // ---- the agent's own TCP connections, libpq's sslmode rules
    let check = |pg: Postgres, want: Result<(), &'static str>| async move {
        let r = pg.execute("SELECT 1").await;
        match (want, r) {
            (Ok(()), Ok(())) => {}
            (Err(needle), Err(e)) if e.to_string().contains(needle) => {}
            (want, got) => panic!(
                "{:?}: wanted {want:?}, got {got:?}",
                pg.settings().superuser
            ),
        }
    };
    let no_cert = ssl_options(&certs, "verify-ca", false);
    check(
        with_superuser(&pg1, "127.0.0.1", no_cert),
        Err("connection requires a valid client certificate"),
    )
    .await;
    check(
        with_superuser(&pg1, "127.0.0.1", ssl_options(&certs, "verify-full", true)),
        Ok(()),
    )
    .await;
    // "localhost" is not in the certificate: only verify-full cares
    check(
        with_superuser(&pg1, "localhost", ssl_options(&certs, "verify-full", true)),
        Err("not valid for name"),
    )
    .await;
    check(
        with_superuser(&pg1, "localhost", ssl_options(&certs, "verify-ca", true)),
        Ok(()),
    )
    .await;
    // another CA: the chain check fails in every mode once a root file is given
    let mut wrong_root = ssl_options(&certs, "require", true);
    wrong_root.sslrootcert = Some(other.cert.display().to_string());
    check(
        with_superuser(&pg1, "127.0.0.1", wrong_root.clone()),
        Err("invalid peer certificate"),
    )
    .await;
    // ... and without one, require and prefer do not verify
    for mode in ["require", "prefer", "allow"] {
        let mut no_root = ssl_options(&certs, mode, true);
        no_root.sslrootcert = Some(dir.dir.path().join("missing.crt").display().to_string());
        check(with_superuser(&pg1, "127.0.0.1", no_root), Ok(())).await;
    }
    // pg_hba has no non-TLS entry
    check(
        with_superuser(&pg1, "127.0.0.1", ssl_options(&certs, "disable", true)),
        Err("no encryption"),
    )
    .await;
    // an encrypted key: one clear line naming sslpassword
    let enc_key = certs.key.with_file_name("key.enc.pem");
    let out = Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:keypass", "-in"])
        .arg(&certs.key)
        .arg("-out")
        .arg(&enc_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dir.dir.run_as.chown(&enc_key);
    std::fs::set_permissions(&enc_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut encrypted = ssl_options(&certs, "verify-ca", true);
    encrypted.sslkey = Some(enc_key.display().to_string());
    encrypted.sslpassword = Some("keypass".to_string());
    let pg_enc = with_superuser(&pg1, "127.0.0.1", encrypted);
    let e = pg_enc.execute("SELECT 1").await.unwrap_err().to_string();
    assert!(
        e.contains("sslpassword") && !e.contains("keypass") && !e.contains('\n'),
        "{e}"
    );
    eprintln!("agent connection checks done after {:?}", t0.elapsed());

    // ---- post_bootstrap script: superuser conninfo (TLS options, no password) last,
    // PGPASSFILE with the password; psql connects over TLS with the client certificate.
    let scratch = dir.dir.subdir("scratch", true);
    assert_eq!(
        post_bootstrap_psql(
            &pg1,
            &scratch,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .await,
        "t"
    );
    let pgpass = std::fs::read_to_string(&n1.pgpass).unwrap();
    assert!(
        pgpass.starts_with(&format!("127.0.0.1:{}:*:postgres:", n1.port)),
        "{pgpass}"
    );
    // the encrypted key works for libpq tools: sslpassword through the service file
    assert_eq!(
        post_bootstrap_psql(
            &pg_enc,
            &scratch,
            "SELECT current_setting('application_name') <> 'x'"
        )
        .await,
        "t"
    );
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("warden-pgservice.{}.", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty(), "service files left behind");

    // ---- replica: pg_basebackup and streaming with the replication user's options
    let slot2 = slot_name_for_member("node-2");
    pg1.slot_session(None)
        .await
        .unwrap()
        .create_physical_slot(&slot2)
        .await
        .unwrap();
    pg1.execute("CREATE TABLE t(id int primary key); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    pg2.basebackup(&upstream_of(&pg1, None))
        .await
        .expect("pg_basebackup with client certificate");
    pg2.write_config(Some(&upstream_of(&pg1, Some(&slot2))), true)
        .unwrap();
    let conf = std::fs::read_to_string(n2.data_dir.join("postgresql.conf")).unwrap();
    let c = certs.cert.display();
    let k = certs.key.display();
    let want = format!(
        "primary_conninfo = 'dbname=postgres user=replicator passfile={} host=127.0.0.1 port={} \
         sslmode=verify-ca sslcert={c} sslkey={k} sslrootcert={c} application_name=node-2 \
         gssencmode=prefer channel_binding=prefer'",
        n2.pgpass.display(),
        n1.port
    );
    assert!(conf.contains(&want), "{conf}");
    pg2.start().await.expect("start replica");
    wait_streaming(&pg2, "replica streaming over TLS").await;
    assert_eq!(
        one_value(
            &pg1,
            "SELECT s.ssl::text || ' ' || s.client_dn FROM pg_stat_ssl s \
             JOIN pg_stat_replication r USING (pid)"
        )
        .await
        .as_deref(),
        Some("true /CN=batman.patroni")
    );
    eprintln!("replica streaming after {:?}", t0.elapsed());

    // ---- promote node-2, diverge node-1, rewind it from node-2 over TLS
    pg2.promote().await.expect("promote");
    // the rewind-source check (CHECKPOINT there) is a superuser TCP connection to node-2
    pg1.ensure_rewind_source(&upstream_of(&pg2, None))
        .await
        .expect("rewind source over TLS");
    pg1.execute("INSERT INTO t VALUES (100)").await.unwrap();
    pg1.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    pg1.rewind(&upstream_of(&pg2, None))
        .await
        .expect("pg_rewind with client certificate");
    pg2.slot_session(None)
        .await
        .unwrap()
        .create_physical_slot(&slot_name_for_member("node-1"))
        .await
        .unwrap();
    pg1.write_config(
        Some(&upstream_of(&pg2, Some(&slot_name_for_member("node-1")))),
        true,
    )
    .unwrap();
    pg1.start().await.expect("start rewound node");
    wait_streaming(&pg1, "rewound node streaming over TLS").await;
    assert_eq!(
        one_value(&pg1, "SELECT count(*) FROM t WHERE id = 100")
            .await
            .as_deref(),
        Some("0")
    );

    pg1.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    pg2.stop(StopMode::Fast, Duration::from_secs(30))
        .await
        .unwrap();
    eprintln!("TLS test took {:?}", t0.elapsed());
}
