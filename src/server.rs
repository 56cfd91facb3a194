//! The HTTP server: binds, runs N worker threads that each loop on `recv()`, and stops cleanly.
//!
//! Each worker: request id → route (404/405 before any body is read) → handler inside
//! `catch_unwind` (a panic becomes 500 INTERNAL_ERROR and the worker lives on) → one access-log
//! line (method, path, status, milliseconds, request id; never bodies) → response. This loop is
//! the only place an [`ApiError`] becomes bytes.

use std::io::Write;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tiny_http::Request;

use crate::config::Database;
use crate::config::ServeConfig;
use crate::domain::schema_cache::SchemaCache;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::handlers::access::{LastUsed, rate_headers};
use crate::handlers::run_states::RunStates;
use crate::handlers::{App, dispatch};
use crate::http::guard::{Guard, Limits, Tracker, Visit};
use crate::http::request::request_id;
use crate::http::response::Reply;
use crate::http::router::route;
use crate::nudge::Nudger;
use crate::policy::Policy;
use crate::store::Store;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};

/// A bound server, not yet running.
pub struct Server {
    http: Arc<tiny_http::Server>,
    app: Arc<App>,
    threads: usize,
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    limits: Limits,
    /// Which client addresses have a request in progress, for the connection guard.
    tracker: Arc<Tracker>,
    /// The exclusive lock on the database file, held while this server runs.
    _db_lock: Option<std::fs::File>,
}

/// Stops a running [`Server`] from another thread (a signal handler).
#[derive(Clone)]
pub struct ShutdownHandle {
    http: Arc<tiny_http::Server>,
    threads: usize,
    stopping: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Stops taking new requests; each worker finishes the requests it has taken and exits.
    pub fn shutdown(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            // One unblock per worker: each wakes exactly one blocked `recv()`.
            for _ in 0..self.threads {
                self.http.unblock();
            }
        }
    }
}

/// Takes an exclusive advisory lock (`flock`) on the database file, so that a second `serve`
/// on the same file refuses to start: two servers would each keep their own rate limits, run
/// states and idempotency view of one database. The lock is released when the process ends,
/// however it ends. SQLite's own locks are POSIX record locks, which `flock` does not touch, and
/// the `keys`, `export` and `import` commands take no such lock, so they keep working beside a
/// running server.
fn lock_database(path: &std::path::Path) -> Result<std::fs::File, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another runwarden serve is already using {}; stop it first or use another --db",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(format!("cannot lock database {}: {e}", path.display()))
        }
    }
}

/// Requests taken out of tiny_http's queue while every worker is busy, marked in progress,
/// waiting for a worker.
///
/// Why: tiny_http's queue cannot be seen into, and a request waiting there while every worker
/// is busy would look to the connection guard like a connection that sent nothing: the guard
/// would close it after the client timeout, and the request would later run with nobody to
/// answer (found by the guard's tests: with one worker held by a slow body, a registration
/// queued behind it was stored, and its client got no answer). So before each scan, when every
/// worker is busy, the guard moves the waiting requests here and marks them in progress
/// ([`rescue`]); a worker looks here before it asks tiny_http. (A thread that took every
/// request from tiny_http at once would do the same, but its extra hand-off cost 5 to 9% of
/// the registrations per second in the benchmark; this costs nothing until the workers are
/// all busy.)
#[derive(Default)]
struct Inbox {
    queue: std::sync::Mutex<std::collections::VecDeque<(Request, Visit)>>,
    /// The queue's length, so that a worker need not lock an empty queue.
    len: std::sync::atomic::AtomicUsize,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(Request, Visit)>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, req: Request, visit: Visit) {
        let mut queue = self.lock();
        queue.push_back((req, visit));
        self.len.store(queue.len(), Ordering::Release);
    }

    fn try_pop(&self) -> Option<(Request, Visit)> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = self.lock();
        let next = queue.pop_front();
        self.len.store(queue.len(), Ordering::Release);
        next
    }
}

/// Run by the guard before each scan: when every worker is busy, moves the requests waiting in
/// tiny_http's queue to `inbox`, marked in progress. Each moved request also gets an
/// `unblock`, which wakes a worker that may have gone idle meanwhile and is blocked in
/// `recv()` (a worker that gets nothing from `recv()` looks at the inbox).
fn rescue(
    http: &tiny_http::Server,
    app: &App,
    tracker: &Arc<Tracker>,
    inbox: &Inbox,
    threads: usize,
) {
    if tracker.in_progress() < threads {
        return;
    }
    let mut moved = 0;
    while let Ok(Some(req)) = http.try_recv() {
        let visit = begin(tracker, app, &req);
        inbox.push(req, visit);
        moved += 1;
    }
    for _ in 0..moved {
        http.unblock();
    }
}

/// Descriptors kept free of connections: database files, its WAL, PostgreSQL connections, the
/// guard's and the nudger's own sockets, log files.
const SPARE_DESCRIPTORS: u64 = 256;

/// The connection guard's limits. Sets the listener's send timeout, which every accepted
/// connection inherits, and raises the soft limit on open descriptors so that the connection
/// bound, not the descriptor limit, is what stops new connections: tiny_http's accept loop
/// ends for good on its first failed accept. tiny_http holds two descriptors per connection.
fn guard_limits(config: &ServeConfig, listener: &std::net::TcpListener) -> Limits {
    let mut max_connections = config.max_connections.max(1);
    #[cfg(target_os = "linux")]
    {
        use crate::http::sockets;
        if let Err(e) = sockets::set_send_timeout(listener, config.client_timeout) {
            log::warn!("cannot set a send timeout on the listener: {e}");
        }
        let wanted = 2 * max_connections as u64 + SPARE_DESCRIPTORS;
        let limit = sockets::raise_descriptor_limit(wanted);
        if limit < wanted {
            let fitting = (limit.saturating_sub(SPARE_DESCRIPTORS) / 2).max(1) as usize;
            log::warn!(
                "the limit on open files ({limit}) allows about {fitting} connections, not \
                 --max-connections {max_connections}; raise it (ulimit -n, systemd LimitNOFILE) \
                 to keep the larger bound"
            );
            max_connections = fitting;
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
    Limits {
        client_timeout: config.client_timeout,
        max_connections,
    }
}

/// Reads and parses a policy file; errors name the file and the line.
pub fn load_policy(path: &std::path::Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the policy {}: {e}", path.display()))?;
    Policy::parse(&text).map_err(|e| format!("policy {}: {e}", path.display()))
}

impl Server {
    /// Binds the address and opens the database. Errors are one line for the operator.
    pub fn bind(config: &ServeConfig) -> Result<Self, String> {
        let listener = std::net::TcpListener::bind(config.addr)
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let limits = guard_limits(config, &listener);
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| "the server is not listening on an IP address".to_string())?;
        let (store, db_lock, db_file): (Arc<dyn Store>, _, _) = match &config.db {
            Database::Sqlite(path) => {
                let store = SqliteStore::open(&SqliteOptions {
                    path: path.clone(),
                    busy_timeout: config.busy_timeout,
                    batch_max: config.write_batch,
                    idempotency_ttl: config.idempotency_ttl,
                })?;
                (
                    Arc::new(store),
                    Some(lock_database(path)?),
                    Some(path.clone()),
                )
            }
            // Any number of instances may share a PostgreSQL database: no lock. Each worker
            // holds at most one connection at a time; one more for the purger.
            Database::Postgres(url) => {
                let store = PgStore::open(&PgOptions {
                    url: url.clone(),
                    pool_size: u32::try_from(config.threads + 1).unwrap_or(u32::MAX),
                    idempotency_ttl: config.idempotency_ttl,
                    lock_timeout: config.busy_timeout,
                })?;
                (Arc::new(store), None, None)
            }
        };
        // Open mode is for a developer's own machine: off a loopback address, a server without
        // keys would hand every run to anyone who can reach it.
        let open_allowed = addr.ip().is_loopback() || config.allow_open;
        let has_keys = store
            .has_active_keys()
            .map_err(|e| format!("cannot read the API keys: {e}"))?;
        if !open_allowed && !has_keys {
            return Err(format!(
                "refusing to serve {addr} without API keys: anyone who can reach it could read and \
                 write every run. Create a key first (runwarden keys create {} --project NAME \
                 --type production) or pass --allow-open",
                match &config.db {
                    Database::Sqlite(path) => format!("--db {}", path.display()),
                    Database::Postgres(_) => "--database-url URL".to_string(),
                }
            ));
        }
        let app = App {
            store,
            engine: Engine::default(),
            policy: config
                .policy
                .clone()
                .map_or_else(|| Ok(Policy::default()), |path| load_policy(&path))?,
            states: RunStates::default(),
            max_body_bytes: config.max_body_bytes,
            schemas: SchemaCache::default(),
            open_allowed,
            open_local_only: addr.ip().is_loopback() && !config.allow_open,
            last_used: LastUsed::default(),
            idempotency_ttl: config.idempotency_ttl,
            metrics: crate::metrics::Metrics::new(db_file),
        };
        Ok(Server {
            http: Arc::new(http),
            app: Arc::new(app),
            limits,
            tracker: Arc::new(Tracker::new(limits.client_timeout)),
            threads: config.threads.max(1),
            addr,
            stopping: Arc::new(AtomicBool::new(false)),
            _db_lock: db_lock,
        })
    }

    /// How requests without a key are treated right now, for the start-up line.
    pub fn mode(&self) -> &'static str {
        match self.app.store.has_active_keys() {
            Ok(true) => "API keys required",
            _ if self.app.open_allowed => "open mode: no API key needed until one is created",
            _ => "API keys required",
        }
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops [`Server::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            http: Arc::clone(&self.http),
            threads: self.threads,
            stopping: Arc::clone(&self.stopping),
        }
    }

    /// Serves until shut down, then waits for in-flight requests and closes the database.
    /// `Err` when it stopped because its listener died (see [`Nudger::watching`]): the
    /// process should exit with an error, so that a supervisor starts it again.
    pub fn run(self) -> Result<(), String> {
        let lost = Arc::new(AtomicBool::new(false));
        let on_lost = {
            let (lost, handle) = (Arc::clone(&lost), self.shutdown_handle());
            move || {
                log::error!(
                    "the HTTP listener stopped accepting connections (tiny_http's accept thread \
                     ended, e.g. out of file descriptors or threads); stopping"
                );
                lost.store(true, Ordering::SeqCst);
                handle.shutdown();
            }
        };
        let nudger = Nudger::watching(self.addr, on_lost)
            .inspect_err(|e| log::error!("cannot start the connection nudger: {e}"))
            .ok();
        let activity = nudger.as_ref().map(Nudger::activity);
        let inbox = Arc::new(Inbox::default());
        let guard = {
            let (http, app, tracker) = (
                Arc::clone(&self.http),
                Arc::clone(&self.app),
                Arc::clone(&self.tracker),
            );
            let (inbox, stopping, threads) =
                (Arc::clone(&inbox), Arc::clone(&self.stopping), self.threads);
            let metrics_app = Arc::clone(&self.app);
            Guard::start(
                self.addr,
                self.limits,
                Arc::clone(&self.tracker),
                move || {
                    // Once stopping, requests not yet taken get the shutdown 503.
                    if !stopping.load(Ordering::SeqCst) {
                        rescue(&http, &app, &tracker, &inbox, threads);
                    }
                },
                move |report| metrics_app.metrics.connections(&report),
            )
        };
        let workers: Vec<_> = (0..self.threads)
            .map(|i| {
                let http = Arc::clone(&self.http);
                let app = Arc::clone(&self.app);
                let activity = activity.clone();
                let tracker = Arc::clone(&self.tracker);
                let inbox = Arc::clone(&inbox);
                let stopping = Arc::clone(&self.stopping);
                std::thread::Builder::new()
                    .name(format!("rw-worker-{i}"))
                    .spawn(move || {
                        loop {
                            if let Some((req, visit)) = inbox.try_pop() {
                                handle(&app, req, visit);
                                continue;
                            }
                            match http.recv() {
                                Ok(req) => {
                                    if let Some(a) = &activity {
                                        a.request_seen();
                                    }
                                    let visit = begin(&tracker, &app, &req);
                                    handle(&app, req, visit);
                                }
                                Err(_) if stopping.load(Ordering::SeqCst) => break,
                                // An unblock from `rescue`, or tiny_http's accept thread has
                                // ended (the nudger notices that and stops the server).
                                Err(_) => {}
                            }
                        }
                        // Requests already taken are answered.
                        while let Some((req, visit)) = inbox.try_pop() {
                            handle(&app, req, visit);
                        }
                    })
            })
            .collect();
        for worker in workers {
            match worker {
                Ok(w) => {
                    if w.join().is_err() {
                        log::error!("a worker thread panicked outside a request");
                    }
                }
                Err(e) => log::error!("cannot start a worker thread: {e}"),
            }
        }
        // The guard may have moved requests to the inbox after the workers left: stop it, then
        // answer those (they were taken).
        if let Some(g) = guard {
            g.stop();
        }
        while let Some((req, visit)) = inbox.try_pop() {
            handle(&self.app, req, visit);
        }
        // Requests that arrived after the stop signal and were never taken get a 503 instead
        // of the empty 500 tiny_http sends for a request dropped unanswered. (`try_recv` also
        // answers `None` for a leftover unblock, so an empty answer alone does not mean empty.)
        let mut empty = 0;
        while empty < 64 {
            let Ok(Some(req)) = self.http.try_recv() else {
                empty += 1;
                continue;
            };
            let mut err = ApiError::new(
                crate::error::ErrorCode::StorageUnavailable,
                "the server is shutting down; retry against its next start",
            );
            err.retry_after = Some(1);
            let rid = request_id(&req);
            let _ = req.respond(Reply::from_error(&err).into_response(&rid));
        }
        if let Some(n) = nudger {
            n.stop();
        }
        // Dropping the app closes the store: the writer finishes its queue and the database
        // is closed before `run` returns.
        drop(self.app);
        if lost.load(Ordering::SeqCst) {
            return Err(
                "the HTTP listener stopped accepting connections (too many open files or \
                 threads?); every acknowledged write is stored; start runwarden again (a \
                 supervisor such as systemd's Restart=on-failure does)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Announced bodies up to this size that are left unread are drained (read and discarded) by
/// tiny_http when the request is dropped; larger ones are quarantined, see [`quarantine`].
pub const MAX_DRAIN_BYTES: u64 = 16 * 1024 * 1024;

/// Marks `req` in progress for the guard, with the body it still has to deliver: its
/// `Content-Length`, the body limit for a chunked body, nothing when it has neither.
fn begin(tracker: &Arc<Tracker>, app: &App, req: &Request) -> Visit {
    let body = match req.body_length() {
        Some(len) => len as u64,
        None if crate::http::request::header(req, "transfer-encoding").is_some() => {
            app.max_body_bytes
        }
        None => 0,
    };
    tracker.begin(req.remote_addr().copied(), body)
}

/// Serves one request. Never panics: a panicking handler becomes a 500. `visit` marks the
/// request in progress for the connection guard until the response is sent.
fn handle(app: &App, mut req: Request, visit: Visit) {
    let started = Instant::now();
    let rid = request_id(&req);
    let method = req.method().as_str().to_string();
    let path = loggable_path(req.url());
    // Bodies up to 1 KiB are buffered by tiny_http before the request reaches us.
    let announced = req.body_length().map_or(0, |l| l as u64);
    // A chunked body's size is known only once read; it may be large.
    let chunked = crate::http::request::header(&req, "transfer-encoding").is_some();
    let mut body_read = announced <= 1024;
    let mut label = "unmatched";
    let framing = crate::http::request::framing_problem(
        req.headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str())),
        app.max_body_bytes,
    );
    let reply = if let Some(err) = framing {
        Reply::from_error(&err)
    } else if announced > app.max_body_bytes.max(MAX_DRAIN_BYTES) {
        // Never handle it: answer at once and do not let tiny_http drain it. A path that is not
        // a route is still a 404 (or 405), as for any other body.
        log::warn!("request {rid}: Content-Length {announced} is far over the limit");
        let err = match route(&method, req.url()) {
            Ok(_) => ApiError::payload_too_large(app.max_body_bytes),
            Err(e) => e,
        };
        Reply::from_error(&err)
    } else {
        let mut decision = None;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let route = route(&method, req.url())?;
            label = route.label();
            let (d, outcome) = dispatch(app, route, &mut req, &mut body_read);
            decision = d;
            outcome
        }));
        let mut reply = into_reply(outcome, &rid);
        if let Some(d) = &decision {
            reply.headers.extend(rate_headers(d));
        }
        reply
    };
    let status = reply.status;
    app.metrics.request(label, status, started.elapsed());
    if body_read {
        if let Err(e) = req.respond(reply.into_response(&rid)) {
            log::debug!("could not send the response to request {rid}: {e}");
        }
    } else if announced <= MAX_DRAIN_BYTES {
        // tiny_http drains the unread body when the request is dropped, which blocks until the
        // client has sent it or gone away. Do that on a thread of its own, so that a client
        // that announces a body and stalls does not hold a worker.
        let response = reply.into_response(&rid);
        let spawned = std::thread::Builder::new()
            .name("rw-drain".into())
            .spawn(move || {
                let _ = req.respond(response);
                drop(visit);
            });
        if let Err(e) = spawned {
            log::error!("request {rid}: cannot start a drain thread: {e}");
        }
    } else {
        quarantine(req, reply, &rid);
    }
    if announced >= crate::heap::LARGE_BODY_BYTES || chunked {
        crate::heap::release_free_memory();
    }
    log::info!(
        target: "runwarden::access",
        "{} {path} {status} {:.1}ms id={rid}",
        loggable(&method, 16),
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// Answers a request whose announced body will never be read, without ever dropping its body
/// reader.
///
/// Why: tiny_http 0.12 drains an unread body when a request is dropped, and it does so by
/// allocating one buffer as large as the remaining Content-Length (`EqualReader::drop`). A
/// client announcing, say, 100 TB makes that allocation fail, which aborts the whole process
/// (measured: "memory allocation of 100000000000000 bytes failed"). `Request::upgrade` is the
/// one way to answer and take the body reader out of the request: we forget the returned
/// stream, so the drain never runs. The price is that this connection's socket and tiny_http
/// thread stay parked until the process exits, so it is reserved for bodies announced over
/// [`MAX_DRAIN_BYTES`] (and over the limit), which no honest client sends.
///
/// `upgrade` writes the status line and headers but, as for a protocol switch, neither a
/// Content-Length nor the body. It writes its `protocol` argument verbatim as the value of an
/// `Upgrade` header, so that argument carries the two framing lines the response needs; the
/// body is then written to the stream. The client sees a complete 413 with `Connection: close`.
fn quarantine(req: Request, reply: Reply, rid: &str) {
    let body = reply.body.clone();
    let framing = format!(
        "none\r\nConnection: close\r\nContent-Length: {}",
        body.len()
    );
    let mut stream = req.upgrade(&framing, reply.into_response(rid));
    let _ = stream.write_all(&body);
    let _ = stream.flush();
    std::mem::forget(stream);
}

/// Turns a handler's outcome (or its panic) into a reply, logging server-side failures.
pub fn into_reply(
    outcome: std::thread::Result<Result<Reply, ApiError>>,
    request_id: &str,
) -> Reply {
    let err = match outcome {
        Ok(Ok(reply)) => return reply,
        Ok(Err(err)) => err,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            ApiError::internal(format!("handler panicked: {what}"))
        }
    };
    if err.status() >= 500 {
        log::error!("request {request_id}: {err}");
    }
    Reply::from_error(&err)
}

/// The path without its query string, capped and with control characters escaped, so a
/// hostile URL cannot forge log lines.
fn loggable_path(url: &str) -> String {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    loggable(path, 200)
}

/// Client-sent text for a log line: at most `max` characters, control characters escaped (a
/// method like "GET\x1b]0;pwned\x07" must not reach an operator's terminal as written).
fn loggable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .flat_map(char::escape_debug)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_becomes_a_500_internal_error() {
        let outcome =
            catch_unwind(|| -> Result<Reply, ApiError> { panic!("boom at /secret/path") });
        let reply = into_reply(outcome, "rid");
        assert_eq!(reply.status, 500);
        let body = String::from_utf8(reply.body).expect("utf8");
        assert!(body.contains("INTERNAL_ERROR"), "{body}");
        assert!(
            !body.contains("boom"),
            "the panic message must not leak: {body}"
        );
    }

    #[test]
    fn an_error_becomes_its_envelope() {
        let reply = into_reply(Ok(Err(ApiError::method_not_allowed("GET", "POST"))), "rid");
        assert_eq!(reply.status, 405);
        assert_eq!(reply.headers, vec![("Allow", "POST".to_string())]);
    }

    #[test]
    fn logged_paths_have_no_query_and_no_control_characters() {
        assert_eq!(loggable_path("/v1/event?key=secret"), "/v1/event");
        assert_eq!(loggable_path("/a\nFAKE LINE"), "/a\\nFAKE LINE");
        assert_eq!(
            loggable("GET\u{1b}]0;pwned\u{7}", 16),
            "GET\\u{1b}]0;pwned\\u{7}"
        );
        assert_eq!(loggable("EVIL\rGET", 16), "EVIL\\rGET");
        assert_eq!(loggable(&"X".repeat(40), 16).len(), 16);
    }
}
