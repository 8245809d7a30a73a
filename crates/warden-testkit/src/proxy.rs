//! A TCP proxy on loopback that a test can cut, to partition processes from each other
//! without root network tricks (agents run as the PostgreSQL user; iptables/netns would
//! need privileges a CI job may not have, and would touch the whole machine).
//!
//! Each [`TcpProxy`] listens on its own 127.0.0.1 port and forwards every accepted
//! connection to one target port, byte for byte. [`TcpProxy::cut`] partitions it:
//!
//! * [`Cut::Reset`]: current connections are reset (RST) and new ones are reset as soon
//!   as they are accepted, like a peer whose host answers "connection refused".
//! * [`Cut::Blackhole`]: current connections stop forwarding in both directions but stay
//!   open, and new ones are accepted and then never answered, like packets silently
//!   dropped by a broken link: every client call ends in *its own* timeout, the hard case.
//!   (The TCP handshake still completes: the kernel accepts before the proxy does, so a
//!   client sees a read timeout where a real blackhole would give a connect timeout.)
//!
//! [`TcpProxy::cut_from`] cuts only connections opened by given processes (found through
//! `/proc`: the client socket's inode among the process's file descriptors), so one proxy
//! in front of a REST API can refuse the isolated agent while the others still reach it.
//! [`TcpProxy::restore`] lets new connections through again; connections held by a
//! blackhole are reset then (their clients have long given up on them).
//!
//! The proxy runs on its own thread and tokio runtime, so it works the same under
//! synchronous tests and any test runtime; dropping it stops the thread and closes every
//! socket it holds.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How a cut behaves, see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// reset connections (fast failures)
    Reset,
    /// hold connections open and never forward (timeouts)
    Blackhole,
}

/// What the proxy does with a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Pass,
    /// Cut connections from these processes (None: from everyone).
    Cut {
        how: Cut,
        from: Option<BTreeSet<u32>>,
    },
}

impl Rule {
    /// The cut that applies to a connection whose client socket has `inode`, if any.
    fn applies_to(&self, inode: Option<u64>) -> Option<Cut> {
        match self {
            Rule::Pass => None,
            Rule::Cut { how, from: None } => Some(*how),
            Rule::Cut {
                how,
                from: Some(pids),
            } => {
                let ino = inode?;
                pids.iter()
                    .any(|p| process_has_socket(*p, ino))
                    .then_some(*how)
            }
        }
    }
}

/// Counters of what the proxy did (a test checks its cut really met traffic).
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    cut: AtomicU64,
}

/// A cuttable TCP forwarder from a 127.0.0.1 port to a target port; stopped on drop.
pub struct TcpProxy {
    port: u16,
    target: u16,
    rule: watch::Sender<Rule>,
    counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpProxy {
    /// Starts forwarding a free 127.0.0.1 port (see [`crate::free_port`]) to
    /// `127.0.0.1:target`. Panics if no port can be bound.
    pub fn start(target: u16) -> TcpProxy {
        let listener = (0..20)
            .find_map(|_| std::net::TcpListener::bind(("127.0.0.1", crate::free_port())).ok())
            .expect("bind a port for the TCP proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let port = listener
            .local_addr()
            .expect("proxy listener address")
            .port();
        let (rule, rule_rx) = watch::channel(Rule::Pass);
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio proxy listener");
                    tokio::select! {
                        _ = accept_loop(listener, port, target, rule_rx, c) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task and its sockets.
            })
            .expect("spawn the proxy thread");
        TcpProxy {
            port,
            target,
            rule,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port connections are forwarded to.
    pub fn target(&self) -> u16 {
        self.target
    }

    /// `127.0.0.1:<port>`
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts every connection, current and new.
    pub fn cut(&self, how: Cut) {
        self.rule.send_replace(Rule::Cut { how, from: None });
    }

    /// Cuts the connections, current and new, that the processes `pids` open (their
    /// threads included: they share the file descriptor table). A process started after
    /// this call is not covered.
    pub fn cut_from(&self, how: Cut, pids: &[u32]) {
        self.rule.send_replace(Rule::Cut {
            how,
            from: Some(pids.iter().copied().collect()),
        });
    }

    /// Forwards new connections again (and resets those a blackhole was holding).
    pub fn restore(&self) {
        self.rule.send_replace(Rule::Pass);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections a cut has reset or held so far (current and new ones).
    pub fn cut_connections(&self) -> u64 {
        self.counters.cut.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    target: u16,
    rule: watch::Receiver<Rule>,
    counters: Arc<Counters>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // EMFILE and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::SeqCst);
        // The inode of the client's socket identifies its process for `cut_from`; it
        // must be read now, while the connection is established.
        let inode = client_socket_inode(peer, port);
        tokio::spawn(connection(
            client,
            inode,
            target,
            rule.clone(),
            counters.clone(),
        ));
    }
}

/// One proxied connection from accept to close.
async fn connection(
    mut client: TcpStream,
    inode: Option<u64>,
    target: u16,
    mut rule: watch::Receiver<Rule>,
    counters: Arc<Counters>,
) {
    let applies = rule.borrow_and_update().applies_to(inode);
    if let Some(how) = applies {
        counters.cut.fetch_add(1, Ordering::SeqCst);
        end_cut(how, &client, None, inode, &mut rule).await;
        return;
    }
    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect((Ipv4Addr::LOCALHOST, target)),
    );
    let mut server = match connect.await {
        Ok(Ok(s)) => s,
        _ => {
            // The target is down: the client sees what it would have seen.
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let how = tokio::select! {
        // Either side closed (or failed): the copy shuts the other side down in turn.
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => None,
        how = until_cut(&mut rule, inode) => how,
    };
    // A cancelled copy may drop bytes it had read: harmless, this connection never
    // forwards anything again.
    if let Some(how) = how {
        counters.cut.fetch_add(1, Ordering::SeqCst);
        end_cut(how, &client, Some(&server), inode, &mut rule).await;
    }
}

/// Waits until a cut applies to this connection (None: the proxy is stopping).
async fn until_cut(rule: &mut watch::Receiver<Rule>, inode: Option<u64>) -> Option<Cut> {
    loop {
        rule.changed().await.ok()?;
        if let Some(how) = rule.borrow_and_update().applies_to(inode) {
            return Some(how);
        }
    }
}

/// Ends a cut connection: at once for a reset; for a blackhole, after holding it without
/// a byte forwarded until the cut no longer applies. Both sockets are closed with RST.
async fn end_cut(
    how: Cut,
    client: &TcpStream,
    server: Option<&TcpStream>,
    inode: Option<u64>,
    rule: &mut watch::Receiver<Rule>,
) {
    if how == Cut::Blackhole {
        loop {
            if rule.changed().await.is_err() {
                break;
            }
            if rule.borrow_and_update().applies_to(inode).is_none() {
                break;
            }
        }
    }
    let _ = client.set_zero_linger();
    if let Some(s) = server {
        let _ = s.set_zero_linger();
    }
}

/// The inode of the socket at `peer` connected to 127.0.0.1:`port` (from
/// `/proc/net/tcp`), i.e. the client's end of an accepted connection.
fn client_socket_inode(peer: SocketAddr, port: u16) -> Option<u64> {
    let SocketAddr::V4(peer) = peer else {
        return None;
    };
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("{}:{:04X}", hex_ip(*peer.ip()), peer.port());
    let remote = format!("{}:{:04X}", hex_ip(Ipv4Addr::LOCALHOST), port);
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 9 && f[1] == local && f[2] == remote {
            f[9].parse().ok()
        } else {
            None
        }
    })
}

/// An IPv4 address as `/proc/net/tcp` prints it: the 32-bit value in host byte order.
fn hex_ip(ip: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_ne_bytes(ip.octets()))
}

/// Does process `pid` hold the socket with this inode?
fn process_has_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .is_some_and(|l| l.as_os_str() == want.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server on a free port (a thread per connection), for the proxy to front.
    fn echo_server() -> u16 {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn connect(p: &TcpProxy) -> std::net::TcpStream {
        let s = std::net::TcpStream::connect(("127.0.0.1", p.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s
    }

    /// Sends `msg` and reads the echo: Ok(reply) or the error kind.
    fn echo(s: &mut std::net::TcpStream, msg: &[u8]) -> Result<Vec<u8>, std::io::ErrorKind> {
        s.write_all(msg).map_err(|e| e.kind())?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).map_err(|e| e.kind())?;
        Ok(buf)
    }

    fn is_timeout(k: std::io::ErrorKind) -> bool {
        matches!(
            k,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    }

    #[test]
    fn forwards_and_resets() {
        let p = TcpProxy::start(echo_server());
        let mut a = connect(&p);
        assert_eq!(echo(&mut a, b"ping").unwrap(), b"ping");
        p.cut(Cut::Reset);
        // Let the connection task see the cut before writing.
        std::thread::sleep(Duration::from_millis(100));
        // The current connection is reset (the first write may still be accepted by the
        // kernel, the read then fails), and so is a new one.
        let e = echo(&mut a, b"x").unwrap_err();
        assert!(
            !is_timeout(e),
            "a reset must not look like a timeout: {e:?}"
        );
        let mut b = connect(&p);
        let e = echo(&mut b, b"x").unwrap_err();
        assert!(!is_timeout(e), "{e:?}");
        p.restore();
        let mut c = connect(&p);
        assert_eq!(echo(&mut c, b"again").unwrap(), b"again");
        assert!(p.cut_connections() >= 2);
    }

    #[test]
    fn blackhole_holds_connections_until_restored() {
        let p = TcpProxy::start(echo_server());
        let mut a = connect(&p);
        assert_eq!(echo(&mut a, b"ping").unwrap(), b"ping");
        p.cut(Cut::Blackhole);
        // Let the connection task see the cut before writing.
        std::thread::sleep(Duration::from_millis(100));
        let e = echo(&mut a, b"x").unwrap_err();
        assert!(is_timeout(e), "a blackhole times out: {e:?}");
        let mut b = connect(&p);
        let e = echo(&mut b, b"x").unwrap_err();
        assert!(is_timeout(e), "{e:?}");
        p.restore();
        // Held connections are reset on restore; new ones pass.
        let e = echo(&mut a, b"y").unwrap_err();
        assert!(!is_timeout(e), "{e:?}");
        let mut c = connect(&p);
        assert_eq!(echo(&mut c, b"again").unwrap(), b"again");
    }

    #[test]
    fn cuts_only_the_named_process() {
        let p = TcpProxy::start(echo_server());
        // This process's connections are cut, another process's are not.
        let mut mine = connect(&p);
        assert_eq!(echo(&mut mine, b"1").unwrap(), b"1");
        p.cut_from(Cut::Reset, &[std::process::id()]);
        std::thread::sleep(Duration::from_millis(100));
        assert!(echo(&mut mine, b"2").is_err());
        let mut fresh = connect(&p);
        assert!(echo(&mut fresh, b"3").is_err());
        p.cut_from(Cut::Reset, &[1]);
        let mut after = connect(&p);
        assert_eq!(echo(&mut after, b"4").unwrap(), b"4");
    }
}
