//! Chaos on purpose in the quickstart: for each BackendTrafficPolicy that aborts requests
//! carrying given headers on a route with a sample request, that request with the headers, and
//! a check that about the policy's share of them is aborted.

use crate::Sample;
use trellis_model::InputSet;
use trellis_model::resilience::BackendTrafficPolicySpec;

/// A sample request the policy aborts part of.
pub struct ChaosSample {
    /// `ns/name` of the BackendTrafficPolicy.
    pub policy: String,
    /// The status aborted requests get.
    pub status: u16,
    /// The share aborted, in percent.
    pub percent: f64,
    /// The request, tagged with the policy's headers.
    pub sample: Sample,
}

/// Tagged requests sent by [`ChaosSample::try_it`].
const TRIES: u32 = 40;

impl ChaosSample {
    /// Sends the request [`TRIES`] times: (aborted, sent).
    pub fn try_it(&self) -> anyhow::Result<(u32, u32)> {
        let headers: Vec<(&str, &str)> = self
            .sample
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut aborted = 0;
        for _ in 0..TRIES {
            let reply = trellis_harness::request(
                self.sample.gateway,
                &self.sample.method,
                &self.sample.host,
                &self.sample.path,
                &headers,
            )?;
            aborted += u32::from(reply.status == self.status);
        }
        Ok((aborted, TRIES))
    }

    /// Whether `aborted` of `sent` fits the share (some and not all, for a share strictly
    /// between 0 and 100 %: all or none of 40 at 50 % has odds of about 2 in a trillion).
    pub fn plausible(&self, aborted: u32, sent: u32) -> bool {
        match self.percent {
            p if p <= 0.0 => aborted == 0,
            p if p >= 100.0 => aborted == sent,
            _ => aborted > 0 && aborted < sent,
        }
    }
}

/// A chaos sample for each header-scoped abort on a route that has a plain sample request.
pub fn samples(input: &InputSet, samples: &[Sample]) -> Vec<ChaosSample> {
    let mut out = Vec::new();
    for (key, policy) in &input.backend_traffic_policies {
        let Ok(spec) = policy.parse_spec() else {
            continue;
        };
        let spec: BackendTrafficPolicySpec = spec;
        let Some(fault) = &spec.fault_injection else {
            continue;
        };
        let Some(abort) = &fault.abort else { continue };
        let Some(status) = abort.http_status else {
            continue;
        };
        if fault.headers.is_empty() {
            continue;
        }
        for target in spec.target_refs.iter().filter(|t| t.kind == "HTTPRoute") {
            let plain = samples.iter().find(|s| {
                s.route.namespace == key.namespace
                    && s.route.name == target.name
                    && s.headers.is_empty()
            });
            let Some(plain) = plain else { continue };
            let mut sample = plain.clone();
            sample.headers.extend(
                fault
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone())),
            );
            out.push(ChaosSample {
                policy: key.to_string(),
                status: u16::try_from(status).unwrap_or(503),
                percent: abort.percentage.unwrap_or(100.0),
                sample,
            });
        }
    }
    out
}
