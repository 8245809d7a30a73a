//! `warden-guard --fence-guard DATA_DIR --parent-pid PID`: the external fence guard the
//! agent starts beside itself (see `warden_guard::guard`). It stops the primary of
//! DATA_DIR when the agent PID stops renewing its leader-lock deadline, also when that
//! agent is killed or frozen. Not meant to be started by hand.

fn main() {
    let Some((dir, parent)) = warden_guard::guard::parse_args(std::env::args_os().skip(1)) else {
        eprintln!("usage: warden-guard --fence-guard DATA_DIR --parent-pid PID (started by the warden agent)");
        std::process::exit(2);
    };
    std::process::exit(warden_guard::guard::run(&dir, parent, || {
        // After the set-up: what it ran once (and its neighbours) need not stay resident.
        let _ = warden_guard::memory::release_mapped_code();
    }));
}
