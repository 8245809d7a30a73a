//! The pure core of Warden.
//!
//! * [`cluster`]: the cluster as read from the DCS (Patroni's etcd key layout and value
//!   formats, parsed leniently) and the member data a node publishes.
//! * [`status`]: the node status the agent publishes to its REST API.
//! * [`ha`]: the HA decision function, from (cluster, local PostgreSQL, settings, time)
//!   to the actions to take and a one-line reason. No I/O, no clocks, no sleeping.
//! * [`liveness`]: whether the HA loop is alive, for systemd's watchdog.
//! * [`lsn`]: WAL position helpers.
//! * [`pgbouncer`]: when to resume the PgBouncers paused around a planned switchover.
//! * [`replica`]: replica creation methods and custom bootstrap: which methods to try
//!   and their command lines.
//! * [`slots`]: which replication slots exist where, what to drop, advance and copy,
//!   and what the leader publishes about them.
//! * [`standby`]: the `standby_cluster` section (a cluster replicating from a remote
//!   site, led by a standby leader).

pub mod cluster;
pub mod ha;
pub mod liveness;
pub mod lsn;
pub mod pgbouncer;
pub mod replica;
pub mod slots;
pub mod standby;
pub mod status;
pub mod sync;

/// The Patroni version Warden announces in member keys and the REST API. Python
/// Patroni peers and patronictl branch on it, so it must be a real 4.x version.
pub const PATRONI_COMPAT_VERSION: &str = "4.1.5";
