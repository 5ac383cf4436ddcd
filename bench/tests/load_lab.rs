//! The load generator and nginx in the lab (needs root; nginx from `cargo xtask setup`).
//! Runs are short and bounded; the figures are printed, never asserted (2 shared cores).

use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use svc_bench::load::{self, Report};
use svc_bench::nginx::{self, Nginx};
use svc_lab::Lab;

/// One lab at a time: the numbers are only meaningful without a second load beside them.
static SERIAL: Mutex<()> = Mutex::new(());

fn show(what: &str, r: &Report) {
    eprintln!(
        "{what}: {} requests, {} errors, {} connections in {:.2} s = {:.0}/s; connect p50 {} \
         p99 {} p999 {} µs; request p50 {} p99 {} p999 {} µs; {:?}",
        r.requests,
        r.errors,
        r.connections,
        r.duration.as_secs_f64(),
        r.rate_per_s,
        r.connect_p50_us,
        r.connect_p99_us,
        r.connect_p999_us,
        r.request_p50_us,
        r.request_p99_us,
        r.request_p999_us,
        r.errors_by_kind
    );
}

#[test]
fn both_loads_against_an_echo_pod_directly() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up().expect("lab (needs root)");
    let target = lab.pod("p1").echo_addr();

    let r = load::new_connections(
        lab.client_ns(),
        target,
        4,
        Duration::from_secs(1),
        1_000_000,
    )
    .unwrap();
    show("new connections, echo p1", &r);
    assert!(r.requests > 0);
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_kind);
    assert_eq!(r.connections, r.requests);
    assert!(r.duration < Duration::from_secs(5), "{:?}", r.duration);

    // The echo servers answer HTTP/1.0 and close: every request reconnects, without errors.
    let r = load::keepalive_requests(
        lab.client_ns(),
        target,
        4,
        Duration::from_secs(1),
        1_000_000,
    )
    .unwrap();
    show("keep-alive, echo p1", &r);
    assert!(r.requests > 0);
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_kind);
    assert_eq!(r.connections, r.requests);
}

#[test]
fn refused_connections_are_counted_and_the_cap_holds() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up().expect("lab (needs root)");
    let nothing = SocketAddrV4::new(lab.pod_ip("p1"), 9);
    let t0 = Instant::now();
    let r = load::new_connections(
        lab.client_ns(),
        nothing,
        4,
        Duration::from_secs(1),
        1_000_000,
    )
    .unwrap();
    show("new connections, refused", &r);
    assert_eq!(r.requests, 0);
    assert!(r.errors > 0);
    assert_eq!(
        r.errors_by_kind.keys().collect::<Vec<_>>(),
        ["connect: connection refused"]
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    let r = load::keepalive_requests(
        lab.client_ns(),
        nothing,
        2,
        Duration::from_millis(300),
        1_000_000,
    )
    .unwrap();
    assert_eq!((r.requests, r.connections), (0, 0));
    assert!(r.errors > 0);

    // The request cap ends a long run early; every attempt counts against it.
    let target = lab.pod("p2").echo_addr();
    let t0 = Instant::now();
    let r = load::new_connections(lab.client_ns(), target, 3, Duration::from_secs(30), 50).unwrap();
    assert_eq!(r.requests + r.errors, 50);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // A namespace that does not exist is an error, not a panic or a hang.
    assert!(
        load::new_connections("svb-no-such-ns", target, 2, Duration::from_secs(1), 10).is_err()
    );
}

#[test]
fn nginx_in_a_pod_answers_200_and_carries_both_loads() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up().expect("lab (needs root)");
    let p1 = lab.pod("p1");
    let server = Nginx::start(&p1.ns, nginx::LAB_PORT).expect("nginx");
    let dir = server.dir().to_path_buf();
    assert!(server.pid().is_some());
    let target = SocketAddrV4::new(p1.ip, nginx::LAB_PORT);

    let (status, body) = load::http_get(lab.client_ns(), target).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));

    let r = load::new_connections(
        lab.client_ns(),
        target,
        16,
        Duration::from_secs(1),
        1_000_000,
    )
    .unwrap();
    show("new connections, nginx p1", &r);
    assert!(r.requests > 0);
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_kind);

    let r = load::keepalive_requests(
        lab.client_ns(),
        target,
        16,
        Duration::from_secs(1),
        1_000_000,
    )
    .unwrap();
    show("keep-alive, nginx p1", &r);
    assert!(r.requests > 0);
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_kind);
    assert_eq!(r.connections, 16, "nginx keeps the connections open");

    // Stopped on drop: the port refuses and the run directory is gone.
    drop(server);
    assert!(load::http_get(lab.client_ns(), target).is_err());
    assert!(!dir.exists(), "{} left behind", dir.display());

    // A port that is taken (the echo server's) fails at start with nginx's message.
    let e = Nginx::start(&p1.ns, svc_lab::ECHO_PORT).expect_err("nginx on the echo server's port");
    let msg = format!("{e:#}");
    assert!(msg.contains("Address already in use"), "{msg}");
}
