//! The connection path never stalls (issue 3): tiny_http 0.12's pool can strand a connection
//! that arrives together with others; the server's nudger (`src/server.rs`, `spawn_nudger`)
//! must get every such connection served within about a second. Keep-alive must keep working.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};

use std::time::{Duration, Instant};

use crate::helpers::TestApp;

/// Sends one keep-alive GET /healthz on `stream` and reads exactly one response; returns its
/// status.
fn keep_alive_exchange(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    reader
        .get_mut()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    read_response(reader)
}

/// Reads exactly one response (head and Content-Length body); returns its status.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed",
        ));
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}

/// `n` clients connect at the same instant (back to back from one thread, so that the server
/// accepts them in one burst, which is what strands connections); each sends one request and
/// keeps its connection open. Returns, per client, how long its first response took (None:
/// none within `limit`).
fn burst(addr: SocketAddr, n: usize, limit: Duration) -> Vec<Option<Duration>> {
    let streams: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let start = Instant::now();
    let mut readers: Vec<BufReader<TcpStream>> = streams.into_iter().map(BufReader::new).collect();
    for r in &mut readers {
        r.get_mut()
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("send");
    }
    readers
        .iter_mut()
        .map(|r| {
            let left = limit.checked_sub(start.elapsed())?;
            r.get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let status = read_response(r).ok()?;
            (status == 200).then(|| start.elapsed())
        })
        .collect()
}

#[test]
fn sixteen_clients_connecting_at_once_are_all_answered_within_a_second() {
    // The failure is probabilistic; several fresh servers make a stranded connection likely
    // to show up if the remedy is missing (measured without it: 9 of 14 servers stranded some).
    for round in 0..6 {
        let app = TestApp::spawn();
        let results = burst(app.addr, 16, Duration::from_secs(1));
        let unanswered = results.iter().filter(|r| r.is_none()).count();
        assert_eq!(
            unanswered, 0,
            "round {round}: {unanswered} of 16 clients got no answer within 1 s: {results:?}"
        );
    }
}

#[test]
fn sixty_four_busy_keep_alive_clients_all_get_their_first_answer_within_a_second() {
    let app = TestApp::spawn();
    let addr = app.addr;
    let n = 64;
    let barrier = Arc::new(Barrier::new(n));
    let clients: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || -> (Option<Duration>, usize) {
                barrier.wait();
                let start = Instant::now();
                let Ok(stream) = TcpStream::connect(addr) else {
                    return (None, 0);
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut reader = BufReader::new(stream);
                let mut first = None;
                let mut served = 0;
                while start.elapsed() < Duration::from_millis(1500) {
                    match keep_alive_exchange(&mut reader) {
                        Ok(200) => {
                            served += 1;
                            first.get_or_insert(start.elapsed());
                        }
                        _ => break,
                    }
                }
                (first, served)
            })
        })
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let unserved = results.iter().filter(|(_, served)| *served == 0).count();
    assert_eq!(unserved, 0, "clients never served: {results:?}");
    let slow: Vec<_> = results
        .iter()
        .filter(|(first, _)| first.is_none_or(|d| d > Duration::from_secs(1)))
        .collect();
    assert!(slow.is_empty(), "first answers later than 1 s: {slow:?}");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let app = TestApp::spawn();
    let stream = TcpStream::connect(app.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = BufReader::new(stream);
    for i in 0..200 {
        let status = keep_alive_exchange(&mut reader)
            .unwrap_or_else(|e| panic!("request {i} on the same connection failed: {e}"));
        assert_eq!(status, 200, "request {i}");
    }
}

/// Slow and idle clients (issue 8): 200 connections that send nothing, and 4 that send their
/// request head one byte every 200 ms, do not stop another client from being served promptly.
/// Each such connection holds one tiny_http connection thread (not a request worker: a request
/// reaches a worker only once its head is complete), so a fresh client is answered while they
/// wait. What this does not give, and the README says so: a deadline on those connections or a
/// bound on their number (tiny_http 0.12 has neither); the nginx recipe supplies both.
#[test]
fn idle_and_slow_clients_do_not_delay_another_client() {
    let app = TestApp::spawn();
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(app.addr).expect("an idle connection"))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (app.addr, Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("a slow connection");
                let head = b"POST /v1/register-agent-run HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n";
                for b in head.iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let resp = app.register(&serde_json::json!({
            "agent_id": "a", "timestamp": "2024-01-15T14:30:45Z", "system_prompt": "p"}));
        assert_eq!(resp.status, 200, "{}", resp.text());
        worst = worst.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in slow {
        let _ = t.join();
    }
    drop(idle);
    println!("20 registrations beside 200 idle and 4 slow connections: slowest {worst:?}");
    assert!(
        worst < Duration::from_secs(1),
        "a registration took {worst:?} beside idle and slow clients"
    );
}
