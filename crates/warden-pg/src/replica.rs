//! The file and process work behind replica creation methods and custom bootstrap
//! (postgres-management.md §5): user commands run with the clone source's connection
//! string and the password only in `PGPASSFILE`, the data directory emptiness check
//! Patroni uses, restoring configuration files after a restore, the recovery
//! configuration of a custom bootstrap and its temporary pg_hba.conf. Which method runs
//! when is decided elsewhere (`warden_core::replica`).

use std::ffi::OsString;
use std::net::ToSocketAddrs;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Stdio;

use crate::error::PgError;
use crate::postgres::{LocalTarget, Postgres, TempFile};
use crate::process::describe;
use crate::settings::Upstream;

/// A clone source prepared for the replica creation tools: the connection string of the
/// replication user (TLS options included, never the password) and the pgpass file
/// holding the password, written when this was made. Keep it alive while a tool runs:
/// it owns the libpq service file of an `sslpassword`.
pub struct CloneSource {
    upstream: Upstream,
    dsn: String,
    service: Option<TempFile>,
    passfile: bool,
}

impl CloneSource {
    /// The connection string passed to the tools (`--connstring=…`, `--dbname=…`).
    pub fn connstring(&self) -> &str {
        &self.dsn
    }

    /// Where it points.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

/// How a user command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandExit {
    /// Exit code (0 = success).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl CommandExit {
    /// Exited 0.
    pub fn success(&self) -> bool {
        *self == CommandExit::Code(0)
    }
}

impl std::fmt::Display for CommandExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandExit::Code(c) => write!(f, "{c}"),
            CommandExit::Signal(s) => write!(f, "-{s}"),
        }
    }
}

/// Kills the whole process group of a user command when dropped before it ended (the
/// agent shuts down or cancels the action): a script's children must not live on.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Postgres {
    /// Writes the pgpass file for the replication user at `from` and returns the
    /// connection string the tools get (Patroni's `write_pgpass` + `format_dsn` with
    /// the password removed).
    pub fn prepare_clone_source(&self, from: &Upstream) -> Result<CloneSource, PgError> {
        let creds = &self.settings().replication;
        let (dsn, service) = self.tool_conn(&from.host, from.port, creds)?;
        let passfile = creds.password.is_some();
        if passfile {
            self.write_pgpass(&from.host, from.port, creds)?;
        }
        Ok(CloneSource {
            upstream: from.clone(),
            dsn,
            service,
            passfile,
        })
    }

    /// Runs a user command (a replica creation method or a custom bootstrap) to its end:
    /// `argv[0]` with the rest as arguments, the agent's environment (minus `PATRONI_*`
    /// and friends) plus, with a `source`, `PGPASSFILE` (and `PGSERVICEFILE` for an
    /// `sslpassword`), stdin from /dev/null, stdout/stderr into the agent's. It runs in a
    /// process group of its own, killed as a whole if the returned future is dropped
    /// before the command ends. Err only when it cannot be started.
    pub async fn run_user_command(
        &self,
        argv: &[String],
        source: Option<&CloneSource>,
    ) -> Result<CommandExit, PgError> {
        let Some((prog, args)) = argv.split_first() else {
            return Err(PgError::Invalid("empty command".into()));
        };
        let mut cmd = std::process::Command::new(prog);
        self.prepare_std(&mut cmd);
        cmd.args(args).stdin(Stdio::null()).process_group(0);
        if let Some(src) = source {
            if src.passfile {
                cmd.env("PGPASSFILE", &self.settings().pgpass);
            }
            if let Some(f) = &src.service {
                cmd.env("PGSERVICEFILE", &f.0);
            }
        }
        let desc = describe(
            Path::new(prog),
            &args.iter().map(OsString::from).collect::<Vec<_>>(),
        );
        tracing::debug!("running {desc}");
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| PgError::Spawn {
                cmd: desc.clone(),
                source: e,
            })?;
        let mut guard = GroupGuard {
            pgid: child.id().and_then(|p| i32::try_from(p).ok()),
        };
        let status = child.wait().await.map_err(|e| PgError::Spawn {
            cmd: desc,
            source: e,
        })?;
        guard.pgid = None;
        use std::os::unix::process::ExitStatusExt as _;
        Ok(match (status.code(), status.signal()) {
            (Some(c), _) => CommandExit::Code(c),
            (None, Some(s)) => CommandExit::Signal(s),
            (None, None) => CommandExit::Code(-1),
        })
    }

    /// Patroni's `data_directory_empty`: no `global/pg_control`, and nothing in the
    /// directory but dot files and `lost+found`.
    pub fn data_directory_empty(&self) -> bool {
        let dd = &self.settings().data_dir;
        if dd.join("global").join("pg_control").exists() {
            return false;
        }
        match std::fs::read_dir(dd) {
            Err(_) => true,
            Ok(rd) => rd.flatten().all(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with('.') || n == "lost+found"
            }),
        }
    }

    /// After a data directory was restored (Patroni's `_post_restore`): configuration
    /// files missing from the config directory come back from their `.backup` copies,
    /// and a leftover promote trigger file (`trigger`, relative to the data directory;
    /// default `promote`) is removed so that PostgreSQL does not promote on its own.
    pub fn post_restore(&self, trigger: Option<&str>) -> Result<(), PgError> {
        self.restore_configuration_files()?;
        let dd = &self.settings().data_dir;
        let p = dd.join(trigger.filter(|t| !t.is_empty()).unwrap_or("promote"));
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| PgError::io("remove", &p, e))?;
        }
        Ok(())
    }

    /// After a custom bootstrap's command (Patroni's `write_recovery_conf` /
    /// `remove_recovery_conf`): with a `recovery_conf` the signal file that makes
    /// PostgreSQL replay (`standby.signal` when it sets `standby_mode`, else
    /// `recovery.signal`; the parameters go to postgresql.conf at start); without one
    /// the recovery configuration is removed unless it is to be kept.
    pub fn write_custom_bootstrap_recovery(&self) -> Result<(), PgError> {
        let Some(cb) = self.settings().custom_bootstrap.as_ref() else {
            return Ok(());
        };
        let dd = &self.settings().data_dir;
        if cb.recovery_conf.is_some() {
            let (make, drop) = if cb.standby_mode() {
                ("standby.signal", None)
            } else {
                ("recovery.signal", Some("standby.signal"))
            };
            if let Some(d) = drop {
                remove_if_exists(&dd.join(d))?;
            }
            self.write_file(&dd.join(make), "", self.file_mode())
        } else if !cb.keep_existing_recovery_conf {
            self.remove_recovery_conf()
        } else {
            Ok(())
        }
    }

    /// Removes `recovery.conf`, `standby.signal` and `recovery.signal`.
    pub fn remove_recovery_conf(&self) -> Result<(), PgError> {
        let dd = &self.settings().data_dir;
        for f in ["recovery.conf", "standby.signal", "recovery.signal"] {
            remove_if_exists(&dd.join(f))?;
        }
        Ok(())
    }

    /// Appends the `bootstrap.pg_hba` lines to a restored pg_hba.conf and backs the
    /// configuration files up (the backup post_bootstrap restores), unless pg_hba.conf
    /// is managed (`postgresql.pg_hba`) or lives elsewhere (`hba_file`), as Patroni's
    /// `bootstrap()` does for a custom method.
    pub fn prepare_custom_bootstrap_config(
        &self,
        bootstrap_pg_hba: &[String],
    ) -> Result<(), PgError> {
        let s = self.settings();
        if s.pg_hba.is_none() && !s.parameters.contains_key("hba_file") {
            self.append_pg_hba(bootstrap_pg_hba)?;
        }
        self.save_configuration_files()
    }

    /// pg_hba.conf while a custom bootstrap runs (Patroni's `replace_pg_hba` then):
    /// trust for the replication user and the superuser on the local socket and on the
    /// addresses of the local TCP host.
    pub(crate) fn custom_bootstrap_hba(&self) -> Vec<String> {
        let s = self.settings();
        let repl = &s.replication.username;
        let su = if s.superuser.username.is_empty() {
            "all"
        } else {
            s.superuser.username.as_str()
        };
        let mut addresses = vec![("local", String::new())];
        let tcp_host = match self.tcp_target() {
            LocalTarget::Tcp(h) => h,
            LocalTarget::Socket(_) => String::new(),
        };
        if !tcp_host.is_empty() && !tcp_host.starts_with('/') {
            if let Ok(addrs) = (tcp_host.as_str(), s.port).to_socket_addrs() {
                for a in addrs {
                    let cidr = match a.ip() {
                        std::net::IpAddr::V4(ip) => format!("{ip}/32"),
                        std::net::IpAddr::V6(ip) => format!("{ip}/128"),
                    };
                    if !addresses.iter().any(|(_, c)| *c == cidr) {
                        addresses.push(("host", cidr));
                    }
                }
            }
        }
        let mut lines = Vec::new();
        for (t, addr) in addresses {
            lines.push(format!("{t}\treplication\t{repl}\t{addr}\ttrust"));
            lines.push(format!("{t}\tall\t{su}\t{addr}\ttrust"));
        }
        lines
    }

    /// After post_bootstrap of a custom bootstrap (called on the settings without the
    /// custom bootstrap mode): pg_hba.conf becomes the configured one, or, when none is
    /// configured, the restored one again (from its backup); postgresql.conf is
    /// rewritten without the recovery block; then PostgreSQL reloads (restarts when
    /// `hba_file` is set, since it was overridden).
    pub async fn finish_custom_bootstrap(&self) -> Result<(), PgError> {
        let s = self.settings();
        let hba = s.config_dir.join("pg_hba.conf");
        if s.pg_hba.is_none() && !s.parameters.contains_key("hba_file") {
            remove_if_exists(&hba)?;
            self.restore_configuration_files()?;
        }
        self.write_config(None, false)?;
        self.remove_recovery_conf()?;
        if s.parameters.contains_key("hba_file") {
            self.restart().await
        } else {
            self.reload().await
        }
    }
}

fn remove_if_exists(p: &Path) -> Result<(), PgError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PgError::io("remove", p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{CustomBootstrapMode, PgSettings};
    use std::collections::BTreeMap;

    fn rc(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn custom_bootstrap_recovery_rules() {
        let promote = CustomBootstrapMode {
            recovery_conf: rc(&[
                ("recovery_target_action", "promote"),
                ("restore_command", "cp /a/%f %p"),
            ]),
            keep_existing_recovery_conf: false,
        };
        assert!(promote.disables_hot_standby());
        assert!(!promote.standby_mode());
        // Without an action PostgreSQL pauses at the target: hot standby stays on.
        let pause = CustomBootstrapMode {
            recovery_conf: rc(&[("recovery_target_time", "2024-01-01")]),
            ..CustomBootstrapMode::default()
        };
        assert!(!pause.disables_hot_standby());
        // pause_at_recovery_target: false means promote, and becomes the action.
        let legacy = CustomBootstrapMode {
            recovery_conf: rc(&[
                ("pause_at_recovery_target", "false"),
                ("standby_mode", "on"),
            ]),
            ..CustomBootstrapMode::default()
        };
        assert!(legacy.disables_hot_standby());
        assert!(legacy.standby_mode());
        assert_eq!(
            legacy.recovery_params(),
            rc(&[("recovery_target_action", "promote")]).unwrap_or_default()
        );
        let kept = CustomBootstrapMode {
            recovery_conf: None,
            keep_existing_recovery_conf: true,
        };
        assert!(kept.disables_hot_standby());
        assert!(!CustomBootstrapMode::default().disables_hot_standby());
    }

    #[test]
    fn custom_bootstrap_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dd = dir.path().join("data");
        std::fs::create_dir(&dd).expect("mkdir");
        let mut s = PgSettings {
            data_dir: dd.clone(),
            config_dir: dd.clone(),
            listen_addresses: "127.0.0.1".into(),
            port: 5999,
            pg_hba: Some(vec!["hostssl all all 0.0.0.0/0 md5".into()]),
            custom_bootstrap: Some(CustomBootstrapMode {
                recovery_conf: rc(&[
                    ("recovery_target_action", "promote"),
                    ("restore_command", "cp /arch/%f %p"),
                ]),
                keep_existing_recovery_conf: false,
            }),
            ..PgSettings::default()
        };
        s.parameters
            .insert("restore_command".into(), "cp /other/%f %p".into());
        s.parameters
            .insert("hba_file".into(), "/etc/pg/hba.conf".into());
        std::fs::write(dd.join("standby.signal"), "").expect("signal");
        let pg = Postgres::new(s.clone());
        pg.write_config(None, false).expect("write_config");
        pg.write_custom_bootstrap_recovery().expect("signals");
        let conf = std::fs::read_to_string(dd.join("postgresql.conf")).expect("conf");
        assert!(conf.contains("hot_standby = 'off'"), "{conf}");
        assert!(
            conf.contains("restore_command = 'cp /arch/%f %p'"),
            "{conf}"
        );
        assert!(
            !conf.contains("/other/"),
            "the server parameters' restore_command is left out: {conf}"
        );
        assert!(
            conf.contains("recovery_target_action = 'promote'"),
            "{conf}"
        );
        let hba_file = format!("hba_file = '{}'", dd.join("pg_hba.conf").display());
        assert!(conf.contains(&hba_file), "{conf}");
        assert!(dd.join("recovery.signal").exists());
        assert!(!dd.join("standby.signal").exists());
        let hba = std::fs::read_to_string(dd.join("pg_hba.conf")).expect("hba");
        assert!(
            hba.contains("local\treplication\treplicator\t\ttrust"),
            "{hba}"
        );
        assert!(hba.contains("local\tall\tpostgres\t\ttrust"), "{hba}");
        assert!(
            hba.contains("host\tall\tpostgres\t127.0.0.1/32\ttrust"),
            "{hba}"
        );
        assert!(!hba.contains("hostssl"), "{hba}");

        // Without recovery_conf the recovery configuration goes, unless kept.
        s.custom_bootstrap = Some(CustomBootstrapMode::default());
        let pg = Postgres::new(s.clone());
        pg.write_custom_bootstrap_recovery().expect("signals");
        assert!(!dd.join("recovery.signal").exists());
        std::fs::write(dd.join("recovery.signal"), "").expect("signal");
        s.custom_bootstrap = Some(CustomBootstrapMode {
            recovery_conf: None,
            keep_existing_recovery_conf: true,
        });
        Postgres::new(s.clone())
            .write_custom_bootstrap_recovery()
            .expect("signals");
        assert!(dd.join("recovery.signal").exists());

        // Out of the custom bootstrap, the configured pg_hba and no recovery block.
        s.custom_bootstrap = None;
        s.parameters.remove("hba_file");
        Postgres::new(s)
            .write_config(None, false)
            .expect("write_config");
        let hba = std::fs::read_to_string(dd.join("pg_hba.conf")).expect("hba");
        assert!(
            hba.contains("hostssl all all 0.0.0.0/0 md5") && !hba.contains("trust"),
            "{hba}"
        );
        let conf = std::fs::read_to_string(dd.join("postgresql.conf")).expect("conf");
        assert!(!conf.contains("recovery_target_action"), "{conf}");
        assert!(!conf.contains("hot_standby = 'off'"), "{conf}");
    }

    #[test]
    fn data_directory_empty_as_patroni() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dd = dir.path().join("data");
        let pg = Postgres::new(PgSettings {
            data_dir: dd.clone(),
            ..PgSettings::default()
        });
        assert!(pg.data_directory_empty(), "missing");
        std::fs::create_dir(&dd).expect("mkdir");
        std::fs::create_dir(dd.join("lost+found")).expect("mkdir");
        std::fs::write(dd.join(".hidden"), "").expect("write");
        assert!(pg.data_directory_empty(), "dot files and lost+found only");
        std::fs::write(dd.join("PG_VERSION"), "15").expect("write");
        assert!(!pg.data_directory_empty());
    }

    #[tokio::test]
    async fn user_commands_exit_codes_and_group_kill() {
        let pg = Postgres::new(PgSettings::default());
        let ok = pg
            .run_user_command(&["true".into()], None)
            .await
            .expect("runs");
        assert!(ok.success());
        let three = pg
            .run_user_command(&["sh".into(), "-c".into(), "exit 3".into()], None)
            .await
            .expect("runs");
        assert_eq!(three, CommandExit::Code(3));
        assert!(matches!(
            pg.run_user_command(&["/nonexistent/cmd".into()], None)
                .await,
            Err(PgError::Spawn { .. })
        ));
        // Dropping the future kills the script and what it started.
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let argv = ["sh".to_string(), "-c".to_string(), script];
        let fut = pg.run_user_command(&argv, None);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1500), fut).await;
        let child: i32 = std::fs::read_to_string(&pidfile)
            .expect("the script started")
            .trim()
            .parse()
            .expect("pid");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while crate::process::pid_alive(child) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            !crate::process::pid_alive(child),
            "the script's child was killed"
        );
    }
}
