//! systemd's notification protocol (sd_notify(3)): READY=1, WATCHDOG=1, STATUS=.
//!
//! A datagram to the socket named by `NOTIFY_SOCKET` (a path, or an abstract
//! name written with a leading `@`). Without `NOTIFY_SOCKET` (not started by
//! systemd as Type=notify) every call does nothing.

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

/// Sends `state` (newline-separated `KEY=value` lines) to the service manager.
/// Failures are logged once, never fatal: the daemon serves with or without systemd.
pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&path, state) {
        use std::sync::atomic::{AtomicBool, Ordering};
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!("sd_notify to {}: {e}", path.to_string_lossy());
        }
    }
}

fn send_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// READY=1 with a STATUS line: start-up is over (the first sync is done).
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// STOPPING=1: the daemon is shutting down.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping; the pinned fast path keeps answering");
}

/// Pings the watchdog at half of `WATCHDOG_USEC` when systemd asks for it.
/// [`Watchdog::tick`] is called from the main loop itself, so a loop that
/// stops turning stops pinging and systemd restarts the daemon.
pub struct Watchdog {
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must be this process when set).
    pub fn from_env() -> Self {
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&u| u > 0);
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        Self {
            every: usec
                .filter(|_| for_us)
                .map(|u| Duration::from_micros(u / 2)),
            last: None,
        }
    }

    /// Sends WATCHDOG=1 when half the watchdog interval has passed since the last ping.
    pub fn tick(&mut self) {
        let Some(every) = self.every else { return };
        if self.last.is_none_or(|t| t.elapsed() >= every) {
            send("WATCHDOG=1");
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both address forms reach a bound socket with the exact bytes.
    #[test]
    fn path_and_abstract_sockets_receive_the_state() {
        let dir = std::env::temp_dir().join(format!("xdhcp-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let by_path = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        use std::os::linux::net::SocketAddrExt;
        let name = format!("xdhcp-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_sock = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let n = abstract_sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
