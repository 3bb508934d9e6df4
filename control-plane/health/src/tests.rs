//! The score as a pure function (table-driven), and services replayed over time.

use super::*;

fn totals(requests: u64, failures: u64, p50: Option<f64>, p99: Option<f64>) -> Totals {
    Totals {
        requests,
        failures,
        p50_ms: p50,
        p99_ms: p99,
        within_objective: None,
        retries: 0,
    }
}

fn learned(p50: f64, p99: f64) -> Baseline {
    Baseline {
        p50_ms: p50,
        p99_ms: p99,
        learned: LEARNING,
    }
}

const FULL: Capacity = Capacity {
    desired: 3,
    ready: 3,
    ejected: 0,
};

#[test]
fn the_score_is_the_worst_term_and_the_reason_names_it() {
    let objective = |p99: Option<f64>| Objectives {
        availability: 0.999,
        p99_ms: p99,
    };
    let none = Baseline::default();
    // (case, totals, capacity, objectives, baseline, score, limiting term, reason contains)
    let cases = [
        (
            "no errors",
            totals(10_000, 0, Some(8.0), Some(30.0)),
            FULL,
            objective(None),
            none,
            100,
            Term::Availability,
            "within objectives",
        ),
        (
            "0.1% errors: the budget, burn 1",
            totals(10_000, 10, None, None),
            FULL,
            objective(None),
            none,
            100,
            Term::Availability,
            "within",
        ),
        (
            "0.38% errors: burn 3.8",
            totals(10_000, 38, None, None),
            FULL,
            objective(None),
            none,
            50,
            Term::Availability,
            "burns the 99.9% objective 3.8x",
        ),
        (
            "1.44% errors: page burn",
            totals(10_000, 144, None, None),
            FULL,
            objective(None),
            none,
            0,
            Term::Availability,
            "error rate 1.4%",
        ),
        (
            "20% errors",
            totals(1_000, 200, None, None),
            FULL,
            objective(None),
            none,
            0,
            Term::Availability,
            "error rate 20% burns the 99.9% objective 200.0x",
        ),
        (
            "a 99% objective takes 0.5% errors",
            totals(1_000, 5, None, None),
            FULL,
            Objectives {
                availability: 0.99,
                p99_ms: None,
            },
            none,
            100,
            Term::Availability,
            "within",
        ),
        (
            "p99 3x baseline",
            totals(1_000, 0, Some(12.0), Some(120.0)),
            FULL,
            objective(None),
            learned(12.0, 40.0),
            21,
            Term::Latency,
            "p99 3.0x baseline (120 ms)",
        ),
        (
            "p50 2x baseline, p99 fine",
            totals(1_000, 0, Some(40.0), Some(50.0)),
            FULL,
            objective(None),
            learned(20.0, 50.0),
            50,
            Term::Latency,
            "p50 2.0x baseline",
        ),
        (
            "baseline not learned yet: no latency term",
            totals(1_000, 0, Some(40.0), Some(500.0)),
            FULL,
            objective(None),
            Baseline {
                learned: Duration::from_secs(60),
                ..learned(10.0, 20.0)
            },
            100,
            Term::Availability,
            "within",
        ),
        (
            "p99 at the objective",
            totals(1_000, 0, None, Some(100.0)),
            FULL,
            objective(Some(100.0)),
            none,
            100,
            Term::Availability,
            "within",
        ),
        (
            "p99 4x the objective",
            totals(1_000, 0, None, Some(400.0)),
            FULL,
            objective(Some(100.0)),
            none,
            0,
            Term::Latency,
            "p99 4.0x objective (400 ms)",
        ),
        (
            "under 5 ms: within the histogram's resolution",
            totals(1_000, 0, Some(1.0), Some(4.0)),
            FULL,
            objective(Some(1.0)),
            none,
            100,
            Term::Availability,
            "within",
        ),
        (
            "no endpoint ready",
            totals(0, 0, None, None),
            Capacity {
                desired: 2,
                ready: 0,
                ejected: 0,
            },
            objective(None),
            none,
            0,
            Term::Capacity,
            "0 of 2 endpoints ready",
        ),
        (
            "2 of 3 ready",
            totals(1_000, 0, None, None),
            Capacity {
                desired: 3,
                ready: 2,
                ejected: 0,
            },
            objective(None),
            none,
            67,
            Term::Capacity,
            "2 of 3 endpoints ready",
        ),
        (
            "1 of 4 ejected",
            totals(1_000, 0, None, None),
            Capacity {
                desired: 4,
                ready: 4,
                ejected: 1,
            },
            objective(None),
            none,
            75,
            Term::Capacity,
            "1 of 4 ready endpoints ejected",
        ),
        (
            "errors and latency: the worse wins",
            totals(10_000, 38, None, Some(400.0)),
            FULL,
            objective(Some(100.0)),
            none,
            0,
            Term::Latency,
            "p99 4.0x",
        ),
    ];
    for (case, totals, capacity, objectives, baseline, score, limiting, reason) in cases {
        let terms = evaluate(&totals, &capacity, &objectives, &baseline);
        assert_eq!(terms.score, score, "{case}: {terms:?}");
        assert_eq!(terms.limiting, limiting, "{case}: {terms:?}");
        assert!(terms.reason.contains(reason), "{case}: {:?}", terms.reason);
    }
}

#[test]
fn quantiles_interpolate_within_their_bucket() {
    let mut b = Bucket::default();
    for _ in 0..98 {
        b.record(15.0, false); // (10, 20]
    }
    b.record(150.0, false); // (100, 200]
    b.record(150.0, true);
    assert_eq!(b.requests, 100);
    assert_eq!(b.failures, 1);
    let p50 = quantile(&b.latency, 0.5).unwrap();
    assert!((10.0..=20.0).contains(&p50), "{p50}");
    let p99 = quantile(&b.latency, 0.99).unwrap();
    assert!((100.0..=200.0).contains(&p99), "{p99}");
    assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
    let mut slow = Bucket::default();
    slow.record(60_000.0, false);
    assert_eq!(
        quantile(&slow.latency, 0.99),
        Some(10_000.0 + 0.99 * 10_000.0)
    );
}

/// 10 s of traffic at `rps` with `failure` of them failing and every request taking `ms`.
fn bucket(rps: u64, failure: f64, ms: f64) -> Bucket {
    let mut b = Bucket::default();
    let n = rps * 10;
    let failed = (n as f64 * failure).round() as u64;
    for i in 0..n {
        // A little spread: every tenth request is 1.5x slower.
        let latency = if i % 10 == 0 { ms * 1.5 } else { ms };
        b.record(latency, i < failed);
    }
    b
}

fn run(
    health: &mut Health,
    b: &Bucket,
    evaluations: usize,
    objectives: &Objectives,
) -> Vec<Evaluation> {
    (0..evaluations)
        .map(|_| health.observe(b.clone(), &FULL, objectives))
        .collect()
}

#[test]
fn a_backend_failing_20_percent_is_failing_within_two_evaluations_and_recovers_when_fixed() {
    let objectives = Objectives {
        availability: 0.999,
        p99_ms: Some(200.0),
    };
    let mut health = Health::default();
    let good = bucket(10, 0.0, 20.0);
    let settled = run(&mut health, &good, 30, &objectives);
    assert_eq!(settled.last().unwrap().state, State::Healthy);
    assert_eq!(settled.last().unwrap().score, Some(100));

    let bad = bucket(10, 0.2, 20.0);
    let first = health.observe(bad.clone(), &FULL, &objectives);
    let second = health.observe(bad.clone(), &FULL, &objectives);
    assert_eq!(
        first.state,
        State::Healthy,
        "one evaluation is not enough: {first:?}"
    );
    assert_eq!(second.state, State::Failing, "{second:?}");
    assert!(second.reason.starts_with("error rate"), "{}", second.reason);

    // Fixed: healthy again once the failures leave the 5-minute window.
    let mut recovered_after = None;
    for i in 1..=40 {
        let e = health.observe(good.clone(), &FULL, &objectives);
        if e.state == State::Healthy {
            recovered_after = Some(i);
            break;
        }
    }
    let after = recovered_after.expect("recovers");
    assert!(
        (25..=32).contains(&after),
        "recovered after {after} evaluations"
    );
}

#[test]
fn a_backend_four_times_slower_than_its_baseline_is_failing_with_the_latency_reason() {
    let objectives = Objectives::default();
    let mut health = Health::default();
    let normal = bucket(10, 0.0, 20.0);
    // The first 30 minutes: learning.
    let learning = run(&mut health, &normal, 10, &objectives);
    assert_eq!(learning.last().unwrap().state, State::Learning);
    assert!(
        learning
            .last()
            .unwrap()
            .reason
            .contains("learning the latency baseline")
    );
    run(&mut health, &normal, 180, &objectives);
    let before = health.observe(normal.clone(), &FULL, &objectives);
    assert_eq!(before.state, State::Healthy, "{before:?}");

    let slow = bucket(10, 0.0, 80.0);
    let evaluations = run(&mut health, &slow, 3, &objectives);
    let last = evaluations.last().unwrap();
    assert_eq!(last.state, State::Failing, "{evaluations:?}");
    assert_eq!(last.terms.limiting, Term::Latency);
    assert!(last.reason.contains("x baseline"), "{}", last.reason);
    println!("4x slower: {} ({:?})", last.reason, last.score);
}

#[test]
fn a_quiet_service_is_idle_and_keeps_its_last_score() {
    let objectives = Objectives {
        availability: 0.999,
        p99_ms: Some(100.0),
    };
    let mut health = Health::default();
    let mut quiet = Bucket::default();
    quiet.record(10.0, false);
    let e = health.observe(quiet.clone(), &FULL, &objectives);
    assert_eq!(e.state, State::Idle);
    assert_eq!(e.score, None);
    assert!(e.reason.contains("too few to judge"), "{}", e.reason);
    // Busy, then quiet for long enough that the window holds under 20 requests.
    run(&mut health, &bucket(10, 0.0, 10.0), 3, &objectives);
    let e = run(&mut health, &Bucket::default(), 30, &objectives)
        .pop()
        .unwrap();
    assert_eq!(e.state, State::Idle);
    assert_eq!(e.score, Some(100), "the last score stays (shown faded)");
    // No endpoint at all is not idle: it is failing.
    let e = health.observe(
        Bucket::default(),
        &Capacity {
            desired: 1,
            ready: 0,
            ejected: 0,
        },
        &objectives,
    );
    assert_eq!(e.state, State::Failing);
}

#[test]
fn scores_near_a_boundary_do_not_flap() {
    // From healthy, 86–89 stays healthy; 84 twice makes it degraded; back up needs 95.
    assert_eq!(band(86, Some(State::Healthy)), State::Healthy);
    assert_eq!(band(84, Some(State::Healthy)), State::Degraded);
    assert_eq!(band(92, Some(State::Degraded)), State::Degraded);
    assert_eq!(band(95, Some(State::Degraded)), State::Healthy);
    assert_eq!(band(66, Some(State::Degraded)), State::Degraded);
    assert_eq!(band(64, Some(State::Degraded)), State::Failing);
    assert_eq!(band(72, Some(State::Failing)), State::Failing);
    assert_eq!(band(75, Some(State::Failing)), State::Degraded);
    assert_eq!(band(100, Some(State::Failing)), State::Healthy);
    assert_eq!(band(89, None), State::Degraded);
}
