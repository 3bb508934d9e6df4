//! Service health scores: what "healthy" means for a service, as a number from 0 to 100 and a
//! state, computed from what its proxies counted.
//!
//! ```text
//!  10-s buckets (requests, upstream failures, latency histogram) ──► Window (last 5 minutes)
//!  Window + Capacity + Objectives + Baseline ──► evaluate() ──► Terms
//!     A availability  1 − clamp(ln(burn) / ln(14.4), 0, 1)     burn = error ratio / (1 − objective)
//!     L latency       1 − clamp(log2(p / reference) / 2, 0, 1)  reference: the p99 objective, else
//!                     the learned baseline (p50 and p99; ratios under 5 ms are skipped)
//!     C capacity      min(ready / desired, 1 − ejected / ready)
//!     score = round(100 · min(A, L, C)); the reason names the term that set it
//!  Health::observe() every 10 s: idle (< 20 requests in the window), learning (no latency
//!     objective and under 30 minutes of traffic behind the baseline), else a band: healthy ≥ 90,
//!     degraded, failing < 70; a band changes after 2 evaluations in a row that call for it, and
//!     a score must clear a boundary by 5 points to leave its band
//! ```
//!
//! The design and its sources (the SRE workbook's burn rates, Kiali's and Linkerd's health) are
//! in the project's observability notes; everything here is a pure function of its inputs.

use serde::Serialize;
use std::time::Duration;

/// Upper bounds (ms) of the latency histogram's buckets; the last bucket is unbounded. Every
/// proxy's bootstrap gives Envoy's `upstream_rq_time` the same bounds, so that no precision is
/// lost between them; each bound is at most 1.5x the one before (a quantile is off by less than
/// that ratio, typically far less).
pub const BUCKET_BOUNDS_MS: [f64; 40] = [
    1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0,
    60.0, 80.0, 100.0, 120.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 600.0, 800.0, 1000.0,
    1200.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0, 5000.0, 6000.0, 8000.0, 10000.0,
];
/// Histogram buckets: one per bound, and one past the last.
pub const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;
/// How long one bucket of the window covers.
pub const BUCKET: Duration = Duration::from_secs(10);
/// Buckets in the window (5 minutes).
pub const WINDOW_BUCKETS: usize = 30;
/// Requests in the window below which a service is idle (no score from noise).
pub const MIN_REQUESTS: u64 = 20;
/// The availability objective when none is set.
pub const DEFAULT_AVAILABILITY: f64 = 0.999;
/// The burn rate at which availability counts for nothing (the SRE workbook's page level).
pub const PAGE_BURN: f64 = 14.4;
/// Latencies under this are within the histogram's resolution: not compared.
pub const LATENCY_FLOOR_MS: f64 = 5.0;
/// Traffic behind a baseline before it is used.
pub const LEARNING: Duration = Duration::from_secs(30 * 60);
/// The baseline's half-life.
pub const BASELINE_HALF_LIFE: Duration = Duration::from_secs(24 * 3600);
/// Points a score must clear a band's boundary by to leave the band.
pub const HYSTERESIS_POINTS: u8 = 5;
/// Evaluations in a row calling for another band before it changes.
pub const CONFIRMATIONS: u32 = 2;

/// What one proxy-side counter window holds for a service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Requests completed.
    pub requests: u64,
    /// Of those, upstream failures (5xx, Envoy's own 503/504, resets).
    pub failures: u64,
    /// Latencies, per [`BUCKET_BOUNDS_MS`] bucket.
    #[serde(serialize_with = "as_slice")]
    pub latency: [u64; BUCKETS],
    /// Requests the policy filter timed within the Service's latency objective (exactly).
    pub within_objective: u64,
    /// Requests the policy filter timed over it.
    pub over_objective: u64,
    /// Retries the callers' proxies made (Envoy counts a request's response once, after its
    /// retries, so the attempts are `requests + retries`).
    pub retries: u64,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            requests: 0,
            failures: 0,
            latency: [0; BUCKETS],
            within_objective: 0,
            over_objective: 0,
            retries: 0,
        }
    }
}

fn as_slice<S: serde::Serializer>(latency: &[u64; BUCKETS], s: S) -> Result<S::Ok, S::Error> {
    latency.as_slice().serialize(s)
}

impl Bucket {
    /// Counts one request of `latency_ms`, failed or not.
    pub fn record(&mut self, latency_ms: f64, failed: bool) {
        self.requests += 1;
        self.failures += u64::from(failed);
        let i = BUCKET_BOUNDS_MS
            .iter()
            .position(|b| latency_ms <= *b)
            .unwrap_or(BUCKETS - 1);
        self.latency[i] += 1;
    }

    /// Adds `other` in (deltas from several proxies).
    pub fn add(&mut self, other: &Bucket) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.within_objective += other.within_objective;
        self.over_objective += other.over_objective;
        self.retries += other.retries;
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a += b;
        }
    }
}

/// The last [`WINDOW_BUCKETS`] buckets of a service (a ring), or as many as
/// [`Window::with_buckets`] says.
#[derive(Clone, Debug)]
pub struct Window {
    buckets: std::collections::VecDeque<Bucket>,
    capacity: usize,
}

impl Default for Window {
    fn default() -> Self {
        Self::with_buckets(WINDOW_BUCKETS)
    }
}

/// A window's totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests completed.
    pub requests: u64,
    /// Upstream failures.
    pub failures: u64,
    /// Median latency (ms), when there were requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency (ms), when there were requests.
    pub p99_ms: Option<f64>,
    /// The share of requests the policy filter timed within the latency objective, when it
    /// timed any (exact, per request, unlike the histogram's quantiles).
    pub within_objective: Option<f64>,
    /// Retries among the requests.
    pub retries: u64,
}

impl Window {
    /// A window of `buckets` buckets of [`BUCKET`] (at least one).
    pub fn with_buckets(buckets: usize) -> Self {
        Window {
            buckets: std::collections::VecDeque::new(),
            capacity: buckets.max(1),
        }
    }

    /// Adds the newest bucket, dropping the oldest once the window is full.
    pub fn push(&mut self, bucket: Bucket) {
        while self.buckets.len() >= self.capacity {
            self.buckets.pop_front();
        }
        self.buckets.push_back(bucket);
    }

    /// How long the window is when full.
    pub fn length(&self) -> Duration {
        BUCKET * u32::try_from(self.capacity).unwrap_or(u32::MAX)
    }

    /// How much time the window covers so far (up to its length, 5 minutes by default).
    pub fn span(&self) -> Duration {
        BUCKET * self.buckets.len() as u32
    }

    /// The totals over the window.
    pub fn totals(&self) -> Totals {
        let mut sum = Bucket::default();
        for b in &self.buckets {
            sum.add(b);
        }
        Totals {
            requests: sum.requests,
            failures: sum.failures,
            retries: sum.retries,
            p50_ms: quantile(&sum.latency, 0.5),
            p99_ms: quantile(&sum.latency, 0.99),
            within_objective: {
                let timed = sum.within_objective + sum.over_objective;
                (timed > 0).then(|| sum.within_objective as f64 / timed as f64)
            },
        }
    }
}

/// The `q` quantile (0–1) of a histogram over [`BUCKET_BOUNDS_MS`], interpolated within its
/// bucket; `None` when empty. The unbounded bucket reports twice the last bound.
pub fn quantile(histogram: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (i, count) in histogram.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { BUCKET_BOUNDS_MS[i - 1] };
            let upper = BUCKET_BOUNDS_MS
                .get(i)
                .copied()
                .unwrap_or(BUCKET_BOUNDS_MS[BUCKET_BOUNDS_MS.len() - 1] * 2.0);
            let within = ((rank - seen as f64) / *count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        seen += count;
    }
    None
}

/// A service's endpoints, for the capacity term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Capacity {
    /// Endpoints it should have (ready or not).
    pub desired: u32,
    /// Of those, ready.
    pub ready: u32,
    /// Of the ready ones, ejected by outlier detection.
    pub ejected: u32,
}

/// What the service promises (HealthPolicy).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Objectives {
    /// The share of requests that must succeed (0.999 = 99.9 %).
    pub availability: f64,
    /// The p99 latency objective (ms), if any; else the learned baseline is the reference.
    pub p99_ms: Option<f64>,
}

impl Default for Objectives {
    fn default() -> Self {
        Objectives {
            availability: DEFAULT_AVAILABILITY,
            p99_ms: None,
        }
    }
}

/// Typical latency learned from healthy traffic (an EWMA of the window's p50 and p99).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Baseline {
    /// Median (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Traffic behind it so far.
    pub learned: Duration,
}

impl Baseline {
    /// Whether it has seen enough traffic to judge by.
    pub fn ready(&self) -> bool {
        self.learned >= LEARNING
    }

    /// Takes in `interval` of healthy traffic with these percentiles.
    pub fn learn(&mut self, p50_ms: f64, p99_ms: f64, interval: Duration) {
        if self.learned.is_zero() {
            self.p50_ms = p50_ms;
            self.p99_ms = p99_ms;
        } else {
            let alpha =
                1.0 - 0.5f64.powf(interval.as_secs_f64() / BASELINE_HALF_LIFE.as_secs_f64());
            // Early on, learn faster: the mean of what was seen so far.
            let early = interval.as_secs_f64() / (self.learned + interval).as_secs_f64();
            let alpha = alpha.max(early);
            self.p50_ms += alpha * (p50_ms - self.p50_ms);
            self.p99_ms += alpha * (p99_ms - self.p99_ms);
        }
        self.learned += interval;
    }
}

/// Which term set the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Term {
    /// Errors against the availability objective.
    Availability,
    /// Latency against its reference.
    Latency,
    /// Ready and ejected endpoints.
    Capacity,
}

/// One evaluation's terms, before states and hysteresis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Terms {
    /// Availability, 0–1.
    pub availability: f64,
    /// Latency, 0–1 (1 while nothing to compare with).
    pub latency: f64,
    /// Capacity, 0–1.
    pub capacity: f64,
    /// Error ratio over the objective's budget.
    pub burn_rate: f64,
    /// `round(100 · min(terms))`.
    pub score: u8,
    /// The lowest term.
    pub limiting: Term,
    /// Why, naming the limiting term with its numbers.
    pub reason: String,
}

fn clamp01(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// An objective as a percentage: `99.9%`, `99%`, `99.95%`.
fn objective_percent(x: f64) -> String {
    let text = format!("{:.3}", x * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// The terms for a window's totals; `baseline` is used only once ready and without a p99
/// objective.
pub fn evaluate(
    totals: &Totals,
    capacity: &Capacity,
    objectives: &Objectives,
    baseline: &Baseline,
) -> Terms {
    let budget = (1.0 - objectives.availability).max(1e-6);
    let ratio = if totals.requests == 0 {
        0.0
    } else {
        totals.failures as f64 / totals.requests as f64
    };
    let burn_rate = ratio / budget;
    let availability = if burn_rate <= 1.0 {
        1.0
    } else {
        1.0 - clamp01(burn_rate.ln() / PAGE_BURN.ln())
    };

    // Latency: against the objective, else the learned baseline; the worse of p50 and p99.
    let mut latency = 1.0;
    let mut latency_reason = String::new();
    let mut compare = |measured: Option<f64>, reference: f64, what: &str, against: &str| {
        let Some(measured) = measured else { return };
        if measured < LATENCY_FLOOR_MS || reference <= 0.0 {
            return;
        }
        let ratio = measured / reference.max(LATENCY_FLOOR_MS);
        let term = 1.0 - clamp01(ratio.log2() / 2.0);
        if term < latency {
            latency = term;
            latency_reason = format!("{what} {ratio:.1}x {against} ({measured:.0} ms)");
        }
    };
    match objectives.p99_ms {
        Some(objective) => compare(totals.p99_ms, objective, "p99", "objective"),
        None if baseline.ready() => {
            compare(totals.p99_ms, baseline.p99_ms, "p99", "baseline");
            compare(totals.p50_ms, baseline.p50_ms, "p50", "baseline");
        }
        None => {}
    }

    let capacity_term = if capacity.desired == 0 {
        1.0
    } else if capacity.ready == 0 {
        0.0
    } else {
        let ready = f64::from(capacity.ready) / f64::from(capacity.desired);
        let kept =
            1.0 - f64::from(capacity.ejected.min(capacity.ready)) / f64::from(capacity.ready);
        clamp01(ready.min(kept))
    };

    let terms = [
        (availability, Term::Availability),
        (latency, Term::Latency),
        (capacity_term, Term::Capacity),
    ];
    let (lowest, limiting) =
        terms
            .into_iter()
            .fold((f64::INFINITY, Term::Availability), |best, t| {
                if t.0 < best.0 { t } else { best }
            });
    let score = (100.0 * clamp01(lowest)).round() as u8;
    let reason = if lowest >= 1.0 {
        "within objectives".to_string()
    } else {
        match limiting {
            Term::Availability => format!(
                "error rate {} burns the {} objective {burn_rate:.1}x",
                percent(ratio),
                objective_percent(objectives.availability)
            ),
            Term::Latency => latency_reason,
            Term::Capacity if capacity.ready < capacity.desired => {
                format!("{} of {} endpoints ready", capacity.ready, capacity.desired)
            }
            Term::Capacity => format!(
                "{} of {} ready endpoints ejected",
                capacity.ejected, capacity.ready
            ),
        }
    };
    Terms {
        availability,
        latency,
        capacity: capacity_term,
        burn_rate,
        score,
        limiting,
        reason,
    }
}

/// A service's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Score ≥ 90.
    Healthy,
    /// 70–89.
    Degraded,
    /// < 70.
    Failing,
    /// Too little traffic to judge.
    Idle,
    /// Healthy on errors and capacity; the latency baseline is still being learned.
    Learning,
}

/// The band a score falls in from `current`: leaving a band takes clearing its boundary by
/// [`HYSTERESIS_POINTS`].
fn band(score: u8, current: Option<State>) -> State {
    let h = HYSTERESIS_POINTS;
    let plain = |s: u8| match s {
        90.. => State::Healthy,
        70..=89 => State::Degraded,
        _ => State::Failing,
    };
    match current {
        Some(State::Healthy) if score + h >= 90 => State::Healthy,
        Some(State::Degraded) if score + h >= 70 && score < 90 + h => State::Degraded,
        Some(State::Failing) if score < 70 + h => State::Failing,
        _ => plain(score),
    }
}

/// One service's health over time: the baseline it learns and the state it shows.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// The window of buckets.
    pub window: Window,
    /// The latency baseline.
    pub baseline: Baseline,
    state: Option<State>,
    score: Option<u8>,
    pending: Option<(State, u32)>,
}

/// What one evaluation shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// The state shown.
    pub state: State,
    /// The score (the last one while idle; `None` before any).
    pub score: Option<u8>,
    /// Why.
    pub reason: String,
    /// The window's totals.
    pub totals: Totals,
    /// The terms.
    pub terms: Terms,
}

/// A window's length in words: `5 minutes`, `1 minute`, `90 s`.
fn describe(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        60 => "minute".to_string(),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} s"),
    }
}

impl Health {
    /// Takes the newest bucket (every [`BUCKET`]) and evaluates.
    pub fn observe(
        &mut self,
        bucket: Bucket,
        capacity: &Capacity,
        objectives: &Objectives,
    ) -> Evaluation {
        self.window.push(bucket);
        let totals = self.window.totals();
        let terms = evaluate(&totals, capacity, objectives, &self.baseline);
        let idle = totals.requests < MIN_REQUESTS && terms.capacity > 0.0;
        // Learn only from traffic that is healthy on errors.
        if let (false, true, Some(p50), Some(p99)) = (
            idle,
            terms.availability >= 0.9,
            totals.p50_ms,
            totals.p99_ms,
        ) {
            self.baseline.learn(p50, p99, BUCKET);
        }
        if idle {
            self.state = Some(State::Idle);
            self.pending = None;
            return Evaluation {
                state: State::Idle,
                score: self.score,
                reason: format!(
                    "{} requests in the last {}: too few to judge",
                    totals.requests,
                    describe(self.window.length())
                ),
                totals,
                terms,
            };
        }
        let learning = objectives.p99_ms.is_none() && !self.baseline.ready();
        let wanted = match band(terms.score, self.state) {
            State::Healthy if learning => State::Learning,
            s => s,
        };
        let shown = match self.state {
            // From nothing, idle or learning, the first judgement shows at once.
            None | Some(State::Idle) | Some(State::Learning) => wanted,
            Some(current) if current == wanted => current,
            Some(current) => {
                let count = match self.pending {
                    Some((s, n)) if s == wanted => n + 1,
                    _ => 1,
                };
                if count >= CONFIRMATIONS {
                    wanted
                } else {
                    self.pending = Some((wanted, count));
                    current
                }
            }
        };
        if shown == wanted {
            self.pending = None;
        }
        self.state = Some(shown);
        self.score = Some(terms.score);
        let reason = if shown == State::Learning {
            format!(
                "learning the latency baseline ({} of {} min of traffic)",
                self.baseline.learned.as_secs() / 60,
                LEARNING.as_secs() / 60
            )
        } else {
            terms.reason.clone()
        };
        Evaluation {
            state: shown,
            score: self.score,
            reason,
            totals,
            terms,
        }
    }
}

#[cfg(test)]
mod tests;
