//! Executes replica creation and bootstrap (postgres-management.md §5, ha-loop.md
//! B1–B4) as background tasks the HA loop polls, so that a restore that takes hours
//! never lets the member key, the REST API or a held lock go stale.
//!
//! [`create_replica`] is the generic executor of a list of replica creation methods
//! against any source (a member of this cluster or the primary of another one); which
//! methods, from where and when is decided by `warden_core` (`replica::methods_to_try`,
//! `ha::decide`).

use super::*;
use std::sync::Mutex;
use warden_core::replica::{self as core_replica, ReplicaMethod};
use warden_pg::{CloneSource, CustomBootstrapMode, PgError};

/// PostgreSQL's state as a background task reports it (the member key and the REST API
/// show it while the task runs).
pub(super) type StateCell = Arc<Mutex<String>>;

fn set_state(cell: &StateCell, state: &str) {
    if let Ok(mut s) = cell.lock() {
        *s = state.to_string();
    }
}

fn get_state(cell: &StateCell) -> Option<String> {
    cell.lock().ok().map(|s| s.clone())
}

/// A long action running in the background while the HA loop goes on.
pub(super) struct Background {
    /// Patroni's name of the action (`bootstrap from leader 'pg1'`, `reinitialize`).
    pub(super) what: String,
    kind: TaskKind,
    state: StateCell,
    handle: tokio::task::JoinHandle<Result<()>>,
}

enum TaskKind {
    /// Building the data directory, then starting as a replica of `follow`; `msg` as
    /// Patroni logs it after the action (`from leader 'pg1'`, `(without leader)`).
    Clone { follow: Option<String>, msg: String },
    /// initdb or the custom bootstrap method, then the first start.
    Bootstrap,
    /// Roles and the `post_bootstrap` script (and, after a custom bootstrap, the
    /// configuration restored).
    PostBootstrap,
}

/// Patroni's `create_replica`: tries `methods` in order until one succeeds and returns
/// its name. `source` is where the data comes from (`None`: only methods that work
/// without a replication connection should be given); its connection string goes to
/// the methods, its password only to the pgpass file in `PGPASSFILE`. `basebackup` is
/// pg_basebackup; any other method runs its command with Patroni's `--key=value`
/// arguments, after removing a non-empty data directory unless `keep_data`, and its
/// leftovers are removed when it fails (unless `keep_data`). Logs as Patroni does.
pub async fn create_replica(
    pg: &Postgres,
    scope: &str,
    source: Option<&Upstream>,
    methods: &[ReplicaMethod],
) -> Result<String> {
    let prepared: Option<CloneSource> = match source {
        Some(up) => Some(pg.prepare_clone_source(up)?),
        None => None,
    };
    let connstring = prepared
        .as_ref()
        .map(|s| s.connstring().to_string())
        .unwrap_or_default();
    let data_dir = pg.settings().data_dir.display().to_string();
    let mut tried = Vec::new();
    for m in methods {
        tried.push(m.name.clone());
        if m.is_basebackup() {
            let Some(up) = source else {
                error!("Error creating replica using method basebackup: no source to copy from");
                continue;
            };
            match pg.basebackup(up).await {
                Ok(()) => {
                    info!("replica has been created using basebackup");
                    return Ok(m.name.clone());
                }
                Err(e) => error!("Error when fetching backup with pg_basebackup: {e}"),
            }
            continue;
        }
        if !pg.data_directory_empty() {
            if m.keep_data() {
                info!("Leaving data directory uncleaned");
            } else {
                remove_data_directory(pg).await;
            }
        }
        let line = match core_replica::replica_method_command(m, scope, &data_dir, &connstring) {
            Ok(l) => l,
            Err(e) => {
                error!("Error creating replica using method {}: {e}", m.name);
                continue;
            }
        };
        let mut argv = crate::supervisor::shell_split(&line.command);
        argv.extend(line.args);
        match pg.run_user_command(&argv, prepared.as_ref()).await {
            Ok(exit) if exit.success() => {
                info!("replica has been created using {}", m.name);
                return Ok(m.name.clone());
            }
            Ok(exit) => error!(
                "Error creating replica using method {}: {} exited with code={exit}",
                m.name, line.command
            ),
            Err(e) => error!("Error creating replica using method {}: {e}", m.name),
        }
        if !m.keep_data_after_failure() && !pg.data_directory_empty() {
            remove_data_directory(pg).await;
        }
    }
    if tried.is_empty() {
        Err(anyhow!("no replica creation method can run"))
    } else {
        Err(anyhow!(
            "no replica creation method succeeded (tried {})",
            tried.join(", ")
        ))
    }
}

async fn remove_data_directory(pg: &Postgres) {
    let dd = pg.settings().data_dir.display().to_string();
    info!("Removing data directory: {dd}");
    if let Err(e) = pg.remove_data_dir().await {
        error!("Could not remove data directory {dd}: {e}");
    }
}

/// `promote_trigger_file` of `postgresql.recovery_conf` (Patroni removes it after a
/// restore so that PostgreSQL does not promote itself).
fn trigger_file(cfg: &Config) -> Option<String> {
    cfg.postgresql
        .recovery_conf
        .get("promote_trigger_file")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Patroni's `clone`: build the data directory, restore configuration files, start as a
/// replica of `follow`. When no method succeeds the data directory is removed again.
async fn clone_task(
    pg: Postgres,
    scope: String,
    source: Option<Upstream>,
    methods: Vec<ReplicaMethod>,
    follow: Option<Upstream>,
    trigger: Option<String>,
    state: StateCell,
) -> Result<()> {
    if let Err(e) = create_replica(&pg, &scope, source.as_ref(), &methods).await {
        remove_data_directory(&pg).await;
        set_state(&state, "stopped");
        return Err(e);
    }
    pg.post_restore(trigger.as_deref())?;
    set_state(&state, "starting");
    pg.write_config(follow.as_ref(), true)?;
    match pg.start().await {
        Ok(()) => set_state(&state, "running"),
        // Alive but not accepting connections yet (e.g. replaying archived WAL up to a
        // consistent point): the HA loop watches it from here.
        Err(PgError::StillStarting(t)) => info!("PostgreSQL is still starting after {t:?}"),
        Err(e) => {
            set_state(&state, "start failed");
            return Err(e).context("starting the new replica");
        }
    }
    Ok(())
}

/// B1 won: initdb, or the custom bootstrap method followed by Patroni's `_post_restore`
/// and recovery configuration; then the first start. `pg` carries the custom
/// bootstrap mode when a custom method runs.
async fn bootstrap_task(
    pg: Postgres,
    b: warden_config::Bootstrap,
    scope: String,
    trigger: Option<String>,
    state: StateCell,
) -> Result<()> {
    match &b.custom {
        None => {
            set_state(&state, "initializing new cluster");
            if let Err(e) = pg.initdb(&b.initdb).await {
                set_state(&state, "initdb failed");
                return Err(e).context("initdb");
            }
            if pg.settings().pg_hba.is_none() && !b.pg_hba.is_empty() {
                pg.append_pg_hba(&b.pg_hba)?;
            }
            pg.write_config(None, false)?;
            set_state(&state, "starting");
            pg.start().await.context("start after initdb")?;
        }
        Some(custom) => {
            set_state(&state, "running custom bootstrap script");
            let data_dir = pg.settings().data_dir.display().to_string();
            let line = core_replica::custom_bootstrap_command(
                &custom.name,
                &custom.options,
                &scope,
                &data_dir,
            )?;
            info!("Running custom bootstrap script: {}", line.command);
            let mut argv = crate::supervisor::shell_split(&line.command);
            argv.extend(line.args);
            match pg.run_user_command(&argv, None).await {
                Ok(exit) if exit.success() => {}
                Ok(exit) => {
                    set_state(&state, "custom bootstrap failed");
                    bail!(
                        "custom bootstrap script {} exited with code={exit}",
                        line.command
                    );
                }
                Err(e) => {
                    set_state(&state, "custom bootstrap failed");
                    return Err(e).context("Exception during custom bootstrap");
                }
            }
            pg.post_restore(trigger.as_deref())?;
            pg.write_custom_bootstrap_recovery()?;
            pg.prepare_custom_bootstrap_config(&b.pg_hba)?;
            set_state(&state, "starting after custom bootstrap");
            pg.write_config(None, false)?;
            match pg.start().await {
                Ok(()) => {}
                // Replaying WAL with hot_standby off: not accepting connections until
                // recovery ends; the HA loop waits for the promotion (B4).
                Err(PgError::StillStarting(t)) => {
                    info!("PostgreSQL is still recovering after {t:?}")
                }
                Err(e) => return Err(e).context("start after the custom bootstrap"),
            }
        }
    }
    Ok(())
}

/// B4: the roles of the local configuration (the superuser's password, the replication
/// and rewind users) and the `post_bootstrap` script; after a custom bootstrap then the
/// configuration without the custom bootstrap mode (`normal`).
async fn post_bootstrap_task(
    pg: Postgres,
    script: Option<String>,
    normal: Option<Postgres>,
) -> Result<()> {
    pg.post_bootstrap()
        .await
        .context("post_bootstrap (creating users)")?;
    if let Some(cmd) = &script {
        crate::supervisor::run_post_bootstrap(cmd, &pg).await?;
    }
    if let Some(n) = normal {
        n.finish_custom_bootstrap()
            .await
            .context("restoring the configuration after the custom bootstrap")?;
    }
    Ok(())
}

/// The custom bootstrap mode of `bootstrap.<method>` (values of `recovery_conf` as
/// Python's `str()` writes them).
fn custom_bootstrap_mode(c: &warden_config::CustomBootstrap) -> CustomBootstrapMode {
    CustomBootstrapMode {
        recovery_conf: c.recovery_conf.as_ref().map(|rc| {
            rc.iter()
                .map(|(k, v)| (k.clone(), core_replica::py_str(v)))
                .collect()
        }),
        keep_existing_recovery_conf: c.keep_existing_recovery_conf,
    }
}

impl<D: Dcs> Node<D> {
    fn spawn_background<F>(&mut self, what: String, kind: TaskKind, state: &str, task: F)
    where
        F: FnOnce(
            StateCell,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>,
    {
        let cell: StateCell = Arc::new(Mutex::new(state.to_string()));
        let fut = task(cell.clone());
        let done = self.task_done.clone();
        // A failed clone is tried again at the next regular cycle, not at once (Patroni
        // wakes the loop only when its clone succeeded), so that a method failing
        // quickly does not spin.
        let wake_on_failure = !matches!(kind, TaskKind::Clone { .. });
        let handle = tokio::spawn(async move {
            let r = fut.await;
            if r.is_ok() || wake_on_failure {
                // The next decision should not wait for loop_wait.
                done.notify_one();
            }
            r
        });
        self.state = state.to_string();
        self.memory.task = Some(what.clone());
        self.background = Some(Background {
            what,
            kind,
            state: cell,
            handle,
        });
    }

    /// The state to publish: the background task's while one runs.
    pub(super) fn current_state(&self) -> String {
        self.background
            .as_ref()
            .and_then(|b| get_state(&b.state))
            .unwrap_or_else(|| self.state.clone())
    }

    /// Takes the result of a finished background task and records it for the decision
    /// (called at the start of each cycle).
    pub(super) async fn poll_background(&mut self) {
        let finished = self
            .background
            .as_ref()
            .is_some_and(|b| b.handle.is_finished());
        if finished {
            if let Some(bg) = self.background.take() {
                let result = match bg.handle.await {
                    Ok(r) => r,
                    Err(e) => Err(anyhow!("the task ended abnormally: {e}")),
                };
                if let Some(s) = get_state(&bg.state) {
                    self.state = s;
                }
                self.background_finished(bg.what, bg.kind, result).await;
            }
        }
        self.memory.task = self.background.as_ref().map(|b| b.what.clone());
    }

    async fn background_finished(&mut self, what: String, kind: TaskKind, result: Result<()>) {
        match kind {
            TaskKind::Clone { follow, msg } => match result {
                Ok(()) => {
                    info!("bootstrapped {msg}");
                    self.following = follow;
                    self.memory.rewind_failed = false;
                    self.memory.rewind_failures = 0;
                    self.role = "replica".into();
                }
                Err(e) => {
                    error!("failed to bootstrap {msg}: {e:#}");
                    self.role = "uninitialized".into();
                }
            },
            TaskKind::Bootstrap => {
                if let Err(e) = result {
                    error!("{what} failed: {e:#}");
                    if let Some(b) = self.memory.bootstrap.as_mut() {
                        b.failed = true;
                    }
                }
            }
            TaskKind::PostBootstrap => {
                let ok = match result {
                    Ok(()) => true,
                    Err(e) => {
                        error!("post_bootstrap failed: {e:#}");
                        false
                    }
                };
                if ok && self.custom_bootstrap.take().is_some() {
                    // The configuration is the normal one again (the task wrote it).
                    self.rebuild_pg_settings();
                    self.pg_config_changed = false;
                }
                if let Some(b) = self.memory.bootstrap.as_mut() {
                    b.post_bootstrap = Some(ok);
                }
            }
        }
    }

    /// Cancels a running background task (agent shutdown, `reinit --force`): its
    /// commands are killed with their process groups.
    pub(super) async fn cancel_background(&mut self) {
        if let Some(bg) = self.background.take() {
            info!("cancelling {}", bg.what);
            bg.handle.abort();
            let _ = bg.handle.await;
            if let Some(s) = get_state(&bg.state) {
                self.state = s;
            }
        }
        self.memory.task = None;
    }

    /// B2/B3 and re-clones: build the data directory with `methods` from the member
    /// `source` in the background, then start as a replica of the member `follow`.
    /// `what` is the action's name, `msg` Patroni's description of the source.
    pub(super) fn start_clone(
        &mut self,
        cluster: &Cluster,
        source: Option<&str>,
        follow: Option<&str>,
        methods: &[String],
        what: String,
        msg: String,
    ) -> Result<()> {
        let src = source
            .map(|s| self.upstream_of(cluster, s, false))
            .transpose()?;
        let follow_up = follow
            .map(|f| self.upstream_of(cluster, f, true))
            .transpose()?;
        let methods = settings::replica_methods_named(&self.cfg, methods);
        self.spawn_clone(
            src,
            follow.map(|f| (f.to_string(), follow_up)),
            methods,
            what,
            msg,
        );
        Ok(())
    }

    /// Builds the data directory in the background from any `source` (a member of this
    /// cluster, or a PostgreSQL elsewhere such as a standby cluster's remote primary;
    /// `None`: only methods that need no replication connection), then starts as a
    /// replica following `follow` (the name to remember and where to connect, `None`:
    /// no upstream).
    pub(super) fn spawn_clone(
        &mut self,
        source: Option<Upstream>,
        follow: Option<(String, Option<Upstream>)>,
        methods: Vec<ReplicaMethod>,
        what: String,
        msg: String,
    ) {
        self.role = "uninitialized".into();
        self.last_pg = None;
        self.callback_role = None;
        let pg = self.pg.clone();
        let scope = self.cfg.scope.clone();
        let trigger = trigger_file(&self.cfg);
        let (follow_name, follow_up) = match follow {
            Some((n, up)) => (Some(n), up),
            None => (None, None),
        };
        self.spawn_background(
            what,
            TaskKind::Clone {
                follow: follow_name,
                msg,
            },
            "creating replica",
            move |cell| {
                Box::pin(clone_task(
                    pg, scope, source, methods, follow_up, trigger, cell,
                ))
            },
        );
    }

    /// B1 won: start the bootstrap in the background.
    pub(super) fn start_bootstrap(&mut self) -> Result<()> {
        let Some(b) = self.cfg.bootstrap.clone() else {
            return Err(anyhow!("no bootstrap section"));
        };
        self.memory.bootstrap = Some(ha::Bootstrapping::default());
        self.custom_bootstrap = b.custom.as_ref().map(custom_bootstrap_mode);
        if self.custom_bootstrap.is_some() {
            self.rebuild_pg_settings();
            self.pg_config_changed = false;
        }
        let state = if b.custom.is_some() {
            "running custom bootstrap script"
        } else {
            "initializing new cluster"
        };
        let pg = self.pg.clone();
        let scope = self.cfg.scope.clone();
        let trigger = trigger_file(&self.cfg);
        self.spawn_background(
            "bootstrap".into(),
            TaskKind::Bootstrap,
            state,
            move |cell| Box::pin(bootstrap_task(pg, b, scope, trigger, cell)),
        );
        self.publish();
        Ok(())
    }

    /// B4: post_bootstrap in the background.
    pub(super) fn start_post_bootstrap(&mut self) -> Result<()> {
        let script = self
            .cfg
            .bootstrap
            .as_ref()
            .and_then(|b| b.post_bootstrap.clone());
        let normal = match &self.custom_bootstrap {
            Some(_) => {
                let mut s = settings::pg_settings(&self.cfg, &self.dynamic)?;
                s.run_as = self.pg.settings().run_as;
                Some(Postgres::new(s))
            }
            None => None,
        };
        let pg = self.pg.clone();
        let state = self.state.clone();
        self.role = "primary".into();
        self.spawn_background(
            "post_bootstrap".into(),
            TaskKind::PostBootstrap,
            &state,
            move |_| Box::pin(post_bootstrap_task(pg, script, normal)),
        );
        Ok(())
    }
}
