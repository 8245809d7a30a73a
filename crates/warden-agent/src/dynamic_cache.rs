//! `<data_dir>/patroni.dynamic.json`: the last dynamic configuration this node applied,
//! kept as Patroni keeps it (its `Config.save_cache`/`_load_cache`).
//!
//! A node that starts while the DCS has no `config` key (a wiped DCS, a new scope)
//! takes this copy before `bootstrap.dcs`, and as lock holder publishes it again (L4).
//! Tools rely on the file too: Patroni's acceptance suite deletes it to "bootstrap" a
//! standby cluster from an existing data directory.

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file name inside the data directory.
pub const FILE_NAME: &str = "patroni.dynamic.json";

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The saved dynamic configuration, if the file holds a JSON object. A file that cannot
/// be read or parsed is reported and ignored (Patroni logs and goes on too).
pub fn load(data_dir: &Path) -> Option<Value> {
    let p = path(data_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!("cannot read {}: {e}; ignoring it", p.display());
            return None;
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Some(v),
        Ok(_) => {
            tracing::warn!("{}: not a JSON object; ignoring it", p.display());
            None
        }
        Err(e) => {
            tracing::warn!("{}: invalid JSON ({e}); ignoring it", p.display());
            None
        }
    }
}

/// Writes `value` atomically (temporary file in the data directory, then rename), with
/// the mode PostgreSQL gives its own files in this data directory (0640 when the
/// directory allows group access, else 0600).
pub fn save(data_dir: &Path, value: &Value) -> std::io::Result<()> {
    let group = std::fs::metadata(data_dir)?.mode() & 0o050 == 0o050;
    let mode = if group { 0o640 } else { 0o600 };
    let tmp = data_dir.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(value.to_string().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path(data_dir))
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_objects_only() {
        let dir = std::env::temp_dir().join(format!("warden-dyncache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(load(&dir), None);
        let v = serde_json::json!({"ttl": 30, "standby_cluster": {"host": "h"}});
        save(&dir, &v).expect("save");
        assert_eq!(load(&dir), Some(v));
        let md = std::fs::metadata(dir.join(FILE_NAME)).expect("stat");
        assert_eq!(md.mode() & 0o777, 0o600);
        std::fs::write(dir.join(FILE_NAME), "[1]").expect("write");
        assert_eq!(load(&dir), None);
        std::fs::write(dir.join(FILE_NAME), "{broken").expect("write");
        assert_eq!(load(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
