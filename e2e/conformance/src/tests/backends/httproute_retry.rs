//! Encodes upstream's `HTTPRouteRetry` (v1.6.1): a route with retry policies (codes 500,
//! 3 attempts; codes 500/502/503/504, 2 attempts) is Accepted with ResolvedRefs. The
//! backend `infra-backend-v3` fails a request ID's first `succeedAfter` attempts with
//! `responseCode`; a request succeeds when the failures fit within the attempts and the code
//! is retried, and otherwise surfaces the backend's failure code. Each probe uses a new ID.

use crate::dsl::{get, routed_to};
use crate::http::{
    ExpectedResponse, Response, await_convergence, compare, encode_query, new_uuid, wire_request,
};
use crate::tests::common::same_namespace_route_ready;
use crate::{ConformanceTest, INFRA_NS, Suite};
use anyhow::Context;

/// The test.
pub const TEST: ConformanceTest = ConformanceTest {
    short_name: "HTTPRouteRetry",
    description: "An HTTPRoute that has a Retry policy configured should retry failed requests according to the specified codes and attempt limits, returning a successful response when the backend recovers within the retry budget and surfacing the original error when it does not.",
    features: &["Gateway", "HTTPRoute", "HTTPRouteRetry"],
    manifests: &["tests/httproute-retry.yaml"],
    provisional: false,
    run,
};

/// One case: name, path, the backend's failure code, its failures before success, and the
/// status the client must get.
type Case = (&'static str, &'static str, &'static str, &'static str, u16);

const CASES: &[Case] = &[
    (
        "succeeds after 2 retries when retry is configured for status code 500 and max attempts is 3",
        "/retry/code-500-attempts-3",
        "500",
        "2",
        200,
    ),
    (
        "fails when required retries on 500 exceed max attempts",
        "/retry/code-500-attempts-3",
        "500",
        "4",
        500,
    ),
    (
        "does not retry on 503 when retry is only configured for status code 500",
        "/retry/code-500-attempts-3",
        "503",
        "2",
        503,
    ),
    (
        "succeeds after 1 retry on 500 when retry is configured for all status code and max attempts is 2",
        "/retry/code-all-attempts-2",
        "500",
        "1",
        200,
    ),
    (
        "fails when required retries on 500 exceed max attempts",
        "/retry/code-all-attempts-2",
        "500",
        "3",
        500,
    ),
    (
        "succeeds after 1 retry on 502 when retry is configured for all status code and max attempts is 2",
        "/retry/code-all-attempts-2",
        "502",
        "1",
        200,
    ),
    (
        "fails when required retries on 502 exceed max attempts",
        "/retry/code-all-attempts-2",
        "502",
        "3",
        502,
    ),
    (
        "succeeds after 1 retry on 503 when retry is configured for all status code and max attempts is 2",
        "/retry/code-all-attempts-2",
        "503",
        "1",
        200,
    ),
    (
        "fails when required retries on 503 exceed max attempts",
        "/retry/code-all-attempts-2",
        "503",
        "3",
        503,
    ),
    (
        "succeeds after 1 retry on 504 when retry is configured for all status code and max attempts is 2",
        "/retry/code-all-attempts-2",
        "504",
        "1",
        200,
    ),
    (
        "fails when required retries on 504 exceed max attempts",
        "/retry/code-all-attempts-2",
        "504",
        "3",
        504,
    ),
];

/// Upstream's `assertConsistentRetryBehaviour`: probes with a new `uuid` each time must meet
/// the expectation three times in a row within the consistency deadline.
fn assert_consistent_retry_behaviour(
    s: &mut Suite,
    gateway: &str,
    path: &str,
    response_code: &str,
    succeed_after: &str,
    want: u16,
) -> anyhow::Result<()> {
    let timeouts = s.timeouts;
    await_convergence(
        timeouts.required_successes,
        timeouts.max_time_to_consistency,
        |_| {
            let uuid = new_uuid();
            let query = encode_query(&[
                ("responseCode", response_code),
                ("succeedAfter", succeed_after),
                ("uuid", &uuid),
            ]);
            // A timeout status counts as any other (`statuses` accepts 408 and 504 alike).
            let expected = ExpectedResponse {
                response: Response {
                    status_codes: vec![want],
                    ..Default::default()
                },
                ..routed_to(
                    get(&format!("{path}?{query}")),
                    "infra-backend-v3",
                    INFRA_NS,
                )
            };
            let captured = s.send(gateway, &wire_request(&expected), None)?;
            compare("http", &captured, &expected)
        },
    )
}

fn run(s: &mut Suite) -> anyhow::Result<()> {
    let addr = same_namespace_route_ready(s, "retries")?;
    for (i, (name, path, response_code, succeed_after, want)) in CASES.iter().enumerate() {
        let case = format!("{i} request to '{path}' {name}");
        assert_consistent_retry_behaviour(s, &addr, path, response_code, succeed_after, *want)
            .with_context(|| case.clone())?;
        s.logf(format!("passed: {case}"));
    }
    Ok(())
}
