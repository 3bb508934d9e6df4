//! Resilience through a real Envoy (BackendTrafficPolicy on a Gateway's routes and Services):
//! faults injected for a share of requests or only tagged ones, a circuit breaker holding a
//! slow backend to 10 requests at once, and outlier detection ejecting a failing endpoint
//! (seen in the Service's health score) and taking it back after the ejection time.
//!
//! ```text
//!  client ──► Envoy (gateway) ──► chaos.example.com  /abort /delay /tagged /  ──► fast
//!                               ├► limited.example.com (max 10 requests)     ──► slow (1 s)
//!                               └► pair.example.com (outlier detection)      ──► a, b
//! ```
//!
//! The backends are this test's own small HTTP servers, which count the requests they hold at
//! once and can be told to fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use trellis_harness::load::KeepAlive;
use trellis_harness::scenario::{NAMESPACE, gateway_yaml};
use trellis_harness::{ControlPlane, Envoy, eventually, http_get_text, private_loopback, request};

/// A backend that answers every request after `delay_ms`, with 500 while `fail` is set.
#[derive(Default)]
struct BackendState {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicU64,
    fail: AtomicBool,
    delay_ms: AtomicU64,
}

struct Backend {
    addr: SocketAddr,
    state: Arc<BackendState>,
}

impl Backend {
    fn start(delay_ms: u64) -> Backend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState::default());
        state.delay_ms.store(delay_ms, Ordering::SeqCst);
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Backend { addr, state }
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

fn serve(stream: std::net::TcpStream, state: &BackendState) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        // The request head; these requests have no body.
        let mut saw_line = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            saw_line = true;
        }
        if !saw_line {
            continue;
        }
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(state.delay_ms.load(Ordering::SeqCst)));
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        state.requests.fetch_add(1, Ordering::SeqCst);
        let status = if state.fail.load(Ordering::SeqCst) {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A Service with one EndpointSlice per backend.
fn service_yaml(name: &str, backends: &[&Backend]) -> String {
    let mut out = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
         spec:\n  ports: [{{name: http, port: 80}}]\n"
    );
    for (i, b) in backends.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {name}-{i}\n  namespace: {NAMESPACE}\n  \
             labels: {{kubernetes.io/service-name: {name}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [\"{ip}\"]}}]\n",
            ip = b.addr.ip(),
            port = b.addr.port(),
        ));
    }
    out
}

struct Setup {
    _tmp: tempfile::TempDir,
    cp: ControlPlane,
    envoy: Envoy,
    gateway: SocketAddr,
}

/// A control plane on `yaml` (after the scenario's Gateway) and a gateway Envoy, once `host`
/// routes.
fn start(yaml: &str, host: &str, extra_args: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let config = work.join("config");
    std::fs::create_dir_all(&config).unwrap();
    let (ip, port) = private_loopback();
    let mut all = gateway_yaml(ip, port);
    all.push_str(yaml);
    std::fs::write(config.join("resilience.yaml"), &all).unwrap();
    let mut args = vec!["--debounce-ms", "50"];
    args.extend_from_slice(extra_args);
    let cp = ControlPlane::start(&config, &work, &args).unwrap();
    let bootstrap =
        trellis_harness::bootstrap(&[cp.xds], &format!("{NAMESPACE}/web"), false, "e2e-proxy")
            .unwrap();
    let envoy = Envoy::start(&bootstrap, &work, "envoy", 2).unwrap();
    let gateway = SocketAddr::from((ip, port));
    eventually("the gateway to route", Duration::from_secs(20), || {
        Ok(request(gateway, "GET", host, "/", &[])?.status == 200)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", envoy.log(), cp.log()));
    Setup {
        _tmp: tmp,
        cp,
        envoy,
        gateway,
    }
}

const CHAOS: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: chaos, namespace: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [chaos.example.com]
  rules:
  - name: abort
    matches: [{path: {type: PathPrefix, value: /abort}}]
    backendRefs: [{name: fast, port: 80}]
  - name: delay
    matches: [{path: {type: PathPrefix, value: /delay}}]
    backendRefs: [{name: fast, port: 80}]
  - name: tagged
    matches: [{path: {type: PathPrefix, value: /tagged}}]
    backendRefs: [{name: fast, port: 80}]
  - name: plain
    backendRefs: [{name: fast, port: 80}]
---
apiVersion: policy.trellis.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: abort, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chaos, sectionName: abort}]
  faultInjection:
    abort: {httpStatus: 503, percentage: 30}
---
apiVersion: policy.trellis.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: delay, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chaos, sectionName: delay}]
  faultInjection:
    delay: {fixedDelay: 200ms}
---
apiVersion: policy.trellis.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: tagged, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chaos, sectionName: tagged}]
  faultInjection:
    abort: {httpStatus: 503, percentage: 30}
    headers: [{name: x-chaos, value: me}]
"#;

/// `n` requests on one connection; the share answered 503.
fn share_503(gateway: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> f64 {
    let mut client = KeepAlive::new(gateway, "chaos.example.com", path, headers);
    let mut aborted = 0;
    for _ in 0..n {
        match client.send().unwrap() {
            503 => aborted += 1,
            200 => {}
            other => panic!("{path}: unexpected status {other}"),
        }
    }
    aborted as f64 / n as f64
}

/// The median time of `n` requests.
fn median_ms(gateway: SocketAddr, path: &str, n: usize) -> f64 {
    let mut client = KeepAlive::new(gateway, "chaos.example.com", path, &[]);
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(client.send().unwrap(), 200);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

#[test]
fn faults_hit_the_share_of_requests_asked_and_only_tagged_ones_when_scoped_by_header() {
    let fast = Backend::start(0);
    let mut yaml = service_yaml("fast", &[&fast]);
    yaml.push_str(CHAOS);
    let s = start(&yaml, "chaos.example.com", &[]);

    // 30% of 1000: the binomial's standard deviation is 14.5 requests; 4.5 of them either side.
    let abort = share_503(s.gateway, "/abort", &[], 1000);
    println!(
        "abort 30%: {:.1}% of 1000 requests answered 503",
        abort * 100.0
    );
    assert!((0.235..=0.365).contains(&abort), "{abort}");
    let injected = s
        .envoy
        .stat_sum(".fault.aborts_injected")
        .unwrap_or_default();
    println!("Envoy's fault.aborts_injected: {injected}");
    assert!(injected >= 235, "{injected}");

    // Untagged requests to the header-scoped rule are never aborted; tagged ones are.
    let untagged = share_503(s.gateway, "/tagged", &[], 300);
    let tagged = share_503(s.gateway, "/tagged", &[("x-chaos", "me")], 1000);
    println!(
        "header-scoped: untagged {:.1}% of 300, tagged {:.1}% of 1000 answered 503",
        untagged * 100.0,
        tagged * 100.0
    );
    assert_eq!(untagged, 0.0);
    assert!((0.235..=0.365).contains(&tagged), "{tagged}");
    // Nor are requests with a wrong value.
    assert_eq!(
        share_503(s.gateway, "/tagged", &[("x-chaos", "you")], 200),
        0.0
    );

    // A 200 ms delay shows in the latency; the plain rule is not delayed.
    let plain = median_ms(s.gateway, "/", 50);
    let delayed = median_ms(s.gateway, "/delay", 20);
    println!("median latency: plain {plain:.1} ms, delay 200ms {delayed:.1} ms");
    assert!((200.0..400.0).contains(&delayed), "{delayed}");
    assert!(plain < 100.0, "{plain}");
    assert_eq!(share_503(s.gateway, "/", &[], 200), 0.0);

    // The policies say they are in force.
    let object =
        s.cp.object_status("BackendTrafficPolicy", "shop/abort")
            .unwrap()
            .expect("the policy's status");
    let accepted = &object["status"]["ancestors"][0]["conditions"][0];
    assert_eq!(accepted["type"], "Accepted", "{object}");
    assert_eq!(accepted["status"], "True", "{object}");
}

/// One GET on a new connection: the status, the time until the whole response arrived (not
/// until the connection closes: Envoy holds a connection it closes for up to its delayed-close
/// timeout), and whether it is marked `x-envoy-overloaded`.
fn timed_get(gateway: SocketAddr, host: &str) -> (u16, Duration, bool) {
    use std::io::Read;
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(gateway).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a whole response");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if raw.len() >= end + 4 + length {
            let status = text[9..12].parse().unwrap();
            return (
                status,
                started.elapsed(),
                text[..end].contains("x-envoy-overloaded"),
            );
        }
    }
}

#[test]
fn a_circuit_breaker_holds_a_backend_to_ten_requests_and_answers_the_overflow_at_once() {
    let slow = Backend::start(1_000);
    let mut yaml = service_yaml("slow", &[&slow]);
    yaml.push_str(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: limited, namespace: shop}\n\
         spec:\n  parentRefs: [{name: web}]\n  hostnames: [limited.example.com]\n  \
         rules: [{backendRefs: [{name: slow, port: 80}]}]\n\
         ---\napiVersion: policy.trellis.dev/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: slow, namespace: shop}\n\
         spec:\n  targetRefs: [{group: \"\", kind: Service, name: slow}]\n  \
         circuitBreaker: {maxParallelRequests: 10}\n",
    );
    let s = start(&yaml, "limited.example.com", &[]);
    slow.state.max_in_flight.store(0, Ordering::SeqCst);

    // 100 clients at once against a backend that takes 1 s per request.
    let barrier = Arc::new(std::sync::Barrier::new(100));
    let gateway = s.gateway;
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                timed_get(gateway, "limited.example.com")
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let overflow: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    let slowest_overflow = overflow.iter().map(|r| r.1).max().unwrap_or_default();
    let max_seen = slow.state.max_in_flight.load(Ordering::SeqCst);
    let counter = s
        .envoy
        .stat("cluster.service_shop_slow_80.upstream_rq_active_overflow")
        .unwrap()
        .unwrap_or_default();

    println!(
        "100 concurrent, max 10: {ok} answered 200, {} answered 503 (x-envoy-overloaded on \
         {}), slowest 503 in {slowest_overflow:?}; the backend held at most {max_seen} at once; \
         upstream_rq_active_overflow = {counter}",
        overflow.len(),
        overflow.iter().filter(|r| r.2).count(),
    );
    assert_eq!(ok + overflow.len(), 100, "{results:?}");
    assert!(max_seen <= 10, "{max_seen}");
    assert!((1..=10).contains(&ok), "{ok}");
    assert!(overflow.len() >= 90, "{}", overflow.len());
    assert!(
        overflow.iter().all(|r| r.2),
        "every overflow is marked x-envoy-overloaded"
    );
    // Immediately: well before the backend's 1 s.
    assert!(
        slowest_overflow < Duration::from_millis(500),
        "{slowest_overflow:?}"
    );
    assert_eq!(counter, overflow.len() as u64);
}

#[test]
fn outlier_detection_ejects_a_failing_endpoint_and_takes_it_back_after_the_ejection_time() {
    let a = Backend::start(0);
    let b = Backend::start(0);
    let mut yaml = service_yaml("pair", &[&a, &b]);
    yaml.push_str(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {name: pair, namespace: shop}\n\
         spec:\n  parentRefs: [{name: web}]\n  hostnames: [pair.example.com]\n  \
         rules: [{backendRefs: [{name: pair, port: 80}]}]\n\
         ---\napiVersion: policy.trellis.dev/v1alpha1\nkind: BackendTrafficPolicy\n\
         metadata: {name: pair, namespace: shop}\n\
         spec:\n  targetRefs: [{group: \"\", kind: Service, name: pair}]\n  \
         outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, \
         maxEjectionPercent: 50}\n",
    );
    let s = start(&yaml, "pair.example.com", &[]);
    let mut client = KeepAlive::new(s.gateway, "pair.example.com", "/", &[]);
    for _ in 0..20 {
        assert_eq!(client.send().unwrap(), 200);
    }
    assert!(a.requests() > 0 && b.requests() > 0, "both endpoints serve");

    // a fails from now on: with round robin it gets every other request until ejected.
    a.state.fail.store(true, Ordering::SeqCst);
    let (mut failed, mut good_in_a_row, mut sent) = (0, 0, 0);
    while good_in_a_row < 50 {
        sent += 1;
        assert!(sent < 500, "never settled: {failed} failed");
        match client.send().unwrap() {
            200 => good_in_a_row += 1,
            _ => {
                failed += 1;
                good_in_a_row = 0;
            }
        }
    }
    let ejected_at = Instant::now();
    let a_requests = a.requests();
    let stat = |name: &str| {
        s.envoy
            .stat(&format!(
                "cluster.service_shop_pair_80.outlier_detection.{name}"
            ))
            .unwrap()
            .unwrap_or_default()
    };
    println!(
        "a failing: {failed} failed requests of {sent} before traffic shifted to b \
         (N = 3 consecutive 5xx); ejections_active = {}, ejections_enforced_consecutive_5xx = {}",
        stat("ejections_active"),
        stat("ejections_enforced_consecutive_5xx"),
    );
    assert!(failed <= 3, "{failed}");
    assert_eq!(stat("ejections_active"), 1);

    // The ejection shows in the Service's health score (capacity), through the stats sink.
    let mut background = KeepAlive::new(s.gateway, "pair.example.com", "/", &[]);
    let mut health = serde_json::Value::Null;
    eventually(
        "the ejection in the health score",
        Duration::from_secs(28),
        || {
            for _ in 0..20 {
                background.send()?;
            }
            health = serde_json::from_str(&http_get_text(s.cp.admin, "/api/services/shop/pair")?)?;
            let reason = health["service"]["health_reason"]
                .as_str()
                .unwrap_or_default();
            Ok(reason.contains("ejected"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {health}"));
    println!(
        "health after {:?}: score {} {} ({})",
        ejected_at.elapsed(),
        health["service"]["health_score"],
        health["service"]["health_state"],
        health["service"]["health_reason"]
    );

    // Fixed: after the 30 s ejection (reviewed every 1 s), a serves again.
    a.state.fail.store(false, Ordering::SeqCst);
    eventually("a to serve again", Duration::from_secs(45), || {
        for _ in 0..10 {
            assert_eq!(client.send()?, 200);
        }
        std::thread::sleep(Duration::from_millis(100));
        Ok(a.requests() > a_requests)
    })
    .unwrap();
    let back = ejected_at.elapsed();
    println!("a back in the load balancer {back:?} after its ejection");
    assert!(back >= Duration::from_secs(29), "{back:?}");
    assert_eq!(stat("ejections_active"), 0);
}
