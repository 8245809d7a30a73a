//! `warden --generate-sample-config`: a commented patroni.yml that Warden (and Patroni)
//! accept, and the start-time check of `bootstrap.dcs` timings.

use serde_json::Value;

/// A commented sample configuration.
pub const SAMPLE_CONFIG: &str = r#"# Warden configuration (Patroni's patroni.yml format: Patroni reads this file too).
scope: batman                  # cluster name; also PostgreSQL's cluster_name
namespace: /service/           # etcd key prefix: /service/batman/...
name: pg1                      # this member's unique name

restapi:
  listen: 0.0.0.0:8008                 # health checks and management API
  connect_address: 10.0.0.1:8008       # how the other members and HAProxy reach it
# authentication: {username: admin, password: secret}   # required for POST/PATCH/...

etcd3:
  hosts: 10.0.0.10:2379,10.0.0.11:2379,10.0.0.12:2379

bootstrap:
  dcs:                         # copied into etcd once, by the node that initialises the cluster
    ttl: 30                    # leader lock lifetime (s); loop_wait + 2*retry_timeout <= ttl
    loop_wait: 10              # seconds between HA cycles
    retry_timeout: 10          # bound of every etcd / PostgreSQL retry
    maximum_lag_on_failover: 1048576   # bytes a replica may lag and still be promoted
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 100
        wal_level: replica
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication replicator 10.0.0.0/24 scram-sha-256
  - host all all 10.0.0.0/24 scram-sha-256

postgresql:
  listen: 0.0.0.0:5432
  connect_address: 10.0.0.1:5432
  data_dir: /var/lib/postgresql/15/main
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: /var/lib/postgresql/pgpass
  authentication:
    superuser: {username: postgres, password: change-me}
    replication: {username: replicator, password: change-me-too}
    rewind: {username: rewind_user, password: change-me-three}
# callbacks:
#   on_role_change: /usr/local/bin/notify-role-change   # called as: <cmd> on_role_change <role> <scope>

tags:
  nofailover: false            # true: never become the leader
  noloadbalance: false         # true: GET /replica answers 503
  clonefrom: false             # true: preferred pg_basebackup source for new replicas

# Warden-only (Patroni ignores this section). Patroni raises any ttl below 20 s to 20;
# Warden's fence guard stops a primary before its lock can expire, so it may go lower:
# warden:
#   min_ttl: 8                 # 4..20; then e.g. ttl: 8, loop_wait: 2, retry_timeout: 3,
#                              # or at the floor ttl: 4, loop_wait: 1, retry_timeout: 1
"#;

/// Refuses `bootstrap.dcs` timings that would let a leader keep writing after its lock
/// could have expired (ha-loop.md §1). Patroni silently adjusts them; a new cluster
/// should not start with a configuration that does not say what it will do. `min_ttl`
/// is `warden.min_ttl` (20, as Patroni, unless lowered).
pub fn unsafe_timing(dcs: &Value, min_ttl: u64) -> Option<String> {
    let get = |k: &str, d: i64| -> i64 {
        match dcs.get(k) {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(d),
            Some(Value::String(s)) => s.trim().parse().unwrap_or(d),
            _ => d,
        }
    };
    let (ttl, loop_wait, retry) = (
        get("ttl", 30),
        get("loop_wait", 10),
        get("retry_timeout", 10),
    );
    if ttl < min_ttl as i64 {
        return Some(if min_ttl == warden_config::PATRONI_MIN_TTL {
            format!(
                "bootstrap.dcs.ttl: {ttl} is below the minimum of 20 seconds \
                 (Warden allows down to {} with warden.min_ttl)",
                warden_config::MIN_TTL_FLOOR
            )
        } else {
            format!("bootstrap.dcs.ttl: {ttl} is below warden.min_ttl ({min_ttl} seconds)")
        });
    }
    if loop_wait < 1 {
        return Some(format!(
            "bootstrap.dcs.loop_wait: {loop_wait} is below the minimum of 1 second"
        ));
    }
    let retry_floor = warden_config::retry_timeout_floor(min_ttl) as i64;
    if retry < retry_floor {
        return Some(if retry_floor == 3 && retry >= 1 {
            format!(
                "bootstrap.dcs.retry_timeout: {retry} is below the minimum of 3 seconds \
                 (1 with a warden.min_ttl below 8)"
            )
        } else {
            format!(
                "bootstrap.dcs.retry_timeout: {retry} is below the minimum of {retry_floor} seconds"
            )
        });
    }
    // When a shorter loop_wait (at least 1 s) satisfies the rule, the dynamic config
    // lowers it with Patroni's warning ("Violated the rule … Adjusting loop_wait"): the
    // adjusted timing is safe and says what it does, and Patroni's own suite starts nodes
    // that way (ttl 21, loop_wait 2, retry_timeout 10). A retry_timeout too long for the
    // ttl, which Patroni would silently shorten, is refused.
    if loop_wait + 2 * retry > ttl && 1 + 2 * retry > ttl {
        return Some(format!(
            "bootstrap.dcs: loop_wait ({loop_wait}) + 2*retry_timeout ({retry}) must not exceed ttl ({ttl}): \
             a leader that loses etcd could otherwise keep writing after its lock expired"
        ));
    }
    // Warden's rule for the leases shorter than 8 s (with retry_timeout >= 3 the rule
    // above implies it): the next renewal must land before the fence guard's deadline
    // with a second to spare, or a healthy primary would be fenced. As above, a loop_wait
    // that only needs lowering is lowered by the dynamic config with a warning.
    let fits = |lw: i64| {
        warden_core::ha::timing_fits_fence(ttl.max(0) as u64, lw.max(0) as u64, retry.max(0) as u64)
    };
    if !fits(loop_wait) && !fits(1) {
        let t = ttl.max(0) as u64;
        return Some(format!(
            "bootstrap.dcs: loop_wait ({loop_wait}) + retry_timeout ({retry}) + 1 must not exceed ttl ({ttl}) \
             minus the fence margin ({} ms): the fence guard would stop a healthy primary whose \
             renewal is merely slow",
            warden_core::ha::fence_margin_ms(t)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sample_is_a_valid_config() {
        let v = warden_config::parse_yaml_str(SAMPLE_CONFIG, "sample").expect("sample parses");
        assert_eq!(v["scope"], "batman");
        assert!(unsafe_timing(&v["bootstrap"]["dcs"], 20).is_none());
    }

    #[test]
    fn timing_rules() {
        assert!(unsafe_timing(&json!({}), 20).is_none());
        assert!(unsafe_timing(&json!({"ttl": 10}), 20)
            .unwrap()
            .contains("ttl"));
        assert!(unsafe_timing(&json!({"loop_wait": 0}), 20)
            .unwrap()
            .contains("loop_wait"));
        assert!(unsafe_timing(&json!({"retry_timeout": 1}), 20)
            .unwrap()
            .contains("retry_timeout"));
        let e = unsafe_timing(
            &json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10}),
            20,
        )
        .unwrap();
        assert!(e.contains("loop_wait (10) + 2*retry_timeout (10)"), "{e}");
        assert!(
            unsafe_timing(&json!({"ttl": 20, "loop_wait": 2, "retry_timeout": 5}), 20).is_none()
        );
        // Lowering loop_wait to 1 is enough: adjusted (with a warning), not refused.
        assert!(
            unsafe_timing(&json!({"ttl": 21, "loop_wait": 2, "retry_timeout": 10}), 20).is_none()
        );
        // warden.min_ttl lowers the floor; the loop_wait/retry_timeout rule still holds.
        let short = json!({"ttl": 8, "loop_wait": 2, "retry_timeout": 3});
        assert!(unsafe_timing(&short, 20)
            .unwrap()
            .contains("warden.min_ttl"));
        assert!(unsafe_timing(&short, 8).is_none());
        let e = unsafe_timing(&json!({"ttl": 8}), 8).unwrap();
        assert!(e.contains("loop_wait (10) + 2*retry_timeout (10)"), "{e}");
        let e = unsafe_timing(&json!({"ttl": 7, "loop_wait": 1, "retry_timeout": 3}), 8).unwrap();
        assert!(e.contains("below warden.min_ttl (8 seconds)"), "{e}");
        // The floor: ttl 4, loop_wait 1, retry_timeout 1 (1 s fence margin).
        let floor = json!({"ttl": 4, "loop_wait": 1, "retry_timeout": 1});
        assert!(unsafe_timing(&floor, 4).is_none());
        let e = unsafe_timing(&floor, 8).unwrap();
        assert!(e.contains("below warden.min_ttl (8 seconds)"), "{e}");
        let e = unsafe_timing(&floor, 20).unwrap();
        assert!(e.contains("Warden allows down to 4"), "{e}");
        // retry_timeout 1 only below min_ttl 8.
        let e = unsafe_timing(&json!({"ttl": 8, "loop_wait": 1, "retry_timeout": 1}), 8).unwrap();
        assert!(
            e.contains("retry_timeout: 1 is below the minimum of 3 seconds (1 with"),
            "{e}"
        );
        let e = unsafe_timing(&json!({"ttl": 4, "loop_wait": 1, "retry_timeout": 0}), 4).unwrap();
        assert!(
            e.contains("retry_timeout: 0 is below the minimum of 1 seconds"),
            "{e}"
        );
        // Patroni's rule holds but the renewal would not fit before the fence: refused
        // when even loop_wait 1 does not help, lowered (not refused) when it does.
        let e = unsafe_timing(&json!({"ttl": 4, "loop_wait": 1, "retry_timeout": 2}), 4);
        assert!(e.unwrap().contains("loop_wait (1) + 2*retry_timeout (2)"));
        let e = unsafe_timing(&json!({"ttl": 5, "loop_wait": 1, "retry_timeout": 2}), 4).unwrap();
        assert!(e.contains("loop_wait (1) + retry_timeout (2) + 1"), "{e}");
        assert!(e.contains("fence margin (1250 ms)"), "{e}");
        assert!(unsafe_timing(&json!({"ttl": 4, "loop_wait": 2, "retry_timeout": 1}), 4).is_none());
        assert!(
            unsafe_timing(&json!({"ttl": 3, "loop_wait": 1, "retry_timeout": 1}), 4)
                .unwrap()
                .contains("below warden.min_ttl (4 seconds)")
        );
    }
}
