//! The connection guard: read deadlines, a bound on request heads and a bound on connections,
//! for an HTTP library that has none of them.
//!
//! The problem. tiny_http 0.12 serves each connection on a thread of its own and waits for it
//! without any deadline, and it buffers a request head of any size. Measured against runwarden
//! before the guard existed:
//! - 8 clients that each sent a request head announcing a 5,000-byte body and then only part
//!   of the body held all 8 workers forever: nothing else was answered, ever;
//! - one client sending an endless header line grew the server by 600 MB in 3 seconds;
//! - a client sending its head one byte per second, or an idle keep-alive client, held a
//!   connection and its thread for as long as it liked, with no bound on their number.
//!
//! tiny_http exposes no socket, no timeout and no hook between accepting a connection and
//! handing over a parsed request, and the shape of runwarden (a synchronous tiny_http server)
//! is fixed. A relay in front of it would cost the throughput of group commit. So the guard
//! works beside it: a thread that, every [`SCAN`], finds the server's connections among the
//! process's sockets ([`super::sockets`]), joins them with what the server reports (which
//! client addresses have a request in progress, [`Tracker`]; requests waiting for a busy
//! worker are marked too, see `Inbox` in `server.rs`), and shuts down the connections that
//! break a rule. A shut-down socket wakes the tiny_http thread blocked on it with end of
//! file, so the thread finishes and closes the connection the normal way. The rules
//! ([`decide`]):
//! - **head deadline**: a connection with no request in progress must deliver a complete
//!   request head within the client timeout of opening or of its previous response, or it is
//!   closed. That bounds slow heads (slowloris) and idle keep-alive connections alike;
//! - **head size**: a connection from which tiny_http has read more than the bodies of its
//!   requests plus [`MAX_HEAD_BYTES`] per request head is reset (detected within a scan or
//!   two; the kernel's count of received bytes, less those still queued, says how much
//!   tiny_http has read). This holds while a request is handled too: tiny_http reads the head
//!   of the next request, pipelined behind it, meanwhile (a test found 114 MB buffered that
//!   way, behind a response the client did not take);
//! - **body deadline**: a request in progress whose body has not arrived within the client
//!   timeout plus one second per [`BODY_BYTES_PER_SEC`] of its announced length has its
//!   connection shut for reading: the worker reads end of file, answers 400 (the response can
//!   still be written) and the connection closes;
//! - **response deadline**: a response the client does not take within the client timeout,
//!   plus one second per [`BODY_BYTES_PER_SEC`] it does take, ends its connection, and the
//!   worker's write fails at once ([`send_overdue`]);
//! - **connection bound**: above the bound, connections without a request in progress are
//!   closed, idle ones first (longest idle first), then the newest. Requests in progress are
//!   never cut for the bound.
//!
//! The listening socket's send timeout (inherited by every accepted connection,
//! [`super::sockets::set_send_timeout`]) bounds each single write as well, as a second line.
//!
//! Limits, stated: a connection above the bound is accepted and then closed within a scan
//! (the client sees its connection closed, not a 503); an oversized head is cut after a scan
//! or two of sending. The guard exists on Linux only; elsewhere the server runs without it and
//! says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the guard looks at the connections.
pub const SCAN: Duration = Duration::from_millis(100);
/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD_BYTES: u64 = 64 * 1024;
/// A request body gets one more second than the client timeout per this many bytes.
pub const BODY_BYTES_PER_SEC: u64 = 64 * 1024;
/// Bodies up to this size tiny_http reads together with the head, before a worker has the
/// request.
const PRE_READ: u64 = 1024;

/// The guard's settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request head, a body or to take a response (the
    /// latter two plus their size allowance).
    pub client_timeout: Duration,
    /// The most connections kept open.
    pub max_connections: usize,
}

/// Why the guard closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// No request within the client timeout, nothing sent.
    Idle,
    /// A request head started but was not complete within the client timeout.
    HeadTimeout,
    /// A request head larger than [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// A request body not complete by its deadline.
    BodyTimeout,
    /// A response the client does not take.
    SendTimeout,
    /// Over the connection bound.
    OverLimit,
}

impl Reason {
    /// Every reason, in the order of the metrics.
    pub const ALL: [Reason; 6] = [
        Reason::Idle,
        Reason::HeadTimeout,
        Reason::HeadTooLarge,
        Reason::BodyTimeout,
        Reason::SendTimeout,
        Reason::OverLimit,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Idle => "idle",
            Reason::HeadTimeout => "head_timeout",
            Reason::HeadTooLarge => "head_too_large",
            Reason::BodyTimeout => "body_timeout",
            Reason::SendTimeout => "send_timeout",
            Reason::OverLimit => "over_limit",
        }
    }
}

/// What to do to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Shut it for reading: a blocked body read ends, the response can still be sent.
    ShutRead,
    /// Shut it down both ways: the connection ends with the usual FIN.
    Close,
    /// Shut it down both ways and have the close that follows (tiny_http's thread reads end
    /// of file and closes it) send a reset (RST): for hostile connections. A client that keeps
    /// sending learns at once instead of sending into a closed window until the kernel gives
    /// up on the orphaned socket (measured: 107 s), and the kernel frees the socket at once.
    Reset,
}

/// One connection as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct ConnView {
    /// A request of this connection is being handled.
    pub busy: bool,
    /// Busy, past its body deadline, and not yet shut for reading.
    pub body_overdue: bool,
    /// Busy, and its response has not been taken fast enough (see [`send_overdue`]).
    pub send_overdue: bool,
    /// Bytes read from it since the guard last saw a request start, begin or end: request
    /// bodies it announced, and beyond them the head of a next request being received.
    pub head_bytes: u64,
    /// How many of `head_bytes` may be read: the bodies of the requests in progress or started
    /// since, plus one request head (two when busy: tiny_http reads the head of the next
    /// request, pipelined by the client, while the current one is handled).
    pub head_allowance: u64,
    /// Bytes are waiting in the kernel for tiny_http to read them.
    pub queued: bool,
    /// Since when it has been waiting for a request head (opened, or previous response).
    pub waiting_since: Instant,
    /// When the guard first saw it.
    pub opened: Instant,
    /// Its client has closed it already (and no request of it is being handled): it is on its
    /// way out and does not count towards the bound. The server's own nudges (`nudge.rs`)
    /// look like this: counted, each one made the guard close one client too many.
    pub peer_closed: bool,
}

impl ConnView {
    fn idle(&self) -> bool {
        !self.busy && self.head_bytes == 0 && !self.queued
    }
}

/// The rules, as a pure function: which connections to act on, how and why.
pub fn decide(conns: &[ConnView], now: Instant, limits: &Limits) -> Vec<(usize, Action, Reason)> {
    let mut out = Vec::new();
    let mut closing = vec![false; conns.len()];
    for (i, c) in conns.iter().enumerate() {
        if c.head_bytes > c.head_allowance {
            closing[i] = true;
            out.push((i, Action::Reset, Reason::HeadTooLarge));
            continue;
        }
        if c.busy {
            if c.send_overdue {
                out.push((i, Action::Close, Reason::SendTimeout));
            } else if c.body_overdue {
                out.push((i, Action::ShutRead, Reason::BodyTimeout));
            }
            continue;
        }
        let reason = if now.saturating_duration_since(c.waiting_since) >= limits.client_timeout {
            Some(if c.idle() {
                Reason::Idle
            } else {
                Reason::HeadTimeout
            })
        } else {
            None
        };
        if let Some(reason) = reason {
            closing[i] = true;
            let action = if reason == Reason::Idle {
                Action::Close
            } else {
                Action::Reset
            };
            out.push((i, action, reason));
        }
    }
    let leaving = |i: usize| !conns[i].busy && conns[i].peer_closed;
    let open = (0..conns.len())
        .filter(|&i| !closing[i] && !leaving(i))
        .count();
    if open > limits.max_connections {
        // Idle ones first, the longest idle first; then the newest.
        let mut victims: Vec<usize> = (0..conns.len())
            .filter(|&i| !closing[i] && !conns[i].busy && !leaving(i))
            .collect();
        victims.sort_by_key(|&i| {
            let c = &conns[i];
            if c.idle() {
                (0, Some(c.waiting_since), None)
            } else {
                (1, None, Some(std::cmp::Reverse(c.opened)))
            }
        });
        for i in victims.into_iter().take(open - limits.max_connections) {
            out.push((i, Action::Close, Reason::OverLimit));
        }
    }
    out
}

/// Whether a response is overdue: data has been waiting to go to the client since `since`,
/// when the client had taken `acked_then` bytes; it has `acked_now` now. The client gets the
/// client timeout, plus a second per [`BODY_BYTES_PER_SEC`] it has taken since: a client that
/// takes nothing, or a trickle, cannot hold a worker for long. (The send timeout alone would
/// not do: each write waits for it anew, and any progress starts it again.)
pub fn send_overdue(
    since: Instant,
    acked_then: u64,
    acked_now: u64,
    now: Instant,
    timeout: Duration,
) -> bool {
    let taken = acked_now.saturating_sub(acked_then);
    let allowance = Duration::from_secs_f64(taken as f64 / BODY_BYTES_PER_SEC as f64);
    now.saturating_duration_since(since) > timeout + allowance
}

/// What the workers report: per client address, the requests started and in progress.
#[derive(Debug, Default, Clone, Copy)]
struct Peer {
    started: u64,
    in_flight: u32,
    /// The body bytes of every request started, added up.
    body_started: u64,
    /// The body bytes of the requests in progress.
    body_in_flight: u64,
    body_deadline: Option<Instant>,
    last_done: Option<Instant>,
}

/// Requests in progress, per client address: written by the workers, read by the guard.
pub struct Tracker {
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    client_timeout: Duration,
    /// Requests in progress, over all clients.
    in_progress: std::sync::atomic::AtomicUsize,
}

impl Tracker {
    /// A tracker for requests whose bodies are due within `client_timeout` plus their size
    /// allowance.
    pub fn new(client_timeout: Duration) -> Self {
        Tracker {
            peers: Mutex::new(HashMap::new()),
            client_timeout,
            in_progress: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a request of `peer` that has arrived with a body of `body_bytes` (its announced
    /// length, or the body limit when not announced; 0 for none: no deadline) still to read.
    /// The request counts as in progress until the returned [`Visit`] is dropped.
    pub fn begin(self: &Arc<Self>, peer: Option<SocketAddr>, body_bytes: u64) -> Visit {
        self.in_progress
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(peer) = peer {
            let allowance = Duration::from_secs(body_bytes / BODY_BYTES_PER_SEC);
            let mut peers = self.lock();
            let p = peers.entry(peer).or_default();
            p.started += 1;
            p.in_flight += 1;
            p.body_started += body_bytes;
            p.body_in_flight += body_bytes;
            if body_bytes > 0 {
                p.body_deadline = Some(Instant::now() + self.client_timeout + allowance);
            }
        }
        Visit {
            tracker: Arc::clone(self),
            peer,
            body_bytes,
        }
    }

    /// Requests in progress now, over all clients.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn end(&self, peer: SocketAddr, body_bytes: u64) {
        let mut peers = self.lock();
        let p = peers.entry(peer).or_default();
        p.in_flight = p.in_flight.saturating_sub(1);
        p.body_in_flight = p.body_in_flight.saturating_sub(body_bytes);
        if p.in_flight == 0 {
            p.body_deadline = None;
        }
        p.last_done = Some(Instant::now());
    }

    /// The state of each of `addrs` (default when unknown), and the forgetting of every
    /// address that is neither among them nor in progress.
    fn snapshot_and_prune(&self, addrs: &[SocketAddr]) -> Vec<Peer> {
        let mut peers = self.lock();
        let out = addrs
            .iter()
            .map(|a| peers.get(a).copied().unwrap_or_default())
            .collect();
        let live: std::collections::HashSet<&SocketAddr> = addrs.iter().collect();
        peers.retain(|a, p| p.in_flight > 0 || live.contains(a));
        out
    }
}

/// A request in progress; dropping it marks the request done.
pub struct Visit {
    tracker: Arc<Tracker>,
    peer: Option<SocketAddr>,
    body_bytes: u64,
}

impl Drop for Visit {
    fn drop(&mut self) {
        self.tracker
            .in_progress
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(peer) = self.peer {
            self.tracker.end(peer, self.body_bytes);
        }
    }
}

/// What one scan found and did, for the metrics.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Connections open after the scan.
    pub open: usize,
    /// Why each connection acted on was.
    pub closed: Vec<Reason>,
}

/// The running guard thread.
pub struct Guard {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Guard {
    /// Starts guarding the connections accepted on `listen`. `before_scan` runs before each
    /// scan (the server marks requests waiting for a worker there); `report` receives each
    /// scan's figures. `None` (with a warning) where the guard is not available.
    pub fn start(
        listen: SocketAddr,
        limits: Limits,
        tracker: Arc<Tracker>,
        before_scan: impl FnMut() + Send + 'static,
        report: impl FnMut(ScanReport) + Send + 'static,
    ) -> Option<Guard> {
        #[cfg(target_os = "linux")]
        {
            let mut report = report;
            // Metrics show the guard from the start, not from its first scan.
            report(ScanReport::default());
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let spawned = std::thread::Builder::new()
                .name("rw-guard".into())
                .spawn(move || linux::run(listen, limits, &tracker, &flag, before_scan, report));
            match spawned {
                Ok(thread) => Some(Guard { stop, thread }),
                Err(e) => {
                    log::error!("cannot start the connection guard: {e}");
                    None
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (listen, limits, tracker, before_scan, report);
            log::warn!(
                "the connection guard (read deadlines, connection bound) runs on Linux only; \
                 put a reverse proxy in front of runwarden on this system"
            );
            None
        }
    }

    /// Stops the guard and waits for it.
    pub fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{Action, ConnView, Limits, SCAN, ScanReport, Tracker, decide};
    use crate::http::sockets::{self, Shutdown};
    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    /// One connection the guard follows, by socket inode.
    struct Conn {
        peer: SocketAddr,
        opened: Instant,
        /// The worker's request count when `mark` was taken.
        seen_started: u64,
        was_busy: bool,
        /// Bytes read from the connection when a request last started, began or ended.
        mark: Option<u64>,
        /// The peer's `body_started` then, less the bodies in progress then.
        body_mark: u64,
        shut_read: bool,
        /// Since when a response has been waiting to go out, and the bytes taken then.
        sending_since: Option<(Instant, u64)>,
    }

    pub(super) fn run(
        listen: SocketAddr,
        limits: Limits,
        tracker: &Tracker,
        stop: &AtomicBool,
        mut before_scan: impl FnMut(),
        mut report: impl FnMut(ScanReport),
    ) {
        let mut conns: HashMap<u64, Conn> = HashMap::new();
        // Sockets that are not connections of this server (the listener, database
        // connections) and connections already closed whose descriptor lingers.
        let mut ignored: HashSet<u64> = HashSet::new();
        let mut failed_listing = false;
        let table = match sockets::DescriptorTable::open() {
            Ok(t) => t,
            Err(e) => {
                log::warn!("the connection guard cannot read /proc/self/fd ({e}); it is off");
                return;
            }
        };
        while !stop.load(Ordering::SeqCst) {
            std::thread::park_timeout(SCAN);
            if stop.load(Ordering::SeqCst) {
                return;
            }
            before_scan();
            match scan(&table, listen, &limits, tracker, &mut conns, &mut ignored) {
                Ok(r) => {
                    failed_listing = false;
                    report(r);
                }
                Err(e) if !failed_listing => {
                    failed_listing = true;
                    log::warn!("the connection guard cannot list the sockets: {e}");
                }
                Err(_) => {}
            }
        }
    }

    fn ours(listen: SocketAddr, local: Option<SocketAddr>) -> bool {
        local.is_some_and(|l| {
            l.port() == listen.port() && (listen.ip().is_unspecified() || l.ip() == listen.ip())
        })
    }

    fn scan(
        table: &sockets::DescriptorTable,
        listen: SocketAddr,
        limits: &Limits,
        tracker: &Tracker,
        conns: &mut HashMap<u64, Conn>,
        ignored: &mut HashSet<u64>,
    ) -> std::io::Result<ScanReport> {
        let now = Instant::now();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut live = Vec::new();
        for (fd, inode) in table.sockets()? {
            // tiny_http holds two descriptors per connection: take each socket once.
            if !seen.insert(inode) || ignored.contains(&inode) {
                continue;
            }
            let Some(sock) = sockets::duplicate(fd, inode) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = conns.entry(inode) {
                let id = sockets::identify(&sock);
                match id.peer {
                    Some(peer) if !id.listening && ours(listen, id.local) => {
                        slot.insert(Conn {
                            peer,
                            opened: now,
                            seen_started: 0,
                            was_busy: false,
                            mark: None,
                            body_mark: 0,
                            shut_read: false,
                            sending_since: None,
                        });
                    }
                    _ => {
                        ignored.insert(inode);
                        continue;
                    }
                }
            }
            live.push((inode, sock));
        }
        conns.retain(|inode, _| seen.contains(inode));
        ignored.retain(|inode| seen.contains(inode));

        let addrs: Vec<SocketAddr> = live.iter().map(|(ino, _)| conns[ino].peer).collect();
        let peers = tracker.snapshot_and_prune(&addrs);
        // `views[i]` is the connection `targets[i]`.
        let mut views = Vec::with_capacity(live.len());
        let mut targets = Vec::with_capacity(live.len());
        for ((inode, sock), p) in live.iter().zip(&peers) {
            let Some(c) = conns.get_mut(inode) else {
                continue;
            };
            targets.push((*inode, sock));
            let progress = sockets::progress(sock);
            let read = progress.map(|p| p.read);
            let busy = p.in_flight > 0;
            if busy != c.was_busy || p.started != c.seen_started || c.mark.is_none() {
                c.mark = read;
                c.body_mark = p.body_started.saturating_sub(p.body_in_flight);
                c.seen_started = p.started;
            }
            c.was_busy = busy;
            let head_bytes = match (read, c.mark) {
                (Some(r), Some(m)) => r.saturating_sub(m),
                _ => 0,
            };
            let heads = if busy { 2 } else { 1 };
            let head_allowance = p.body_started.saturating_sub(c.body_mark)
                + heads * (super::MAX_HEAD_BYTES + super::PRE_READ);
            c.sending_since = match progress {
                Some(p) if busy && p.sending => c.sending_since.or(Some((now, p.acked))),
                _ => None,
            };
            let send_overdue = match (c.sending_since, progress) {
                (Some((since, then)), Some(p)) => {
                    super::send_overdue(since, then, p.acked, now, limits.client_timeout)
                }
                _ => false,
            };
            views.push(ConnView {
                busy,
                body_overdue: busy && !c.shut_read && p.body_deadline.is_some_and(|d| now >= d),
                send_overdue,
                head_bytes,
                head_allowance,
                queued: progress.is_some_and(|p| p.queued > 0),
                waiting_since: p.last_done.map_or(c.opened, |d| d.max(c.opened)),
                opened: c.opened,
                peer_closed: progress.is_some_and(|p| p.peer_closed),
            });
        }
        let mut out = ScanReport {
            open: live.len(),
            closed: Vec::new(),
        };
        for (i, action, reason) in decide(&views, now, limits) {
            let (inode, sock) = targets[i];
            let done = match action {
                Action::ShutRead => sockets::shutdown(sock, Shutdown::Read),
                Action::Close => sockets::shutdown(sock, Shutdown::Both),
                Action::Reset => sockets::reset_on_close(sock)
                    .and_then(|()| sockets::shutdown(sock, Shutdown::Both)),
            };
            if let Err(e) = done {
                log::debug!("the connection guard could not shut a connection down: {e}");
                continue;
            }
            if let Some(c) = conns.get_mut(&inode) {
                log::debug!(
                    "connection guard: {} the connection from {} ({})",
                    match action {
                        Action::Close => "closed",
                        Action::Reset => "reset",
                        Action::ShutRead => "stopped reading",
                    },
                    c.peer,
                    reason.label()
                );
                c.shut_read = true;
            }
            if action != Action::ShutRead {
                conns.remove(&inode);
                ignored.insert(inode);
                out.open -= 1;
            }
            out.closed.push(reason);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        client_timeout: Duration::from_secs(10),
        max_connections: 3,
    };

    fn view(t0: Instant) -> ConnView {
        ConnView {
            busy: false,
            body_overdue: false,
            send_overdue: false,
            head_bytes: 0,
            head_allowance: MAX_HEAD_BYTES,
            queued: false,
            waiting_since: t0,
            opened: t0,
            peer_closed: false,
        }
    }

    #[test]
    fn a_connection_waiting_past_the_timeout_is_closed_as_idle_or_slow() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let idle = view(t0);
        let slow = ConnView {
            head_bytes: 30,
            ..view(t0)
        };
        let recent = ConnView {
            waiting_since: t0 + Duration::from_secs(1),
            ..view(t0)
        };
        let out = decide(&[idle, slow, recent], now, &LIMITS);
        assert_eq!(
            out,
            vec![
                (0, Action::Close, Reason::Idle),
                (1, Action::Reset, Reason::HeadTimeout)
            ]
        );
    }

    #[test]
    fn a_head_over_the_size_limit_is_closed_at_once() {
        let t0 = Instant::now();
        let big = ConnView {
            head_bytes: MAX_HEAD_BYTES + 1,
            ..view(t0)
        };
        let at_limit = ConnView {
            head_bytes: MAX_HEAD_BYTES,
            ..view(t0)
        };
        assert_eq!(
            decide(&[big, at_limit], t0, &LIMITS),
            vec![(0, Action::Reset, Reason::HeadTooLarge)]
        );
    }

    #[test]
    fn a_busy_connection_past_its_allowance_is_reset_too() {
        let t0 = Instant::now();
        let busy = ConnView {
            busy: true,
            head_bytes: 3 * MAX_HEAD_BYTES,
            head_allowance: 3 * MAX_HEAD_BYTES,
            ..view(t0)
        };
        let over = ConnView {
            head_bytes: 3 * MAX_HEAD_BYTES + 1,
            ..busy
        };
        assert_eq!(
            decide(&[busy, over], t0, &LIMITS),
            vec![(1, Action::Reset, Reason::HeadTooLarge)]
        );
    }

    #[test]
    fn a_busy_connection_is_only_shut_for_reading_when_its_body_is_overdue() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(100);
        let busy = ConnView {
            busy: true,
            head_bytes: 10 * MAX_HEAD_BYTES,
            head_allowance: 10 * MAX_HEAD_BYTES,
            ..view(t0)
        };
        let overdue = ConnView {
            body_overdue: true,
            ..busy
        };
        assert_eq!(
            decide(&[busy, overdue], now, &LIMITS),
            vec![(1, Action::ShutRead, Reason::BodyTimeout)]
        );
    }

    #[test]
    fn a_busy_connection_whose_response_is_not_taken_is_closed() {
        let t0 = Instant::now();
        let stuck = ConnView {
            busy: true,
            send_overdue: true,
            body_overdue: true,
            ..view(t0)
        };
        assert_eq!(
            decide(&[stuck], t0, &LIMITS),
            vec![(0, Action::Close, Reason::SendTimeout)]
        );
    }

    #[test]
    fn a_response_is_overdue_after_the_timeout_plus_a_second_per_64_kib_taken() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let timeout = s(10);
        assert!(!send_overdue(t0, 0, 0, t0 + s(10), timeout));
        assert!(send_overdue(t0, 0, 0, t0 + s(11), timeout));
        // 3 × 64 KiB taken: 3 more seconds.
        let taken = 3 * BODY_BYTES_PER_SEC;
        assert!(!send_overdue(t0, 100, 100 + taken, t0 + s(13), timeout));
        assert!(send_overdue(t0, 100, 100 + taken, t0 + s(14), timeout));
    }

    #[test]
    fn above_the_bound_idle_connections_go_first_then_the_newest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let conns = [
            ConnView {
                busy: true,
                ..view(t0)
            },
            ConnView {
                head_bytes: 5,
                opened: t0 + s(1),
                waiting_since: t0 + s(1),
                ..view(t0)
            },
            ConnView {
                waiting_since: t0 + s(3),
                ..view(t0)
            },
            ConnView {
                head_bytes: 5,
                opened: t0 + s(2),
                waiting_since: t0 + s(2),
                ..view(t0)
            },
            ConnView {
                waiting_since: t0 + s(2),
                ..view(t0)
            },
            ConnView {
                busy: true,
                opened: t0 + s(4),
                ..view(t0)
            },
        ];
        // 6 open, bound 3: close 3, never a busy one; the idle ones (4 waits longest, then
        // 2), then the newest of the rest (3).
        assert_eq!(
            decide(&conns, t0 + s(5), &LIMITS),
            vec![
                (4, Action::Close, Reason::OverLimit),
                (2, Action::Close, Reason::OverLimit),
                (3, Action::Close, Reason::OverLimit)
            ]
        );
    }

    #[test]
    fn connections_their_clients_have_closed_do_not_count_towards_the_bound() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let waiting = |at: u64| ConnView {
            waiting_since: t0 + s(at),
            ..view(t0)
        };
        // 3 open and a 4th its client has closed (as a nudge is): within the bound of 3.
        let leaving = ConnView {
            peer_closed: true,
            ..waiting(4)
        };
        let conns = [waiting(1), waiting(2), waiting(3), leaving];
        assert_eq!(decide(&conns, t0 + s(5), &LIMITS), vec![]);
        // Over the bound, it is not closed in place of an open one either.
        let conns = [waiting(1), waiting(2), waiting(3), leaving, waiting(0)];
        assert_eq!(
            decide(&conns, t0 + s(5), &LIMITS),
            vec![(4, Action::Close, Reason::OverLimit)]
        );
    }

    #[test]
    fn connections_closed_for_a_rule_count_towards_the_bound() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let stale = view(t0);
        let fresh = ConnView {
            waiting_since: now,
            opened: now,
            ..view(t0)
        };
        // 4 open, one closed for its timeout: 3 remain, which the bound allows.
        let out = decide(&[stale, fresh, fresh, fresh], now, &LIMITS);
        assert_eq!(out, vec![(0, Action::Close, Reason::Idle)]);
    }

    #[test]
    fn the_tracker_reports_requests_in_progress_and_their_deadlines() {
        let tracker = Arc::new(Tracker::new(Duration::from_secs(10)));
        let a: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "127.0.0.1:5001".parse().expect("addr");
        let before = Instant::now();
        let visit = tracker.begin(Some(a), 2 * BODY_BYTES_PER_SEC);
        let p = tracker.snapshot_and_prune(&[a, b]);
        assert_eq!((p[0].started, p[0].in_flight), (1, 1));
        let deadline = p[0].body_deadline.expect("deadline");
        assert!(deadline >= before + Duration::from_secs(12));
        assert_eq!(p[1].started, 0);
        drop(visit);
        let p = tracker.snapshot_and_prune(&[a]);
        assert_eq!((p[0].started, p[0].in_flight), (1, 0));
        assert!(p[0].last_done.is_some() && p[0].body_deadline.is_none());
        // Bodies are added up for the head-size rule.
        let p = tracker.snapshot_and_prune(&[a]);
        assert_eq!(
            (p[0].body_started, p[0].body_in_flight),
            (2 * BODY_BYTES_PER_SEC, 0)
        );
        // An address no longer open and not in progress is forgotten.
        tracker.snapshot_and_prune(&[b]);
        assert_eq!(tracker.snapshot_and_prune(&[a])[0].started, 0);
        // A request without a body has no body deadline.
        let _visit = tracker.begin(Some(b), 0);
        let p = tracker.snapshot_and_prune(&[b]);
        assert_eq!(p[0].in_flight, 1);
        assert!(p[0].body_deadline.is_none());
    }
}
