//! The nudger: keeps tiny_http's connection pool from stranding a connection.
//!
//! The problem. tiny_http 0.12 serves each connection on a thread of its task pool for the
//! connection's whole life. `TaskPool::spawn` queues a new connection instead of starting a
//! thread when it counts an idle thread, but the idle count drops only once the woken thread
//! has re-taken the pool's lock. Connections accepted back to back can therefore all be queued
//! for the same few idle threads; the surplus waits until some pool thread finishes a
//! connection, which with keep-alive clients may be never: those clients get no answer at all.
//! Measured here with 16 clients connecting at once to a freshly started server, without the
//! nudger: 5 of 10 servers left 1 to 8 clients unanswered for more than a second.
//!
//! The remedy. A pool thread that finishes a connection takes the next queued one. So the
//! nudger opens a connection to the server and closes it at once: it either goes to a fresh pool
//! thread (when none counts as idle), which finishes it immediately and then serves the oldest
//! queued connection, or it is queued behind a stranded one, which an idle thread then takes.
//! Each nudge frees one stranded connection, and a burst can strand a dozen, so nudges come
//! every [`FAST`] while requests are arriving (a burst that strands some connections serves
//! others, whose requests wake the nudger at once) and every [`SLOW`] otherwise, so an idle
//! server costs almost nothing. Nudges carry no request: they never reach a worker or the
//! access log. tiny_http offers nothing better: it has no per-connection timeout, and a receive
//! timeout on the listening socket stops its accept loop for good.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// The nudge interval while requests are arriving.
pub const FAST: Duration = Duration::from_millis(10);
/// The nudge interval of an idle server.
pub const SLOW: Duration = Duration::from_millis(200);
/// How long after the last request the nudger stays fast.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(2);

struct Shared {
    stop: AtomicBool,
    /// Set by workers when a request arrives, cleared by the nudger.
    activity: AtomicBool,
    /// True while the nudger sleeps for [`SLOW`]; the first request then wakes it.
    idle: AtomicBool,
}

/// The running nudger thread.
pub struct Nudger {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

/// Lets workers tell the nudger that requests are arriving.
#[derive(Clone)]
pub struct Activity {
    shared: Arc<Shared>,
    thread: Thread,
}

impl Activity {
    /// Called by a worker for every request; wakes the nudger only when it was idle. Costs
    /// two relaxed loads per request on a busy server.
    pub fn request_seen(&self) {
        if !self.shared.activity.load(Ordering::Relaxed) {
            self.shared.activity.store(true, Ordering::Relaxed);
        }
        if self.shared.idle.load(Ordering::Relaxed)
            && self.shared.idle.swap(false, Ordering::AcqRel)
        {
            self.thread.unpark();
        }
    }
}

impl Nudger {
    /// Starts nudging the server that listens on `addr` (an unspecified address is reached
    /// through loopback).
    pub fn start(addr: SocketAddr) -> std::io::Result<Nudger> {
        Self::watching(addr, || {})
    }

    /// Like [`Nudger::start`], and calls `listener_lost` once if the server's address refuses
    /// connections [`REFUSALS`] times in a row: tiny_http's accept thread has ended (it panics
    /// or stops when it cannot get a file descriptor or a thread, e.g. with too many open
    /// connections) and nothing will ever accept again.
    pub fn watching(
        addr: SocketAddr,
        listener_lost: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Nudger> {
        let target = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            activity: AtomicBool::new(false),
            idle: AtomicBool::new(false),
        });
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("rw-nudge".into())
            .spawn(move || nudge_loop(target, &inner, listener_lost))?;
        Ok(Nudger { shared, thread })
    }

    /// The handle workers use to report requests.
    pub fn activity(&self) -> Activity {
        Activity {
            shared: Arc::clone(&self.shared),
            thread: self.thread.thread().clone(),
        }
    }

    /// Stops the nudger and waits for it.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// Consecutive refused nudges after which the listener counts as gone (about a second while
/// idle; a listener that is merely busy queues connections, it does not refuse them).
pub const REFUSALS: u32 = 5;

fn nudge_loop(target: SocketAddr, shared: &Shared, listener_lost: impl FnOnce()) {
    let mut last_active: Option<Instant> = None;
    let mut refused = 0;
    let mut listener_lost = Some(listener_lost);
    loop {
        let fast = last_active.is_some_and(|t| t.elapsed() < ACTIVE_WINDOW);
        if fast {
            std::thread::park_timeout(FAST);
        } else {
            shared.idle.store(true, Ordering::Release);
            std::thread::park_timeout(SLOW);
            shared.idle.store(false, Ordering::Release);
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if shared.activity.swap(false, Ordering::Relaxed) {
            last_active = Some(Instant::now());
        }
        // Connect and drop: the server sees a connection that closes without a request.
        match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Ok(_) => refused = 0,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused += 1;
                if refused >= REFUSALS
                    && let Some(lost) = listener_lost.take()
                {
                    lost();
                }
            }
            Err(e) => log::debug!("nudge connection to {target} failed: {e}"),
        }
    }
}
