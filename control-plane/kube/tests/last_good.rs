//! The last valid policy specs kept in a ConfigMap against the fake API server: only the
//! leader writes, a change is written, and a new replica reads what was kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use trellis_fake_apiserver::FakeApiServer;
use trellis_kube::Health;
use trellis_kube::last_good;

async fn until_read(server: &FakeApiServer, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = last_good::read(&server.client(), "trellis-system")
            .await
            .unwrap();
        if got.as_deref() == want {
            return;
        }
        assert!(Instant::now() < deadline, "read {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_keeps_the_last_valid_specs_and_a_new_replica_reads_them() {
    let server = FakeApiServer::new();
    assert_eq!(
        last_good::read(&server.client(), "trellis-system")
            .await
            .unwrap(),
        None
    );
    let (content, content_rx) = watch::channel(None::<Arc<String>>);
    let (leader, leader_rx) = watch::channel(false);
    let writer = last_good::spawn_writer(
        server.client(),
        "trellis-system".into(),
        content_rx,
        leader_rx,
        Arc::new(Health::default()),
    );
    content.send_replace(Some(Arc::new(
        "[{\"kind\":\"AuthorizationPolicy\"}]".into(),
    )));
    // Not the leader: nothing written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    until_read(&server, None).await;
    leader.send_replace(true);
    until_read(&server, Some("[{\"kind\":\"AuthorizationPolicy\"}]")).await;
    content.send_replace(Some(Arc::new("[]".into())));
    until_read(&server, Some("[]")).await;
    writer.abort();
}
