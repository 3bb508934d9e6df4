//! BackendTrafficPolicy in Envoy: Envoy's fault filter (per route: a chain gets the filter,
//! empty, only when one of its routes injects faults), and a cluster's circuit-breaker
//! thresholds and outlier detection.

use super::*;
use crate::ir::{AbortStatusIr, CircuitBreakerIr, FaultIr, OutlierDetectionIr};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, OutlierDetection, circuit_breakers,
};
use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
use envoy_types::pb::envoy::config::route::v3::header_matcher;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, Percent, fractional_percent};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

/// Envoy's fault-injection filter.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// The fault filter as a chain has it: empty (no fault) unless a route's config says otherwise.
pub(super) fn fault_filter() -> HttpFilter {
    HttpFilter {
        name: FAULT_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            HttpFault::default(),
        ))),
        ..Default::default()
    }
}

fn per_million(n: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: n,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

/// A route's faults.
pub(super) fn http_fault(f: &FaultIr) -> HttpFault {
    HttpFault {
        abort: f.abort.as_ref().map(|a| FaultAbort {
            percentage: Some(per_million(a.per_million)),
            error_type: Some(match a.status {
                AbortStatusIr::Http(code) => fault_abort::ErrorType::HttpStatus(code),
                AbortStatusIr::Grpc(code) => fault_abort::ErrorType::GrpcStatus(code),
            }),
            ..Default::default()
        }),
        delay: f.delay.as_ref().map(|d| FaultDelay {
            percentage: Some(per_million(d.per_million)),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(
                d.delay,
            ))),
        }),
        headers: f
            .headers
            .iter()
            .map(|h| HeaderMatcher {
                name: h.name.clone(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact(h.value.clone())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn limit(n: Option<u32>) -> Option<UInt32Value> {
    n.map(|value| UInt32Value { value })
}

/// A cluster's circuit breakers (default priority; `track_remaining` so the remaining
/// capacity shows in the stats).
pub(super) fn circuit_breakers(c: &CircuitBreakerIr) -> CircuitBreakers {
    CircuitBreakers {
        thresholds: vec![circuit_breakers::Thresholds {
            max_connections: limit(c.max_connections),
            max_pending_requests: limit(c.max_pending_requests),
            max_requests: limit(c.max_requests),
            max_retries: limit(c.max_retries),
            retry_budget: c.retry_budget.as_ref().map(|b| {
                circuit_breakers::thresholds::RetryBudget {
                    budget_percent: Some(Percent {
                        value: f64::from(b.hundredths_percent) / 100.0,
                    }),
                    min_retry_concurrency: Some(UInt32Value {
                        value: b.min_retry_concurrency,
                    }),
                    ..Default::default()
                }
            }),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A cluster's outlier detection: exactly the detectors the policy turns on (Envoy's
/// success-rate detector, on by default, is turned off).
pub(super) fn outlier_detection(o: &OutlierDetectionIr) -> OutlierDetection {
    let enforcing = |on: bool| {
        Some(UInt32Value {
            value: if on { 100 } else { 0 },
        })
    };
    OutlierDetection {
        consecutive_5xx: limit(Some(o.consecutive_5xx.max(1))),
        enforcing_consecutive_5xx: enforcing(o.consecutive_5xx > 0),
        consecutive_gateway_failure: limit(o.consecutive_gateway_errors.map(|n| n.max(1))),
        enforcing_consecutive_gateway_failure: enforcing(
            o.consecutive_gateway_errors.is_some_and(|n| n > 0),
        ),
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        consecutive_local_origin_failure: limit(Some(o.consecutive_local_origin_failures.max(1))),
        enforcing_consecutive_local_origin_failure: enforcing(
            o.consecutive_local_origin_failures > 0,
        ),
        enforcing_success_rate: enforcing(false),
        enforcing_local_origin_success_rate: enforcing(false),
        interval: Some(duration(o.interval)),
        base_ejection_time: Some(duration(o.base_ejection_time)),
        max_ejection_percent: limit(Some(o.max_ejection_percent)),
        ..Default::default()
    }
}
