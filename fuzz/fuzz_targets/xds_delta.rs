//! The Delta state machine on any sequence of requests, ticks and snapshots: no panic; every
//! response carries a fresh nonce, and never both sends and removes one name.
#![no_main]

#[path = "xds_common.rs"]
mod common;

use common::{Choices, NAMES, TYPES, snapshot};
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::google::rpc::Status;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use trellis_xds::{DeltaStream, StreamLimits};

fuzz_target!(|data: &[u8]| {
    let mut c = Choices { data };
    let mut stream = DeltaStream::new(snapshot(c.byte().unwrap_or(0)));
    let limits = StreamLimits::default();
    let mut nonces = BTreeSet::new();
    let mut last: Vec<(String, String)> = Vec::new(); // (type url, nonce)
    while let Some(op) = c.byte() {
        let (responses, _events) = match op % 8 {
            0 => stream.on_snapshot(snapshot(c.byte().unwrap_or(0))),
            1 => stream.on_tick(),
            _ => {
                let t = TYPES[usize::from(c.byte().unwrap_or(0)) % TYPES.len()];
                let answer = c.byte().unwrap_or(0);
                let nonce = match last.iter().rev().find(|(u, _)| *u == t.type_url()) {
                    Some((_, n)) if answer % 3 != 0 => n.clone(),
                    _ => String::new(),
                };
                let initial = if answer % 5 == 0 {
                    NAMES
                        .iter()
                        .map(|n| (n.to_string(), format!("v{answer}")))
                        .collect()
                } else {
                    Default::default()
                };
                let request = DeltaDiscoveryRequest {
                    type_url: t.type_url(),
                    response_nonce: nonce,
                    resource_names_subscribe: c.names(),
                    resource_names_unsubscribe: c.names(),
                    initial_resource_versions: initial,
                    error_detail: (answer % 7 == 1).then(|| Status {
                        code: 13,
                        message: "rejected".into(),
                        details: Vec::new(),
                    }),
                    ..Default::default()
                };
                if stream.check_request(&request, &limits).is_err() {
                    continue;
                }
                stream.on_request(&request)
            }
        };
        for r in responses {
            assert!(nonces.insert(r.nonce.clone()), "nonce {} sent twice", r.nonce);
            let sent: BTreeSet<&str> = r.resources.iter().map(|x| x.name.as_str()).collect();
            assert!(
                r.removed_resources.iter().all(|n| !sent.contains(n.as_str())),
                "{r:?}"
            );
            last.push((r.type_url.clone(), r.nonce.clone()));
        }
        let _ = stream.sync();
    }
});
