//! The file provider against a real directory: last good content, duplicates, unknown kinds,
//! generations, and the watcher.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::Duration;
use trellis_model::ObjectKey;
use trellis_sources::{FileProvider, Severity, watch};

const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: apps
spec:
  gatewayClassName: trellis
  listeners:
  - name: http
    port: 8080
    protocol: HTTP
";

const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: apps
spec:
  parentRefs: [{name: web}]
  hostnames: [a.example.com]
";

#[test]
fn broken_file_keeps_its_last_good_content_and_says_where_it_broke() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    let mut provider = FileProvider::new(dir.path());
    let load = provider.load();
    assert!(load.diagnostics.is_empty(), "{:?}", load.diagnostics);
    assert!(
        load.input
            .gateways
            .contains_key(&ObjectKey::new("apps", "web"))
    );

    // Break the port's type on line 10.
    fs::write(
        dir.path().join("gw.yaml"),
        GATEWAY.replace("port: 8080", "port: eighty"),
    )
    .unwrap();
    let load = provider.load();
    assert!(
        load.input
            .gateways
            .contains_key(&ObjectKey::new("apps", "web")),
        "last good content stays"
    );
    let error = load
        .diagnostics
        .iter()
        .find(|d| d.line.is_some())
        .expect("a located error");
    assert_eq!(error.file, "gw.yaml");
    assert_eq!(error.document, Some(1));
    assert_eq!(error.line, Some(10), "{error}");
    assert_eq!(error.severity, Severity::Error);
    assert!(
        load.diagnostics
            .iter()
            .any(|d| d.message.contains("last good content"))
    );
    eprintln!("{error}");

    // Invalid YAML: still located, still the last good content.
    fs::write(
        dir.path().join("gw.yaml"),
        GATEWAY.replace("port: 8080", "port: [oops"),
    )
    .unwrap();
    let load = provider.load();
    assert!(
        load.input
            .gateways
            .contains_key(&ObjectKey::new("apps", "web"))
    );
    let error = load
        .diagnostics
        .iter()
        .find(|d| d.line.is_some())
        .expect("a located error");
    assert_eq!(error.line, Some(11), "{error}");
    eprintln!("{error}");
}

#[test]
fn file_that_never_parsed_contributes_nothing_but_others_load() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), "kind: [\n").unwrap();
    fs::write(dir.path().join("b.yaml"), GATEWAY).unwrap();
    let load = FileProvider::new(dir.path()).load();
    assert_eq!(load.input.gateways.len(), 1);
    assert!(
        load.diagnostics
            .iter()
            .any(|d| d.file == "a.yaml" && d.severity == Severity::Error)
    );
}

#[test]
fn unknown_kind_is_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        format!("{GATEWAY}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n");
    fs::write(dir.path().join("all.yml"), text).unwrap();
    let load = FileProvider::new(dir.path()).load();
    assert_eq!(load.input.gateways.len(), 1);
    let warning = &load.diagnostics[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(warning.document, Some(2));
    assert!(warning.message.contains("Deployment"));
}

#[test]
fn duplicate_object_keeps_the_first_definition_and_reports_the_second() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), GATEWAY).unwrap();
    fs::write(dir.path().join("b.yaml"), GATEWAY.replace("8080", "9090")).unwrap();
    let load = FileProvider::new(dir.path()).load();
    let gw = &load.input.gateways[&ObjectKey::new("apps", "web")];
    assert_eq!(gw.spec.listeners[0].port, 8080);
    let dup = &load.diagnostics[0];
    assert_eq!(dup.file, "b.yaml");
    assert!(
        dup.message.contains("duplicate") && dup.message.contains("a.yaml"),
        "{dup}"
    );
}

#[test]
fn generation_starts_at_one_and_bumps_only_when_the_spec_changes() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("r.yaml"), ROUTE).unwrap();
    let mut provider = FileProvider::new(dir.path());
    let key = ObjectKey::new("apps", "r");
    let first = provider.load();
    assert_eq!(first.input.http_routes[&key].metadata.generation, Some(1));
    let created = first.input.http_routes[&key]
        .metadata
        .creation_timestamp
        .clone();
    assert!(created.is_some());
    // A label change is not a spec change.
    fs::write(
        dir.path().join("r.yaml"),
        ROUTE.replace("namespace: apps", "namespace: apps\n  labels: {a: b}"),
    )
    .unwrap();
    assert_eq!(
        provider.load().input.http_routes[&key].metadata.generation,
        Some(1)
    );
    fs::write(
        dir.path().join("r.yaml"),
        ROUTE.replace("a.example.com", "b.example.com"),
    )
    .unwrap();
    let third = provider.load();
    assert_eq!(third.input.http_routes[&key].metadata.generation, Some(2));
    assert_eq!(
        third.input.http_routes[&key].metadata.creation_timestamp,
        created
    );
}

#[test]
fn nested_directories_are_read_and_hidden_ones_skipped() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("sub")).unwrap();
    fs::create_dir_all(dir.path().join(".hidden")).unwrap();
    fs::write(dir.path().join("sub/gw.yaml"), GATEWAY).unwrap();
    fs::write(dir.path().join(".hidden/r.yaml"), ROUTE).unwrap();
    fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
    let load = FileProvider::new(dir.path()).load();
    assert_eq!(load.input.gateways.len(), 1);
    assert!(load.input.http_routes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_publishes_changes_after_the_debounce() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    let mut rx = watch(dir.path().to_path_buf(), Duration::from_millis(50)).unwrap();
    assert_eq!(rx.borrow().input.gateways.len(), 1);
    fs::write(dir.path().join("r.yaml"), ROUTE).unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rx.borrow().input.http_routes.len(), 1);
    fs::remove_file(dir.path().join("r.yaml")).unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(rx.borrow().input.http_routes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_change_is_applied_at_once_and_the_changes_after_it_wait_out_the_window() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    let debounce = Duration::from_secs(3);
    let mut rx = watch(dir.path().to_path_buf(), debounce).unwrap();
    // After a quiet period, a change goes out after the settle, long before the window ends.
    fs::write(dir.path().join("r.yaml"), ROUTE).unwrap();
    tokio::time::timeout(Duration::from_millis(1500), rx.changed())
        .await
        .expect("a lone change waited for the debounce window")
        .unwrap();
    assert_eq!(rx.borrow().input.http_routes.len(), 1);
    // A change right after that load belongs to a burst: it waits for the window.
    fs::remove_file(dir.path().join("r.yaml")).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1000), rx.changed())
            .await
            .is_err(),
        "a change within the window of the last load was applied before the window ended"
    );
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(rx.borrow().input.http_routes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_two_chunks_is_applied_once_whole() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    let mut rx = watch(dir.path().to_path_buf(), Duration::from_millis(20)).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        let mut rx = rx.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let routes = rx.borrow_and_update().input.http_routes.len();
                seen.lock().unwrap().push(routes);
            }
        })
    };
    // The first route, a pause far longer than the debounce with the file still open, then
    // the second.
    let second = ROUTE.replace("name: r\n", "name: r2\n");
    let mut file = fs::File::create(dir.path().join("routes.yaml")).unwrap();
    file.write_all(format!("{ROUTE}---\n").as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    file.write_all(second.as_bytes()).unwrap();
    drop(file);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if rx.borrow_and_update().input.http_routes.len() == 2 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    })
    .await
    .expect("the whole file was applied");
    tokio::time::sleep(Duration::from_millis(100)).await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.contains(&1),
        "a load with only the first half of the file was published: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_not_applied_empty_while_it_is_rewritten() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    fs::write(dir.path().join("r.yaml"), ROUTE).unwrap();
    let mut rx = watch(dir.path().to_path_buf(), Duration::from_millis(20)).unwrap();
    assert_eq!(rx.borrow_and_update().input.http_routes.len(), 1);
    // `cat > r.yaml`: truncated at open, written a while later.
    let mut file = fs::File::create(dir.path().join("r.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        rx.borrow().input.http_routes.len(),
        1,
        "the truncated file was applied"
    );
    file.write_all(ROUTE.replace("a.example.com", "b.example.com").as_bytes())
        .unwrap();
    drop(file);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let hosts = rx.borrow_and_update().input.http_routes[&ObjectKey::new("apps", "r")]
                .spec
                .hostnames
                .clone();
            if hosts == ["b.example.com"] {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
        }
    })
    .await
    .expect("the rewritten file was applied");
}

#[test]
fn symlink_loops_are_reported_and_loading_finishes() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/gw.yaml"), GATEWAY).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop-a")).unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop-b")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("sub"), dir.path().join("again")).unwrap();
    let started = std::time::Instant::now();
    let load = FileProvider::new(dir.path()).load();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(load.input.gateways.len(), 1);
    let loops: Vec<_> = load
        .diagnostics
        .iter()
        .filter(|d| d.message.contains("already read"))
        .collect();
    assert_eq!(loops.len(), 3, "{:?}", load.diagnostics);
    assert!(
        !load
            .diagnostics
            .iter()
            .any(|d| d.message.contains("duplicate")),
        "{:?}",
        load.diagnostics
    );
}

#[test]
fn fifos_and_oversized_files_are_reported_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe.yaml"))
        .status()
        .unwrap();
    assert!(status.success());
    let big = fs::File::create(dir.path().join("big.yaml")).unwrap();
    big.set_len(trellis_sources::file::limits::MAX_FILE_BYTES + 1)
        .unwrap();
    let started = std::time::Instant::now();
    let load = FileProvider::new(dir.path()).load();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(load.input.gateways.len(), 1);
    let about = |file: &str| {
        load.diagnostics
            .iter()
            .find(|d| d.file == file)
            .map(|d| d.message.clone())
            .unwrap_or_default()
    };
    assert!(
        about("pipe.yaml").contains("not a regular file"),
        "{:?}",
        load.diagnostics
    );
    assert!(
        about("big.yaml").contains("larger than"),
        "{:?}",
        load.diagnostics
    );
}

#[test]
fn a_file_broken_before_a_restart_keeps_its_objects_and_their_age_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("gw.yaml"), GATEWAY).unwrap();
    fs::write(dir.path().join("r.yaml"), ROUTE).unwrap();
    let key = ObjectKey::new("apps", "r");
    let before = FileProvider::with_state_dir(dir.path(), state.path())
        .unwrap()
        .load();
    let created = before.input.http_routes[&key]
        .metadata
        .creation_timestamp
        .clone();
    // Broken while the control plane is down.
    fs::write(
        dir.path().join("r.yaml"),
        ROUTE.replace("hostnames: [", "hostnames: [["),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let after = FileProvider::with_state_dir(dir.path(), state.path())
        .unwrap()
        .load();
    let route = &after.input.http_routes[&key];
    assert_eq!(route.spec.hostnames, ["a.example.com"]);
    assert_eq!(route.metadata.creation_timestamp, created, "its age holds");
    assert!(
        after
            .diagnostics
            .iter()
            .any(|d| d.file == "r.yaml" && d.message.contains("before the control plane restarted")),
        "{:?}",
        after.diagnostics
    );
    // Without the state directory, a restart loses it.
    let forgetful = FileProvider::new(dir.path()).load();
    assert!(forgetful.input.http_routes.is_empty());
    // A file removed is forgotten.
    fs::remove_file(dir.path().join("r.yaml")).unwrap();
    FileProvider::with_state_dir(dir.path(), state.path())
        .unwrap()
        .load();
    fs::write(dir.path().join("r.yaml"), "kind: [\n").unwrap();
    let recreated = FileProvider::with_state_dir(dir.path(), state.path())
        .unwrap()
        .load();
    assert!(recreated.input.http_routes.is_empty());
}
