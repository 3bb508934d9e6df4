//! A Gateway's `Programmed` condition from what its proxies did with its configuration.
//!
//! The translator says whether a Gateway *can* be programmed; only the proxies can say whether
//! it *is*. A Gateway is Programmed once a connected proxy holds its current configuration;
//! until then it is `Pending`, and when the proxies reject it (NACK), `Invalid` with their
//! error.

use trellis_model::gateway::GatewayStatus;
use trellis_translate::conditions::{ConditionType, Reason, condition};
use trellis_xds::KeyState;

/// Rewrites a Gateway's `Programmed=True` (from translation) with the proxies' sync state. A
/// Gateway the translator found unprogrammable keeps its condition.
pub fn apply_proxy_sync(gw: &mut GatewayStatus, sync: &KeyState) {
    let Some(programmed) = gw
        .conditions
        .iter_mut()
        .find(|c| c.type_ == ConditionType::Programmed && c.status == "True")
    else {
        return;
    };
    let generation = programmed.observed_generation;
    let (status, reason, message) = if sync.synced > 0 {
        let mut message = format!(
            "Applied by {} of {} connected proxies",
            sync.synced, sync.connected
        );
        if !sync.nacks.is_empty() {
            message.push_str(&format!(
                "; {} rejected it: {}",
                sync.nacks.len(),
                sync.nacks.join("; ")
            ));
        }
        (true, Reason::Programmed, message)
    } else if !sync.nacks.is_empty() {
        (
            false,
            Reason::Invalid,
            format!(
                "The proxies rejected the configuration: {}",
                sync.nacks.join("; ")
            ),
        )
    } else if sync.connected == 0 {
        (
            false,
            Reason::Pending,
            "No proxy serves this Gateway yet".to_string(),
        )
    } else {
        (
            false,
            Reason::Pending,
            format!(
                "Waiting for {} connected proxies to apply the configuration",
                sync.connected
            ),
        )
    };
    *programmed = condition(
        ConditionType::Programmed,
        status,
        reason,
        message,
        generation,
    );
}

/// The sync state of a Gateway's proxies across replicas: this replica's and what the other
/// replicas reported (their connected and synced proxies added, their NACK lines merged and
/// summarized like the registry's).
pub fn with_peers(mut state: KeyState, peers: &KeyState) -> KeyState {
    state.connected += peers.connected;
    state.synced += peers.synced;
    let mine = std::mem::take(&mut state.nacks);
    state.nacks =
        trellis_xds::registry::summarize_nacks(mine.into_iter().chain(peers.nacks.iter().cloned()));
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(programmable: bool) -> GatewayStatus {
        GatewayStatus {
            conditions: vec![condition(
                ConditionType::Programmed,
                programmable,
                if programmable {
                    Reason::Programmed
                } else {
                    Reason::Invalid
                },
                "from translation",
                Some(7),
            )],
            ..Default::default()
        }
    }

    fn sync(connected: usize, synced: usize, nacks: &[&str]) -> KeyState {
        KeyState {
            connected,
            synced,
            nacks: nacks.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn after(sync: KeyState) -> (String, String, String) {
        let mut gw = translated(true);
        apply_proxy_sync(&mut gw, &sync);
        let c = &gw.conditions[0];
        assert_eq!(c.observed_generation, Some(7));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn programmed_needs_a_proxy_that_applied_the_configuration() {
        assert_eq!(
            after(sync(0, 0, &[])),
            (
                "False".into(),
                "Pending".into(),
                "No proxy serves this Gateway yet".into()
            )
        );
        assert_eq!(
            after(sync(2, 0, &[])).1,
            "Pending",
            "connected but not yet applied"
        );
        assert_eq!(
            after(sync(2, 1, &[])),
            (
                "True".into(),
                "Programmed".into(),
                "Applied by 1 of 2 connected proxies".into()
            )
        );
    }

    #[test]
    fn rejections_are_reported_with_the_proxies_error() {
        let (status, reason, message) = after(sync(1, 0, &["RDS: invalid regex (1 proxy)"]));
        assert_eq!((status.as_str(), reason.as_str()), ("False", "Invalid"));
        assert!(message.contains("invalid regex"), "{message}");
        let (status, _, message) = after(sync(3, 2, &["RDS: invalid regex (1 proxy)"]));
        assert_eq!(status, "True", "another proxy applied it");
        assert!(message.contains("1 rejected it"), "{message}");
    }

    #[test]
    fn a_gateway_is_programmed_when_a_proxy_of_any_replica_applied_it() {
        let here = sync(1, 0, &["RDS: a (1 proxy)", "CDS: b (1 proxy)"]);
        let peers = sync(2, 1, &["RDS: c (1 proxy)", "LDS: d (1 proxy)"]);
        let merged = with_peers(here, &peers);
        assert_eq!((merged.connected, merged.synced), (3, 1));
        // Still a bounded summary: three lines and a count of the rest.
        assert_eq!(
            merged.nacks,
            [
                "RDS: a (1 proxy)",
                "CDS: b (1 proxy)",
                "RDS: c (1 proxy)",
                "and 1 more different rejections"
            ]
        );
        assert_eq!(after(merged).0, "True");
    }

    #[test]
    fn a_gateway_the_translator_could_not_program_keeps_its_condition() {
        let mut gw = translated(false);
        apply_proxy_sync(&mut gw, &sync(2, 2, &[]));
        assert_eq!(gw.conditions[0].reason, "Invalid");
        assert_eq!(gw.conditions[0].message, "from translation");
    }
}
