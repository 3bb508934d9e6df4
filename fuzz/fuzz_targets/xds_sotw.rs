//! The SotW state machine on any sequence of requests, ticks and snapshots: no panic; every
//! response names a type the request stream subscribed to, carries a fresh nonce, and holds
//! only resources of a published snapshot.
#![no_main]

#[path = "xds_common.rs"]
mod common;

use common::{Choices, TYPES, snapshot};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc::Status;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use trellis_xds::{SotwStream, StreamLimits};

fuzz_target!(|data: &[u8]| {
    let mut c = Choices { data };
    let mut stream = SotwStream::new(snapshot(c.byte().unwrap_or(0)));
    let limits = StreamLimits::default();
    let mut nonces = BTreeSet::new();
    let mut last: Vec<(String, String, String)> = Vec::new(); // (type url, version, nonce)
    while let Some(op) = c.byte() {
        let (responses, _events) = match op % 8 {
            0 => stream.on_snapshot(snapshot(c.byte().unwrap_or(0))),
            1 => stream.on_tick(),
            _ => {
                let t = TYPES[usize::from(c.byte().unwrap_or(0)) % TYPES.len()];
                let answer = c.byte().unwrap_or(0);
                let (version, nonce) = match last.iter().rev().find(|(u, _, _)| *u == t.type_url()) {
                    Some((_, v, n)) if answer % 3 != 0 => (v.clone(), n.clone()),
                    _ if answer % 3 == 0 => ("v-old".to_string(), String::new()),
                    _ => (String::new(), format!("{answer}")),
                };
                let request = DiscoveryRequest {
                    type_url: t.type_url(),
                    version_info: version,
                    response_nonce: nonce,
                    resource_names: c.names(),
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
            assert!(!r.version_info.is_empty());
            last.push((r.type_url.clone(), r.version_info.clone(), r.nonce.clone()));
        }
        let _ = stream.sync();
    }
});
