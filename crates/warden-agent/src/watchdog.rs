//! The watchdog (ha-loop.md §11, Patroni's `watchdog/base.py` and `watchdog/linux.py`).
//!
//! While this node leads, a watchdog device is kept open and kicked right after every
//! successful leader lock renewal, from the HA loop only: an agent that freezes or
//! stalls stops kicking, and the device resets the machine before the lock can expire
//! (timeout = `ttl − safety_margin`). It is closed with the magic character (`V`) when
//! the node stops leading (pause, demotion, PostgreSQL not running as primary, clean
//! shutdown).
//!
//! Two drivers: the Linux device API (`default`: `WDIOC_SETTIMEOUT`/`WDIOC_GETTIMEOUT`
//! ioctls) and Patroni's `testing` driver, which the acceptance suite reads from a FIFO
//! (the timeout ioctls become writes of `Ctimeout=<n>\n`).
//!
//! This module only opens, kicks and closes. Whether a node whose `required` watchdog is
//! unusable may lead is decided by the pure core (`HaSettings::watchdog_failed`).

use crate::supervisor::Fence;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, error, info, warn};
use warden_config::{WatchdogDriver, WatchdogMode};

/// A watchdog operation failed (one line, naming the device).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WatchdogError(String);

/// `struct watchdog_info` of `<linux/watchdog.h>`.
#[repr(C)]
#[derive(Default)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

/// `WDIOF_SETTIMEOUT`: the timeout can be set.
const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// `WDIOF_MAGICCLOSE`: writing `V` before close disables the device.
const WDIOF_MAGICCLOSE: u32 = 0x0100;
const DEFAULT_DEVICE: &str = "/dev/watchdog";

nix::ioctl_read!(wdioc_getsupport, b'W', 0, WatchdogInfo);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, libc::c_int);

/// Timeout the watchdog is set to: `ttl − safety_margin`, or `ttl // 2` when
/// `safety_margin` is −1 (Patroni's `WatchdogConfig.timeout`).
pub fn watchdog_timeout(ttl: u64, safety_margin: i64) -> i64 {
    let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
    if safety_margin == -1 {
        ttl / 2
    } else {
        ttl.saturating_sub(safety_margin)
    }
}

/// What the watchdog does, from the local `watchdog` section and the dynamic timings.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    mode: WatchdogMode,
    driver: WatchdogDriver,
    device: PathBuf,
    safety_margin: i64,
    ttl: u64,
    loop_wait: u64,
}

impl Settings {
    fn timeout(&self) -> i64 {
        watchdog_timeout(self.ttl, self.safety_margin)
    }

    /// Seconds between the last possible keepalive and the watchdog firing; negative
    /// means the device would fire between two healthy keepalives.
    fn timing_slack(&self) -> i64 {
        self.timeout()
            .saturating_sub(i64::try_from(self.loop_wait).unwrap_or(i64::MAX))
    }

    fn same_device(&self, other: &Settings) -> bool {
        self.driver == other.driver && self.device == other.device
    }
}

/// An open watchdog device.
struct Device {
    file: File,
    driver: WatchdogDriver,
    path: PathBuf,
    /// The `testing` driver's timeout as last written (Patroni starts it at 60).
    testing_timeout: i64,
}

impl Device {
    /// Opens `path` write-only (this starts a Linux watchdog's timer). The `testing`
    /// FIFO is opened non-blocking first, so that a FIFO nobody reads fails (ENXIO)
    /// instead of hanging the HA loop, then switched back to blocking writes.
    fn open(driver: &WatchdogDriver, path: &Path) -> Result<Device, WatchdogError> {
        let testing = *driver == WatchdogDriver::Testing;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true);
        if testing {
            opts.custom_flags(libc::O_NONBLOCK);
        }
        let file = opts
            .open(path)
            .map_err(|e| WatchdogError(format!("Can't open watchdog device: {e}")))?;
        if testing {
            nix::fcntl::fcntl(
                &file,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            )
            .map_err(|e| WatchdogError(format!("Can't open watchdog device: {e}")))?;
        }
        Ok(Device {
            file,
            driver: driver.clone(),
            path: path.to_path_buf(),
            testing_timeout: 60,
        })
    }

    fn testing(&self) -> bool {
        self.driver == WatchdogDriver::Testing
    }

    /// `WDIOC_GETSUPPORT` (the `testing` driver supports magic close and set-timeout).
    fn support(&self) -> Result<WatchdogInfo, WatchdogError> {
        if self.testing() {
            let mut identity = [0u8; 32];
            let name = b"Watchdog test harness";
            identity[..name.len()].copy_from_slice(name);
            return Ok(WatchdogInfo {
                options: WDIOF_MAGICCLOSE | WDIOF_SETTIMEOUT,
                firmware_version: 0,
                identity,
            });
        }
        let mut info = WatchdogInfo::default();
        // SAFETY: `info` is a live, properly laid out `struct watchdog_info` the kernel
        // fills in; the fd belongs to `self.file` for the duration of the call.
        unsafe { wdioc_getsupport(self.file.as_raw_fd(), &mut info) }.map_err(|e| {
            WatchdogError(format!(
                "Could not get information about watchdog device: {e}"
            ))
        })?;
        Ok(info)
    }

    fn can_be_disabled(&self) -> bool {
        self.support()
            .is_ok_and(|s| s.options & WDIOF_MAGICCLOSE != 0)
    }

    fn has_set_timeout(&self) -> Result<bool, WatchdogError> {
        Ok(self.support()?.options & WDIOF_SETTIMEOUT != 0)
    }

    /// Patroni's `describe()`: the board identity (and firmware), plus the path when it
    /// is not the default device.
    fn describe(&self) -> String {
        let (identity, firmware) = match self.support() {
            Ok(s) => {
                let end = s.identity.iter().position(|b| *b == 0).unwrap_or(32);
                let id = String::from_utf8_lossy(&s.identity[..end]).into_owned();
                (id, s.firmware_version)
            }
            Err(_) => ("Linux watchdog device".to_string(), 0),
        };
        let mut d = identity;
        if firmware != 0 {
            d.push_str(&format!(" (firmware {firmware})"));
        }
        if self.path != Path::new(DEFAULT_DEVICE) {
            d.push_str(&format!(" at {}", self.path.display()));
        }
        d
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Resets the timer: one byte, `1` as Patroni writes.
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.write_all(b"1")
            .map_err(|e| WatchdogError(format!("Could not send watchdog keepalive: {e}")))
    }

    fn set_timeout(&mut self, timeout: i64) -> Result<(), WatchdogError> {
        if !(1..0xFFFF).contains(&timeout) {
            return Err(WatchdogError(format!(
                "Invalid timeout {timeout}. Supported values are between 1 and 65535"
            )));
        }
        if self.testing() {
            self.write_all(format!("Ctimeout={timeout}\n").as_bytes())
                .map_err(|e| {
                    WatchdogError(format!("Could not set timeout on watchdog device: {e}"))
                })?;
            self.testing_timeout = timeout;
            return Ok(());
        }
        let mut value = libc::c_int::try_from(timeout).unwrap_or(libc::c_int::MAX);
        // SAFETY: `value` is a live c_int the kernel reads and writes back.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut value) }
            .map_err(|e| WatchdogError(format!("Could not set timeout on watchdog device: {e}")))?;
        Ok(())
    }

    fn get_timeout(&self) -> Result<i64, WatchdogError> {
        if self.testing() {
            return Ok(self.testing_timeout);
        }
        let mut value: libc::c_int = 0;
        // SAFETY: `value` is a live c_int the kernel writes.
        unsafe { wdioc_gettimeout(self.file.as_raw_fd(), &mut value) }
            .map_err(|e| WatchdogError(format!("Could not get timeout on watchdog device: {e}")))?;
        Ok(i64::from(value))
    }

    /// Magic close: `V`, then close (the device stops counting).
    fn close(mut self) -> Result<(), WatchdogError> {
        let r = self.write_all(b"V");
        let describe = self.describe();
        drop(self.file);
        r.map_err(|e| WatchdogError(format!("Error while closing {describe}: {e}")))
    }
}

/// The node's watchdog: configuration, the open device (if any) and whether the HA loop
/// wants it armed (Patroni's `Watchdog` facade).
pub struct Watchdog {
    config: Settings,
    /// The configuration the open device was set up with; a new timeout is applied at
    /// the next keepalive, so that it matches the lock renewal it follows.
    active_config: Settings,
    device: Option<Device>,
    /// The loop wants the watchdog armed (between activate and disable).
    active: bool,
    /// Activation failed: unusable until the configuration changes (Patroni switches to
    /// its null watchdog).
    failed: bool,
    /// Told whether the watchdog fences this node (the guards stand down meanwhile).
    fence: Option<Arc<Fence>>,
}

impl Watchdog {
    /// The watchdog for this configuration; nothing is opened yet. `required` with a
    /// driver Warden does not have is an error (Patroni exits at start the same way).
    pub fn new(
        cfg: &warden_config::Watchdog,
        ttl: u64,
        loop_wait: u64,
    ) -> Result<Watchdog, WatchdogError> {
        let config = settings(cfg, ttl, loop_wait);
        if config.mode == WatchdogMode::Required
            && matches!(config.driver, WatchdogDriver::Unsupported(_))
        {
            return Err(WatchdogError(
                "Configuration requires a watchdog, but watchdog is not supported on this platform."
                    .into(),
            ));
        }
        Ok(Watchdog {
            active_config: config.clone(),
            config,
            device: None,
            active: false,
            failed: false,
            fence: None,
        })
    }

    /// Keeps `fence` informed whether the watchdog fences this node.
    pub fn with_fence(mut self, fence: Arc<Fence>) -> Watchdog {
        self.fence = Some(fence);
        self.tell_fence();
        self
    }

    fn tell_fence(&self) {
        if let Some(f) = &self.fence {
            f.set_watchdog_armed(self.fencing_timeout().is_some());
        }
    }

    /// New local config or dynamic timings (Patroni's `reload_config`). Turning the
    /// watchdog off takes effect at once; while it is armed, other changes wait for the
    /// next keepalive; while it is not, they apply now and forget an earlier failure.
    pub fn update(&mut self, cfg: &warden_config::Watchdog, ttl: u64, loop_wait: u64) {
        let new = settings(cfg, ttl, loop_wait);
        if new == self.config {
            return;
        }
        self.config = new;
        if self.config.mode == WatchdogMode::Off {
            self.close_device();
            self.active_config = self.config.clone();
        }
        if !self.active {
            self.failed = false;
            self.active_config = self.config.clone();
        }
        self.tell_fence();
    }

    /// Patroni's `is_healthy` (REST `watchdog_failed` is its negation): outside
    /// `required` mode always; in it, the timing leaves slack and the device exists and
    /// is writable (and no activation has failed).
    pub fn is_healthy(&self) -> bool {
        if self.config.mode != WatchdogMode::Required {
            return true;
        }
        self.config.timing_slack() >= 0
            && !self.failed
            && !matches!(self.config.driver, WatchdogDriver::Unsupported(_))
            && device_writable(&self.config.device)
    }

    /// The device is open.
    pub fn is_running(&self) -> bool {
        self.device.is_some()
    }

    /// The device's timeout in seconds while it is open and fires before the leader
    /// lock (`ttl`) can expire: then it, not the fence guard, fences this node.
    pub fn fencing_timeout(&self) -> Option<i64> {
        let timeout = self.device.as_ref()?.get_timeout().ok()?;
        let ttl = i64::try_from(self.active_config.ttl).unwrap_or(i64::MAX);
        (timeout > 0 && timeout < ttl).then_some(timeout)
    }

    /// Opens and sets up the device if it is not running (P1, after bootstrap). Errors
    /// only in `required` mode when no safe watchdog could be set up; `automatic` goes on
    /// without one.
    pub fn activate(&mut self) -> Result<(), WatchdogError> {
        self.active = true;
        let r = self.open_if_closed();
        self.tell_fence();
        r
    }

    fn open_if_closed(&mut self) -> Result<(), WatchdogError> {
        if self.is_running() {
            return Ok(());
        }
        if self.failed {
            // As Patroni's null watchdog: no new attempt until the configuration changes
            // (a device that failed once is not reopened, and closed, every cycle).
            return if self.config.mode == WatchdogMode::Required {
                Err(WatchdogError(
                    "Configuration requires watchdog, but watchdog could not be activated".into(),
                ))
            } else {
                Ok(())
            };
        }
        self.active_config = self.config.clone();
        let c = self.config.clone();
        let required = c.mode == WatchdogMode::Required;
        if c.mode == WatchdogMode::Off {
            return Ok(());
        }
        let mut actual = None;
        if c.timing_slack() < 0 {
            warn!(
                "Watchdog not supported because leader TTL {} is less than 2x loop_wait {}",
                c.ttl, c.loop_wait
            );
            self.failed = true;
        } else if matches!(c.driver, WatchdogDriver::Unsupported(_)) {
            self.failed = true;
        } else {
            match self.open_and_set_timeout(&c) {
                Ok(t) => actual = t,
                Err(e) => {
                    let what = format!("Could not activate {}: {e}", describe_path(&c));
                    if required {
                        warn!("{what}");
                    } else {
                        debug!("{what}");
                    }
                    self.failed = true;
                }
            }
        }
        if let Some(dev) = &self.device {
            if !dev.can_be_disabled() {
                warn!("Watchdog implementation can't be disabled. Watchdog will trigger after Patroni loses leader key.");
            }
        }
        let unsafe_timeout = actual.is_some_and(|t| t > c.timeout());
        if !self.is_running() || unsafe_timeout {
            if required {
                match (self.is_running(), actual) {
                    (true, Some(t)) => error!(
                        "Configuration requires watchdog, but a safe watchdog timeout {} could not be configured. Watchdog timeout is {t}.",
                        c.timeout()
                    ),
                    _ => error!("Configuration requires watchdog, but watchdog could not be configured."),
                }
                // Unlike Patroni, do not leave an unsafe device running: this node will
                // not lead, so nothing would kick it.
                self.close_device();
                self.failed = true;
                return Err(WatchdogError(
                    "Configuration requires watchdog, but watchdog could not be activated".into(),
                ));
            }
            if let (true, Some(t)) = (self.is_running(), actual) {
                warn!(
                    "Watchdog timeout {t} seconds does not ensure safe termination within {} seconds",
                    c.timeout()
                );
            }
        }
        if let (Some(dev), Some(t)) = (&self.device, actual) {
            info!(
                "{} activated with {t} second timeout, timing slack {} seconds",
                dev.describe(),
                c.timing_slack()
            );
        }
        Ok(())
    }

    /// Opens the device and sets the timeout; returns the timeout in effect, or `None`
    /// when the device had to be closed again because its timeout is shorter than
    /// `loop_wait` (it would fire between two healthy keepalives).
    fn open_and_set_timeout(&mut self, c: &Settings) -> Result<Option<i64>, WatchdogError> {
        let mut dev = Device::open(&c.driver, &c.device)?;
        let r = (|| {
            if dev.has_set_timeout()? {
                dev.set_timeout(c.timeout())?;
            }
            dev.get_timeout()
        })();
        let actual = match r {
            Ok(t) => t,
            Err(e) => {
                // Opening started the timer: do not leave it running.
                let _ = dev.close();
                return Err(e);
            }
        };
        let loop_wait = i64::try_from(c.loop_wait).unwrap_or(i64::MAX);
        if actual < loop_wait {
            error!(
                "loop_wait of {loop_wait} seconds is too long for watchdog {actual} second timeout"
            );
            if dev.can_be_disabled() {
                info!("Disabling watchdog due to unsafe timeout.");
                let _ = dev.close();
                return Ok(None);
            }
        }
        self.device = Some(dev);
        Ok(Some(actual))
    }

    /// Kicks the device (right after a successful lock renewal), then applies a pending
    /// configuration change (a new timeout after `ttl` changed).
    pub fn keepalive(&mut self) {
        if !self.active {
            return;
        }
        if let Some(dev) = &mut self.device {
            if let Err(e) = dev.keepalive() {
                error!("Error while sending keepalive: {e}");
            }
        }
        if self.config == self.active_config {
            return;
        }
        if !self.config.same_device(&self.active_config)
            || self.active_config.mode == WatchdogMode::Off
        {
            self.close_device();
            self.failed = false;
            if let Err(e) = self.open_if_closed() {
                error!("{e}");
            }
        } else if self.config.timeout() != self.active_config.timeout() {
            let timeout = self.config.timeout();
            if let Some(dev) = &mut self.device {
                match dev.set_timeout(timeout) {
                    Ok(()) => info!(
                        "{} updated with {} second timeout, timing slack {} seconds",
                        dev.describe(),
                        dev.get_timeout().unwrap_or(timeout),
                        self.config.timing_slack()
                    ),
                    Err(e) => error!("Error while sending keepalive: {e}"),
                }
            }
        }
        self.active_config = self.config.clone();
        self.tell_fence();
    }

    /// Disarms the watchdog (magic close) when this node stops leading.
    pub fn disable(&mut self) {
        self.close_device();
        self.active = false;
        self.tell_fence();
    }

    fn close_device(&mut self) {
        let Some(mut dev) = self.device.take() else {
            return;
        };
        if !dev.can_be_disabled() {
            // Give the administrator some time to clean up before the reset.
            let _ = dev.keepalive();
            warn!(
                "Watchdog implementation can't be disabled. System will reboot after {} seconds when watchdog times out.",
                dev.get_timeout().unwrap_or(0)
            );
        }
        if let Err(e) = dev.close() {
            error!("Error while disabling watchdog: {e}");
        }
    }
}

fn settings(cfg: &warden_config::Watchdog, ttl: u64, loop_wait: u64) -> Settings {
    Settings {
        mode: cfg.mode,
        driver: cfg.driver.clone(),
        device: cfg.device.clone(),
        safety_margin: cfg.safety_margin,
        ttl,
        loop_wait,
    }
}

fn describe_path(c: &Settings) -> String {
    match &c.driver {
        WatchdogDriver::Testing => format!("Watchdog test harness at {}", c.device.display()),
        _ if c.device == Path::new(DEFAULT_DEVICE) => "Linux watchdog device".into(),
        _ => format!("Linux watchdog device at {}", c.device.display()),
    }
}

/// Patroni's `LinuxWatchdogDevice.is_healthy`: the device exists and this process may
/// write it.
fn device_writable(path: &Path) -> bool {
    path.exists() && nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warden_testkit::watchdog::{FifoWatchdog, WatchdogEvent};
    use warden_testkit::RunAs;

    #[test]
    fn timeout_arithmetic_as_patroni() {
        assert_eq!(watchdog_timeout(30, 5), 25);
        assert_eq!(watchdog_timeout(21, 5), 16);
        assert_eq!(watchdog_timeout(21, -1), 10);
        assert_eq!(watchdog_timeout(20, 25), -5);
        let s = |ttl, loop_wait, safety_margin| Settings {
            mode: WatchdogMode::Required,
            driver: WatchdogDriver::Linux,
            device: PathBuf::from(DEFAULT_DEVICE),
            safety_margin,
            ttl,
            loop_wait,
        };
        assert_eq!(s(30, 10, 5).timing_slack(), 15);
        assert_eq!(s(20, 10, 5).timing_slack(), 5);
        assert_eq!(s(20, 10, -1).timing_slack(), 0);
        assert_eq!(s(20, 12, -1).timing_slack(), -2);
    }

    #[test]
    fn ioctl_numbers_match_linux() {
        // _IOR('W', 0, struct watchdog_info), _IOWR('W', 6, int), _IOR('W', 7, int) on
        // x86_64/aarch64 (<linux/watchdog.h>).
        assert_eq!(nix::request_code_read!(b'W', 0, 40), 0x8028_5700);
        assert_eq!(nix::request_code_readwrite!(b'W', 6, 4), 0xC004_5706);
        assert_eq!(nix::request_code_read!(b'W', 7, 4), 0x8004_5707);
        assert_eq!(std::mem::size_of::<WatchdogInfo>(), 40);
    }

    fn cfg(mode: WatchdogMode, device: &Path) -> warden_config::Watchdog {
        warden_config::Watchdog {
            mode,
            device: device.to_path_buf(),
            safety_margin: 5,
            driver: WatchdogDriver::Testing,
        }
    }

    fn monitor() -> (tempfile::TempDir, FifoWatchdog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = FifoWatchdog::create(&dir.path().join("watchdog.fifo"), &RunAs::detect());
        (dir, m)
    }

    #[test]
    fn testing_driver_speaks_the_fifo_protocol() {
        let (_dir, m) = monitor();
        let mut wd = Watchdog::new(&cfg(WatchdogMode::Required, &m.path), 21, 10).expect("new");
        assert!(wd.is_healthy());
        wd.keepalive(); // not armed yet: nothing written
        wd.activate().expect("activates");
        assert!(wd.is_running());
        assert_eq!(wd.fencing_timeout(), Some(16));
        wd.keepalive();
        // ttl 20: the new timeout goes out right after the next keepalive.
        wd.update(&cfg(WatchdogMode::Required, &m.path), 20, 10);
        wd.keepalive();
        assert_eq!(wd.fencing_timeout(), Some(15));
        wd.disable();
        assert!(!wd.is_running());
        wd.keepalive(); // disarmed: nothing written
        use WatchdogEvent::*;
        let want = [Timeout(16), Ping, Ping, Timeout(15), MagicClose, Closed];
        assert!(
            m.wait_for(Duration::from_secs(5), |e| e.len() >= want.len()),
            "{:?}",
            m.kinds()
        );
        assert_eq!(m.kinds(), want);
        // Activating again opens a new session with the current timeout.
        wd.activate().expect("activates again");
        wd.disable();
        assert!(m.wait_for(Duration::from_secs(5), |e| e.ends_with(&[
            Timeout(15),
            MagicClose,
            Closed
        ])));
    }

    #[test]
    fn required_without_a_reader_fails_instead_of_hanging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("watchdog.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let mut wd = Watchdog::new(&cfg(WatchdogMode::Required, &path), 30, 10).expect("new");
        assert!(wd.is_healthy(), "exists and is writable");
        assert!(wd.activate().is_err());
        assert!(!wd.is_running());
        assert!(!wd.is_healthy(), "failed until the configuration changes");
        // A reader appearing later does not matter until then: no new attempt.
        let m = FifoWatchdog::create(&dir.path().join("other.fifo"), &RunAs::detect());
        std::fs::remove_file(&path).expect("rm");
        std::fs::hard_link(&m.path, &path).expect("link the monitored FIFO");
        assert!(wd.activate().is_err());
        assert!(m.kinds().is_empty());
        wd.disable();
        let mut other = cfg(WatchdogMode::Required, &path);
        other.safety_margin = 6;
        wd.update(&other, 30, 10);
        assert!(wd.is_healthy());
        wd.activate().expect("activates once the FIFO has a reader");
        wd.disable();
        use WatchdogEvent::*;
        assert!(m.wait_for(Duration::from_secs(5), |e| e
            == [Timeout(24), MagicClose, Closed]));
    }

    #[test]
    fn automatic_goes_on_without_a_device_and_required_reports_it() {
        let missing = Path::new("/nonexistent/watchdog");
        let mut wd = Watchdog::new(&cfg(WatchdogMode::Automatic, missing), 30, 10).expect("new");
        assert!(wd.is_healthy());
        assert!(wd.activate().is_ok());
        assert!(!wd.is_running());
        assert_eq!(wd.fencing_timeout(), None);
        let wd = Watchdog::new(&cfg(WatchdogMode::Required, missing), 30, 10).expect("new");
        assert!(!wd.is_healthy());
    }

    #[test]
    fn timing_without_slack_is_unusable() {
        let (_dir, m) = monitor();
        // ttl 20 - 5 = 15 < loop_wait 16.
        let mut wd = Watchdog::new(&cfg(WatchdogMode::Required, &m.path), 20, 16).expect("new");
        assert!(!wd.is_healthy());
        assert!(wd.activate().is_err());
        assert!(!wd.is_running());
        // automatic: goes on without it.
        let mut wd = Watchdog::new(&cfg(WatchdogMode::Automatic, &m.path), 20, 16).expect("new");
        assert!(wd.activate().is_ok());
        assert!(!wd.is_running());
        assert!(m.kinds().is_empty(), "{:?}", m.kinds());
    }

    #[test]
    fn mode_off_closes_an_armed_watchdog_at_once() {
        let (_dir, m) = monitor();
        let mut wd = Watchdog::new(&cfg(WatchdogMode::Automatic, &m.path), 30, 10).expect("new");
        wd.activate().expect("activates");
        assert!(wd.is_running());
        wd.update(&cfg(WatchdogMode::Off, &m.path), 30, 10);
        assert!(!wd.is_running());
        assert!(m.wait_for(Duration::from_secs(5), |e| e
            .ends_with(&[WatchdogEvent::MagicClose, WatchdogEvent::Closed])));
    }

    #[test]
    fn required_with_an_unknown_driver_is_refused() {
        let mut c = cfg(WatchdogMode::Required, Path::new(DEFAULT_DEVICE));
        c.driver = WatchdogDriver::Unsupported("bsd".into());
        assert!(Watchdog::new(&c, 30, 10).is_err());
        c.mode = WatchdogMode::Automatic;
        assert!(Watchdog::new(&c, 30, 10).is_ok());
    }
}
