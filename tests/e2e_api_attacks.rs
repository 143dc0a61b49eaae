//! The control API under attack, on the real binary: a hostile local client
//! (slow body, stalled pipeline, 32 MiB header, hundreds of idle
//! connections) and a web page the operator opens (cross-origin writes, DNS
//! rebinding). Throughout, an authorised client's requests and `/metrics`
//! answer quickly (p99 < 50 ms) and the gateway's memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use control::client::{request, Endpoint};

const TOKEN: &str = "attack-test-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(s: &Scratch, test: &str, port: u16) -> std::path::PathBuf {
    s.config(&format!(
        r#"
[eal]
{}
[workers]
cores = [1]
[control]
socket = "api.sock"
listen = "127.0.0.1:{port}"
token = "{TOKEN}"
[[port]]
name = "a"
device = "net_null0,no-rx=1"
role = "cleartext"
"#,
        eal_args_toml(test)
    ))
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An authorised client polling health and /metrics in the background;
/// returns the latencies when stopped.
struct Prober {
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<Duration>, Vec<String>)>,
}

impl Prober {
    fn start(ep: Endpoint, token: Option<&'static str>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut lat, mut errors) = (Vec::new(), Vec::new());
            while !s2.load(Ordering::Relaxed) {
                for path in ["/api/v1/health", "/metrics"] {
                    let t = Instant::now();
                    match request(&ep, "GET", path, token, None, Duration::from_secs(5)) {
                        Ok(a) if a.status == 200 => lat.push(t.elapsed()),
                        Ok(a) => errors.push(format!("{path}: {} {}", a.status, a.text())),
                        Err(e) => errors.push(format!("{path}: {e}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (lat, errors)
        });
        Prober { started: Instant::now(), stop, thread }
    }

    /// Stop; assert every probe answered and p99 < 50 ms.
    fn check(self, what: &str) {
        // Probe for a while even when the attack was over quickly.
        if let Some(rest) = Duration::from_millis(1500).checked_sub(self.started.elapsed()) {
            std::thread::sleep(rest);
        }
        self.stop.store(true, Ordering::Relaxed);
        let (mut lat, errors) = self.thread.join().unwrap();
        assert!(errors.is_empty(), "{what}: the authorised client failed: {errors:?}");
        assert!(lat.len() >= 20, "{what}: only {} probes", lat.len());
        lat.sort();
        let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
        assert!(p99 < Duration::from_millis(50), "{what}: p99 {p99:?} over {} probes", lat.len());
    }
}

fn raw_answer(stream: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn hostile_clients_cannot_freeze_or_bloat_the_api() {
    let _heavy = heavy_test_lock();
    let s = Scratch::new();
    let port = free_port();
    let cfg = config(&s, "api-attacks", port);
    let (mut child, report) = spawn_espgw(&s, &cfg, &[]);
    let tcp = Endpoint::Tcp(format!("127.0.0.1:{port}"));
    let sock = Endpoint::Unix(s.path("api.sock"));
    let t0 = Instant::now();
    while request(&sock, "GET", "/api/v1/health", None, None, Duration::from_secs(1)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "espgw exited");
        assert!(t0.elapsed() < Duration::from_secs(30), "the API did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = child.id();
    let rss_before = rss_kb(pid);

    // The socket is 0660 (who may connect is a file permission).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.path("api.sock")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    // 1. A body that never arrives: without a token, refused from the headers
    //    alone (no body read); with one, the stalled request times out (408)
    //    while everyone else is served.
    let probe = Prober::start(tcp.clone(), Some(TOKEN));
    let mut anon = TcpStream::connect(("127.0.0.1", port)).unwrap();
    anon.write_all(
        format!("POST /api/v1/eroutes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"name\"")
            .as_bytes(),
    )
    .unwrap();
    anon.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let answer = raw_answer(&mut anon);
    assert_eq!(status_of(&answer), 401, "auth is decided before the body: {answer}");
    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(
        format!(
            "POST /api/v1/eroutes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"name\""
        )
        .as_bytes(),
    )
    .unwrap();
    // A token holder pipelining requests without reading the answers.
    let mut greedy = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let one = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    greedy.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..2000 {
        if greedy.write_all(one.as_bytes()).is_err() {
            break; // its buffers are full: only it waits
        }
    }
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let answer = raw_answer(&mut slow);
    assert_eq!(status_of(&answer), 408, "stalled body: {answer}");
    assert!(t.elapsed() < Duration::from_secs(8), "the body deadline is 5 s, took {:?}", t.elapsed());
    probe.check("slow body + pipelining");
    drop(greedy);

    // 2. A 32 MiB header line: 431, memory does not follow it.
    let probe = Prober::start(sock.clone(), None);
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    big.write_all(format!("GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: ").as_bytes()).unwrap();
    big.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..32 {
        if big.write_all(&chunk).is_err() {
            break; // the server closed after answering 431
        }
    }
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let answer = raw_answer(&mut big);
    assert!(answer.is_empty() || status_of(&answer) == 431, "huge header: {answer:.200}");
    probe.check("huge header");

    // 3. 600 idle connections (TCP and socket): the authorised client is
    //    still served at once; idle ones are closed by the server.
    let probe = Prober::start(tcp.clone(), Some(TOKEN));
    let idle_tcp: Vec<TcpStream> = (0..400).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    let idle_unix: Vec<UnixStream> = (0..200).map(|_| UnixStream::connect(s.path("api.sock")).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(2));
    probe.check("600 idle connections");
    let mut first = idle_tcp.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut b = [0u8; 1];
    assert!(matches!(first.read(&mut b), Ok(0) | Err(_)), "an idle connection is closed by the server");
    assert!(t.elapsed() < Duration::from_secs(15), "idle connections last {:?}", t.elapsed());
    drop(idle_unix);

    // 4. Web pages: a cross-origin write (even on the token-less socket), a
    //    rebinding Host, a form post, TCP without the token.
    let page = |ep: &Endpoint, extra: &str, ct: &str, token: Option<&str>| -> u16 {
        let body = r#"{"name":"evil","src":"0.0.0.0/0","dst":"0.0.0.0/0","action":"pass"}"#;
        let (host, mut stream): (String, Box<dyn control::client::Stream>) = match ep {
            Endpoint::Tcp(h) => (h.clone(), Box::new(TcpStream::connect(h).unwrap())),
            Endpoint::Unix(p) => ("localhost".into(), Box::new(UnixStream::connect(p).unwrap())),
        };
        let host = if extra.starts_with("Host:") { String::new() } else { format!("Host: {host}\r\n") };
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!(
            "POST /api/v1/eroutes HTTP/1.1\r\n{host}{extra}{auth}Content-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).unwrap();
        status_of(&raw_answer(&mut stream))
    };
    assert_eq!(
        page(&sock, "Origin: http://evil.example\r\n", "application/json", None),
        403,
        "cross-origin on the socket"
    );
    assert_eq!(
        page(&tcp, "Origin: http://evil.example\r\n", "application/json", Some(TOKEN)),
        403,
        "cross-origin on TCP"
    );
    assert_eq!(
        page(&tcp, &format!("Host: rebind.evil.example:{port}\r\n"), "application/json", Some(TOKEN)),
        403,
        "rebinding"
    );
    assert_eq!(page(&sock, "", "text/plain", None), 415, "a form-style post");
    assert_eq!(page(&tcp, "", "application/json", None), 401, "TCP without the token");
    let eroutes = request(&sock, "GET", "/api/v1/eroutes", None, None, Duration::from_secs(5)).unwrap();
    assert_eq!(eroutes.text().trim(), "[]", "no attack added an eroute");
    // The same request from the operator's tool goes through.
    assert_eq!(page(&sock, "", "application/json", None), 201);

    let rss_after = rss_kb(pid);
    assert!(rss_after < rss_before + 30 * 1024, "RSS grew from {rss_before} kB to {rss_after} kB under the attacks");
    let run = stop_espgw(child, &report);
    run.assert_ok();
    assert!(!Path::new(&s.path("api.sock")).exists(), "the socket is removed at exit");
}
