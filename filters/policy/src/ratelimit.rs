//! Local rate limiting: token buckets in proxy shared data, updated with compare-and-swap.
//!
//! Each [`RateLimit`] keeps one bucket per key value (client IP, principal or header value).
//! A bucket is a 24-byte shared data entry `key fingerprint (u64 LE) | tokens (micro-tokens,
//! u64 LE) | last refill (ns, u64 LE)` in one of the limit's slots,
//! `trellis.policy.rl.v2/<limit>/<slot>`. Shared data is proxy-wide, so every Envoy worker
//! (each runs its own Wasm VM) reads and writes the same bucket:
//!
//! ```text
//! worker A ──get (value, cas)──► refill by elapsed time ──take 1──► set(value, cas) ──► ok
//! worker B ──get (value, cas)──► ...                                set(value, cas) ──► CAS
//!                                                                      mismatch: read again
//! ```
//!
//! A write that loses the race is retried from a fresh read, up to [`MAX_CAS_ATTEMPTS`] times;
//! if every attempt loses (or shared data fails), the request is let through and counted as a
//! rate-limit error rather than refused for the filter's own trouble.
//!
//! A new bucket is written with [`CREATE_CAS`], so two workers creating the same bucket at once
//! do not both start from a full one: the second write fails and is retried as above.
//!
//! **Leases for high rates.** Where a limit's rate is high (200 requests per second or more),
//! a worker may take a *lease*: up to 1% of a second's worth of tokens from the shared bucket at
//! once (at most a quarter of the burst, at most [`MAX_LEASE`]), spent locally for the next
//! [`LEASE_NANOS`]: two shared-data calls per lease instead of per request. Every admitted
//! request still spent a token of the shared bucket, so the limit is never exceeded. A lease is
//! taken only while the bucket stays at least half full after it, that is while the key is well
//! under its limit; near the limit every request takes its own token, as without leases, so
//! the rate admitted there is as exact. Tokens of a lease not spent in time go back to the
//! bucket (never above its capacity) with the worker's next write to it.
//!
//! **Slots, and keys that expire.** Proxy-wasm has no way to delete shared data, so a limit
//! has a fixed number of slots (`max_keys`, rounded up to a multiple of [`WAYS`]) that its
//! buckets live in, in sets of [`WAYS`]: a key's fingerprint picks its set, and its bucket is
//! in one of the set's slots. A new key takes a slot of its set that is empty or *idle*: one
//! whose bucket has refilled to its full burst, which is exactly the state a new key starts
//! in, so reusing the slot changes no client's allowance. Only when every slot of the set
//! holds a key still using its bucket does a new key share the overflow bucket
//! (`.../~overflow`), and only until one of them goes idle: a client rotating key values can
//! fill the sets for a moment, not for the life of the proxy.
//!
//! ```text
//!  key ──fingerprint──► set f % sets ──► slots s*4 .. s*4+3
//!          ours? take from it │ else empty or idle? take it over │ else ~overflow
//! ```

use crate::authz::RequestFacts;
use crate::config::{LimitKey, RateLimitConfig};
use crate::filter::{RouteScope, check_name};
use crate::{ConfigError, Host, LogLevel, SharedDataError};

/// Compare-and-swap attempts per request before giving up (and letting the request through).
pub const MAX_CAS_ATTEMPTS: usize = 16;

/// The version passed when creating an entry. Envoy checks a non-zero CAS only against an
/// existing entry and inserts a missing one, so this write succeeds while the key is absent and
/// fails with a CAS mismatch if another worker created it first (no entry has this version
/// unless Envoy's version counter, shared by all entries, happens to be at its last value).
/// Proxy-wasm has no "create if absent"; this is the closest to it.
pub const CREATE_CAS: u32 = u32::MAX;

/// Default for `max_keys`.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;

/// The largest `max_keys` accepted (24 MB of buckets).
pub const MAX_MAX_KEYS: u32 = 1_000_000;

/// Key values longer than this are replaced by a hash, so entries stay small.
const MAX_KEY_LEN: usize = 128;

/// Slots per set: a new key may take any of its set's [`WAYS`] slots.
pub const WAYS: u32 = 4;

/// The most tokens a worker leases at once.
pub const MAX_LEASE: u32 = 100;
/// How long leased tokens may be spent.
pub const LEASE_NANOS: u64 = 10_000_000;
/// Keys with a lease a VM keeps track of per limit; beyond, requests take single tokens.
const MAX_LEASED_KEYS: usize = 1024;

const MICRO: u128 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A compiled rate limit.
#[derive(Debug)]
pub struct RateLimit {
    /// The limit's name.
    pub name: String,
    /// The routes it applies to.
    pub scope: RouteScope,
    key: LimitKey,
    /// Tokens added per period.
    requests: u32,
    period_nanos: u64,
    /// Bucket capacity in tokens.
    burst: u32,
    /// Sets of [`WAYS`] slots.
    sets: u32,
    prefix: String,
    /// Tokens taken from the shared bucket at once (1: no lease).
    lease: u32,
    /// This VM's leased tokens, by bucket key.
    leases: std::sync::Mutex<std::collections::HashMap<String, Lease>>,
}

/// Tokens a worker took from a shared bucket and may spend until `until_nanos`.
#[derive(Debug, Clone, Copy)]
struct Lease {
    tokens: u32,
    until_nanos: u64,
}

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A token was taken; the request may go on.
    Allowed,
    /// The bucket is empty; a token will be there in `retry_after_secs` (rounded up, at least 1).
    Limited {
        /// Seconds until the next token.
        retry_after_secs: u64,
    },
    /// The bucket could not be updated (CAS kept failing or shared data errored); the request
    /// is let through.
    Error,
}

/// A bucket's state as stored in shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// The fingerprint of the key the bucket is for (never 0).
    fingerprint: u64,
    micro_tokens: u64,
    last_nanos: u64,
}

impl Bucket {
    fn decode(bytes: &[u8]) -> Option<Bucket> {
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        (bytes.len() == 24).then_some(())?;
        Some(Bucket {
            fingerprint: word(0)?,
            micro_tokens: word(8)?,
            last_nanos: word(16)?,
        })
    }

    fn encode(self) -> [u8; 24] {
        let mut bytes = [0u8; 24];
        bytes[..8].copy_from_slice(&self.fingerprint.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.micro_tokens.to_le_bytes());
        bytes[16..].copy_from_slice(&self.last_nanos.to_le_bytes());
        bytes
    }
}

/// Where a key's bucket is: its slot (or the overflow bucket), what is stored there and the
/// version to write against.
struct Located {
    slot: String,
    bucket: Bucket,
    cas: Option<u32>,
}

impl RateLimit {
    /// Compiles `config`; `field` is its path in the configuration (`rate_limits[0]`).
    pub fn compile(config: &RateLimitConfig, field: &str) -> Result<RateLimit, ConfigError> {
        check_name(&config.name, &format!("{field}.name"))?;
        let scope = RouteScope::compile(&config.scope, &format!("{field}.scope"))?;
        if let LimitKey::Header(name) = &config.key
            && name.is_empty()
        {
            return Err(ConfigError::invalid(
                format!("{field}.key.header"),
                "must name a header",
            ));
        }
        if config.requests == 0 {
            return Err(ConfigError::invalid(
                format!("{field}.requests"),
                "must be at least 1",
            ));
        }
        if config.burst == Some(0) {
            return Err(ConfigError::invalid(
                format!("{field}.burst"),
                "must be at least 1",
            ));
        }
        if config.max_keys == Some(0) {
            return Err(ConfigError::invalid(
                format!("{field}.max_keys"),
                "must be at least 1",
            ));
        }
        if config.max_keys.is_some_and(|k| k > MAX_MAX_KEYS) {
            return Err(ConfigError::invalid(
                format!("{field}.max_keys"),
                format!("must be at most {MAX_MAX_KEYS}"),
            ));
        }
        let key = match &config.key {
            LimitKey::Header(name) => LimitKey::Header(name.to_ascii_lowercase()),
            other => other.clone(),
        };
        Ok(RateLimit {
            name: config.name.clone(),
            scope,
            key,
            requests: config.requests,
            period_nanos: config.per.nanos(),
            burst: config.burst.unwrap_or(config.requests),
            sets: config
                .max_keys
                .unwrap_or(DEFAULT_MAX_KEYS)
                .div_ceil(WAYS)
                .max(1),
            prefix: format!("trellis.policy.rl.v2/{}/", config.name),
            lease: lease_size(
                config.requests,
                config.per.nanos(),
                config.burst.unwrap_or(config.requests),
            ),
            leases: Default::default(),
        })
    }

    /// Takes a token from the bucket of the request's key.
    pub fn take<H: Host + ?Sized>(&self, host: &H) -> Outcome {
        self.take_with(&mut RequestFacts::new(host))
    }

    /// Like [`RateLimit::take`], reading the key from facts the policies may have read already
    /// (the client IP is one property lookup per request, not one per use).
    pub(crate) fn take_with<H: Host + ?Sized>(&self, facts: &mut RequestFacts<'_, H>) -> Outcome {
        let key = format!("{}{}", self.prefix, self.key_value(facts));
        let host = facts.host();
        let now = host.now_nanos();
        if self.lease <= 1 {
            return self.settle(host, self.take_from(host, &key, now, 1, 0));
        }
        let Ok(mut leases) = self.leases.lock() else {
            return self.settle(host, self.take_from(host, &key, now, 1, 0));
        };
        // Spend a token of a live lease, or give back what is left of an expired one.
        let mut give_back = 0;
        if let Some(lease) = leases.get_mut(&key) {
            if now < lease.until_nanos && lease.tokens > 0 {
                lease.tokens -= 1;
                return Outcome::Allowed;
            }
            give_back = lease.tokens;
            lease.tokens = 0;
        }
        if leases.len() >= MAX_LEASED_KEYS && !leases.contains_key(&key) {
            leases.retain(|_, l| l.tokens > 0 && now < l.until_nanos);
        }
        let want = if leases.len() < MAX_LEASED_KEYS || leases.contains_key(&key) {
            self.lease
        } else {
            1
        };
        let result = self.take_from(host, &key, now, want, give_back);
        match result {
            Ok((_, taken)) if taken > 1 => {
                leases.insert(
                    key.clone(),
                    Lease {
                        tokens: taken - 1,
                        until_nanos: now.saturating_add(LEASE_NANOS),
                    },
                );
            }
            // No lease now; leftovers that could not be given back are lost (fewer admitted).
            _ => {
                leases.remove(&key);
            }
        }
        drop(leases);
        self.settle(host, result)
    }

    /// The outcome of [`RateLimit::take_from`], logging a shared-data failure.
    fn settle<H: Host + ?Sized>(
        &self,
        host: &H,
        result: Result<(Outcome, u32), SharedDataError>,
    ) -> Outcome {
        match result {
            Ok((outcome, _)) => outcome,
            Err(error) => {
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "trellis-policy: rate limit {} could not update its bucket, letting the request through: {error}",
                        self.name
                    ),
                );
                Outcome::Error
            }
        }
    }

    /// The bucket key for the request: `ip:<addr>`, `principal:<id>`, `header:<value>`, or the
    /// shared `none` bucket when the request has no such value.
    fn key_value<H: Host + ?Sized>(&self, facts: &mut RequestFacts<'_, H>) -> String {
        let value = match &self.key {
            LimitKey::ClientIp => facts.source_ip().map(|ip| format!("ip:{ip}")),
            LimitKey::Principal => facts.principal().map(|p| format!("principal:{p}")),
            LimitKey::Header(name) => facts.header(name).map(|v| format!("header:{v}")),
        };
        match value {
            Some(value) if value.len() > MAX_KEY_LEN => format!("hash:{:016x}", fnv1a(&value)),
            Some(value) => value,
            None => "none".to_string(),
        }
    }

    /// The shared-data name of a slot.
    fn slot_name(&self, slot: u32) -> String {
        format!("{}{slot}", self.prefix)
    }

    /// The fingerprint of a key (never 0, which marks an empty slot).
    fn fingerprint(key: &str) -> u64 {
        fnv1a(key).max(1)
    }

    /// Finds the bucket of the key with `fingerprint`: its own slot, else an empty or idle
    /// slot of its set (a fresh full bucket there), else the overflow bucket.
    fn locate<H: Host + ?Sized>(
        &self,
        host: &H,
        fingerprint: u64,
        now: u64,
    ) -> Result<Located, SharedDataError> {
        let set = u32::try_from(fingerprint % u64::from(self.sets)).unwrap_or(0);
        let mut free: Option<Located> = None;
        for way in 0..WAYS {
            let slot = self.slot_name(set * WAYS + way);
            match host.get_shared_data(&slot)? {
                None => {
                    if free.is_none() {
                        free = Some(Located {
                            slot,
                            bucket: self.full(fingerprint, now),
                            cas: Some(CREATE_CAS),
                        });
                    }
                }
                Some(value) => match Bucket::decode(&value.data) {
                    Some(stored) if stored.fingerprint == fingerprint => {
                        return Ok(Located {
                            slot,
                            bucket: self.refill(stored, now),
                            cas: Some(value.cas),
                        });
                    }
                    stored => {
                        // Unreadable, or another key's bucket that refilled completely: as
                        // good as empty.
                        let idle = stored
                            .is_none_or(|b| self.refill(b, now).micro_tokens >= self.capacity());
                        if idle && free.is_none() {
                            free = Some(Located {
                                slot,
                                bucket: self.full(fingerprint, now),
                                cas: Some(value.cas),
                            });
                        }
                    }
                },
            }
        }
        if let Some(free) = free {
            return Ok(free);
        }
        let slot = format!("{}~overflow", self.prefix);
        Ok(match host.get_shared_data(&slot)? {
            Some(value) => Located {
                bucket: Bucket::decode(&value.data)
                    .map(|b| self.refill(b, now))
                    .unwrap_or_else(|| self.full(0, now)),
                slot,
                cas: Some(value.cas),
            },
            None => Located {
                slot,
                bucket: self.full(0, now),
                cas: Some(CREATE_CAS),
            },
        })
    }

    /// Takes a token from the bucket of `key`, or `want` tokens (a lease) while the bucket
    /// stays at least half full after them; first adds `give_back` tokens of an expired lease
    /// (up to the capacity). Returns the outcome and how many tokens were taken.
    fn take_from<H: Host + ?Sized>(
        &self,
        host: &H,
        key: &str,
        now: u64,
        want: u32,
        give_back: u32,
    ) -> Result<(Outcome, u32), SharedDataError> {
        let fingerprint = Self::fingerprint(key);
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Located { slot, bucket, cas } = self.locate(host, fingerprint, now)?;
            let micro_tokens = bucket
                .micro_tokens
                .saturating_add(u64::from(give_back).saturating_mul(MICRO as u64))
                .min(self.capacity());
            if micro_tokens < MICRO as u64 {
                // Nothing to write: the refill is recomputed from the stored state next time.
                return Ok((
                    Outcome::Limited {
                        retry_after_secs: self.retry_after_secs(micro_tokens),
                    },
                    0,
                ));
            }
            let whole = micro_tokens / MICRO as u64;
            let taken = if want > 1 && whole >= u64::from(want) + u64::from(self.burst).div_ceil(2)
            {
                want
            } else {
                1
            };
            let next = Bucket {
                micro_tokens: micro_tokens - u64::from(taken) * MICRO as u64,
                ..bucket
            };
            match host.set_shared_data(&slot, &next.encode(), cas) {
                Ok(()) => return Ok((Outcome::Allowed, taken)),
                Err(SharedDataError::CasMismatch) => continue,
                Err(error) => return Err(error),
            }
        }
        Err(SharedDataError::Host(format!(
            "{MAX_CAS_ATTEMPTS} compare-and-swap attempts in a row lost to other workers"
        )))
    }

    fn capacity(&self) -> u64 {
        u64::from(self.burst) * MICRO as u64
    }

    fn full(&self, fingerprint: u64, now: u64) -> Bucket {
        Bucket {
            fingerprint,
            micro_tokens: self.capacity(),
            last_nanos: now,
        }
    }

    /// Adds the tokens earned since the bucket's last refill (a clock that went backwards earns
    /// nothing and does not move the refill time back).
    fn refill(&self, bucket: Bucket, now: u64) -> Bucket {
        let elapsed = now.saturating_sub(bucket.last_nanos);
        let earned =
            u128::from(elapsed) * u128::from(self.requests) * MICRO / u128::from(self.period_nanos);
        let tokens = (u128::from(bucket.micro_tokens) + earned).min(u128::from(self.capacity()));
        Bucket {
            micro_tokens: u64::try_from(tokens).unwrap_or(u64::MAX),
            last_nanos: now.max(bucket.last_nanos),
            ..bucket
        }
    }

    /// Seconds until the bucket holds a whole token, rounded up, at least 1.
    fn retry_after_secs(&self, micro_tokens: u64) -> u64 {
        let missing = MICRO.saturating_sub(u128::from(micro_tokens));
        let per_token = u128::from(self.requests) * MICRO;
        let wait_nanos = (missing * u128::from(self.period_nanos)).div_ceil(per_token);
        let secs = wait_nanos.div_ceil(u128::from(NANOS_PER_SECOND));
        u64::try_from(secs).unwrap_or(u64::MAX).max(1)
    }
}

/// Tokens to lease at once: 1% of a second's worth, at most a quarter of the burst and
/// [`MAX_LEASE`]; 1 (no lease) for rates under 200 per second.
fn lease_size(requests: u32, period_nanos: u64, burst: u32) -> u32 {
    let per_window =
        u128::from(requests) * u128::from(LEASE_NANOS) / u128::from(period_nanos.max(1));
    let size = u32::try_from(per_window).unwrap_or(u32::MAX);
    size.min(burst / 4).clamp(1, MAX_LEASE)
}

/// FNV-1a, 64-bit: a stable, dependency-free hash for long key values.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockHost;

    const SECOND: u64 = 1_000_000_000;

    fn limit(json: &str) -> RateLimit {
        let config: RateLimitConfig = serde_json::from_str(json).unwrap();
        RateLimit::compile(&config, "rate_limits[0]").unwrap()
    }

    fn compile_error(json: &str) -> String {
        let config: RateLimitConfig = serde_json::from_str(json).unwrap();
        RateLimit::compile(&config, "rate_limits[0]")
            .unwrap_err()
            .to_string()
    }

    /// The slot a key's bucket takes in an empty table (the first of its set).
    fn slot(limit: &RateLimit, key_value: &str) -> String {
        let fingerprint = RateLimit::fingerprint(&format!("{}{key_value}", limit.prefix));
        let set = u32::try_from(fingerprint % u64::from(limit.sets)).unwrap();
        limit.slot_name(set * WAYS)
    }

    fn fingerprint(limit: &RateLimit, key_value: &str) -> u64 {
        RateLimit::fingerprint(&format!("{}{key_value}", limit.prefix))
    }

    fn allowed(limit: &RateLimit, host: &MockHost, n: usize) -> usize {
        (0..n)
            .filter(|_| limit.take(host) == Outcome::Allowed)
            .count()
    }

    #[test]
    fn a_full_bucket_allows_the_burst_then_limits() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 10, "per": "second", "burst": 5}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(allowed(&l, &host, 5), 5);
        assert_eq!(
            l.take(&host),
            Outcome::Limited {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn burst_defaults_to_the_rate() {
        let l = limit(r#"{"name": "l", "key": "client_ip", "requests": 7, "per": "minute"}"#);
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(allowed(&l, &host, 20), 7);
    }

    #[test]
    fn tokens_refill_with_time_up_to_the_burst() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 10, "per": "second", "burst": 3}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(allowed(&l, &host, 10), 3);
        host.advance(SECOND / 10); // one token
        assert_eq!(allowed(&l, &host, 10), 1);
        host.advance(SECOND / 20); // half a token: not enough
        assert_eq!(allowed(&l, &host, 10), 0);
        host.advance(SECOND / 20); // the other half
        assert_eq!(allowed(&l, &host, 10), 1);
        host.advance(3600 * SECOND); // a long pause refills only up to the burst
        assert_eq!(allowed(&l, &host, 10), 3);
    }

    #[test]
    fn a_steady_stream_gets_the_configured_rate() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 50, "per": "second", "burst": 1}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        // 1000 requests/s for 10 s: 1 (burst) + 50/s * 10 s get through.
        let mut passed = 0;
        for _ in 0..10_000 {
            host.advance(SECOND / 1000);
            passed += usize::from(l.take(&host) == Outcome::Allowed);
        }
        assert_eq!(passed, 500);
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let l = limit(r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "minute"}"#);
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(l.take(&host), Outcome::Allowed);
        assert_eq!(
            l.take(&host),
            Outcome::Limited {
                retry_after_secs: 60
            }
        );
        host.advance(59 * SECOND + SECOND / 2);
        assert_eq!(
            l.take(&host),
            Outcome::Limited {
                retry_after_secs: 1
            }
        );
        host.advance(SECOND / 2);
        assert_eq!(l.take(&host), Outcome::Allowed);
        let hourly =
            limit(r#"{"name": "h", "key": "client_ip", "requests": 2, "per": "hour", "burst": 1}"#);
        assert_eq!(hourly.take(&host), Outcome::Allowed);
        assert_eq!(
            hourly.take(&host),
            Outcome::Limited {
                retry_after_secs: 1800
            }
        );
    }

    #[test]
    fn each_client_ip_has_its_own_bucket() {
        let l = limit(r#"{"name": "l", "key": "client_ip", "requests": 2, "per": "second"}"#);
        let a = MockHost::get("/").with_source("10.0.0.1:1");
        let b = a.sibling().with_source("10.0.0.2:1");
        assert_eq!(allowed(&l, &a, 5), 2);
        assert_eq!(allowed(&l, &b, 5), 2);
        let a_other_port = a.sibling().with_source("10.0.0.1:9999");
        assert_eq!(allowed(&l, &a_other_port, 5), 0, "same IP, same bucket");
    }

    #[test]
    fn header_and_principal_keys_and_a_shared_bucket_for_requests_without_one() {
        let l = limit(
            r#"{"name": "l", "key": {"header": "X-Api-Key"}, "requests": 1, "per": "second"}"#,
        );
        let k1 = MockHost::get("/").with_header("x-api-key", "k1");
        let k2 = k1.sibling().with_header("x-api-key", "k2");
        let none1 = k1.sibling();
        let none2 = k1.sibling();
        assert_eq!(allowed(&l, &k1, 3), 1);
        assert_eq!(allowed(&l, &k2, 3), 1);
        assert_eq!(allowed(&l, &none1, 1), 1);
        assert_eq!(
            allowed(&l, &none2, 1),
            0,
            "requests without the header share one bucket"
        );

        let p = limit(r#"{"name": "p", "key": "principal", "requests": 1, "per": "second"}"#);
        let alice = MockHost::get("/").with_principal("spiffe://td/alice");
        let bob = alice.sibling().with_principal("spiffe://td/bob");
        assert_eq!(allowed(&p, &alice, 2), 1);
        assert_eq!(allowed(&p, &bob, 2), 1);
        let stored = Bucket::decode(
            &alice
                .shared(&slot(&p, "principal:spiffe://td/alice"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            stored.fingerprint,
            fingerprint(&p, "principal:spiffe://td/alice")
        );
    }

    #[test]
    fn long_key_values_are_hashed() {
        let l = limit(r#"{"name": "l", "key": {"header": "x-k"}, "requests": 1, "per": "second"}"#);
        let host = MockHost::get("/").with_header("x-k", &"v".repeat(1000));
        assert_eq!(l.take(&host), Outcome::Allowed);
        assert_eq!(
            l.take(&host),
            Outcome::Limited {
                retry_after_secs: 1
            }
        );
        let keys = host.shared_keys();
        assert!(keys.iter().all(|k| k.len() < 64), "{keys:?}");
        let hashed = format!(
            "hash:{:016x}",
            fnv1a(&format!("header:{}", "v".repeat(1000)))
        );
        assert_eq!(keys, [slot(&l, &hashed)]);
    }

    #[test]
    fn a_cas_mismatch_is_retried_with_the_other_writer_s_tokens() {
        let l =
            limit(r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "hour", "burst": 3}"#);
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(l.take(&host), Outcome::Allowed); // 2 tokens left
        // Another worker takes a token between our read and our write, twice in a row.
        let key = &slot(&l, "ip:10.0.0.1");
        let other_writer_took_one = |data: &[u8]| {
            let mut bucket = Bucket::decode(data).unwrap();
            bucket.micro_tokens -= 1_000_000;
            bucket.encode().to_vec()
        };
        host.interfere_before_set(key, 1, other_writer_took_one);
        assert_eq!(
            l.take(&host),
            Outcome::Allowed,
            "the retry took the last token"
        );
        assert_eq!(host.cas_mismatches(), 1);
        // Without the retry, our stale write would have left 1 token (2 - ours) and lost theirs.
        let stored = Bucket::decode(&host.shared(key).unwrap()).unwrap();
        assert_eq!(stored.micro_tokens, 0);
        assert_eq!(
            l.take(&host),
            Outcome::Limited {
                retry_after_secs: 3600
            }
        );
    }

    #[test]
    fn a_bucket_created_concurrently_by_another_worker_is_not_overwritten() {
        let l =
            limit(r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "hour", "burst": 3}"#);
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        let key = &slot(&l, "ip:10.0.0.1");
        let now = host.now_nanos();
        let fingerprint = fingerprint(&l, "ip:10.0.0.1");
        // Between our read (no bucket) and our write, another worker creates the bucket and
        // takes a token from it.
        host.interfere_before_set(key, 1, move |_| {
            Bucket {
                fingerprint,
                micro_tokens: 2_000_000,
                last_nanos: now,
            }
            .encode()
            .to_vec()
        });
        assert_eq!(l.take(&host), Outcome::Allowed);
        assert_eq!(host.cas_mismatches(), 1);
        let stored = Bucket::decode(&host.shared(key).unwrap()).unwrap();
        assert_eq!(stored.micro_tokens, 1_000_000, "3 - theirs - ours");
    }

    #[test]
    fn persistent_cas_failures_let_the_request_through_as_an_error() {
        let l =
            limit(r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "hour", "burst": 2}"#);
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(l.take(&host), Outcome::Allowed);
        host.interfere_before_set(&slot(&l, "ip:10.0.0.1"), usize::MAX, |d: &[u8]| d.to_vec());
        assert_eq!(l.take(&host), Outcome::Error);
        assert_eq!(host.cas_mismatches(), MAX_CAS_ATTEMPTS);
        assert!(
            host.logs()
                .iter()
                .any(|(level, m)| *level == LogLevel::Warn && m.contains("compare-and-swap"))
        );
    }

    #[test]
    fn a_shared_data_failure_lets_the_request_through_as_an_error() {
        let l = limit(r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "hour"}"#);
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        host.fail_shared_data();
        assert_eq!(l.take(&host), Outcome::Error);
    }

    #[test]
    fn new_keys_beyond_a_full_set_share_an_overflow_bucket() {
        // One set of four slots.
        let l = limit(
            r#"{"name": "l", "key": {"header": "k"}, "requests": 1, "per": "hour", "max_keys": 4}"#,
        );
        let base = MockHost::get("/");
        let with = |v: &str| base.sibling().with_header("k", v);
        for key in ["a", "b", "c", "d"] {
            assert_eq!(l.take(&with(key)), Outcome::Allowed);
        }
        assert_eq!(
            l.take(&with("e")),
            Outcome::Allowed,
            "first in the overflow bucket"
        );
        assert!(
            matches!(l.take(&with("f")), Outcome::Limited { .. }),
            "overflow bucket is empty"
        );
        assert!(
            matches!(l.take(&with("a")), Outcome::Limited { .. }),
            "existing keys keep their bucket"
        );
        let keys = base.shared_keys();
        assert_eq!(
            keys.len(),
            5,
            "four slots and the overflow bucket: {keys:?}"
        );
        assert!(
            keys.contains(&"trellis.policy.rl.v2/l/~overflow".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn idle_keys_are_forgotten_and_a_new_client_gets_its_own_bucket() {
        let l = limit(
            r#"{"name": "l", "key": {"header": "k"}, "requests": 2, "per": "minute", "burst": 2, "max_keys": 4}"#,
        );
        let base = MockHost::get("/");
        let with = |v: &str| base.sibling().with_header("k", v);
        // An attacker rotating key values fills every slot and drains the overflow bucket.
        for i in 0..20 {
            let _ = l.take(&with(&format!("rotating-{i}")));
        }
        assert!(
            matches!(l.take(&with("newcomer")), Outcome::Limited { .. }),
            "while the slots are in use, a new client shares the drained overflow bucket"
        );
        // A minute later every rotated key's bucket is full again: idle, as good as empty.
        base.advance(60 * SECOND);
        assert_eq!(
            allowed(&l, &with("newcomer"), 5),
            2,
            "a new client gets its own bucket, at its full burst"
        );
        // And keeps it: the next new client does not take its slot from it while it is in use.
        assert_eq!(allowed(&l, &with("another"), 5), 2);
        assert!(matches!(l.take(&with("newcomer")), Outcome::Limited { .. }));
        // Memory stays bounded: four slots and the overflow bucket, whatever the number of keys.
        assert_eq!(base.shared_keys().len(), 5, "{:?}", base.shared_keys());
    }

    #[test]
    fn a_clock_going_backwards_earns_nothing() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "second", "burst": 1}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        host.advance(10 * SECOND);
        assert_eq!(l.take(&host), Outcome::Allowed);
        host.rewind(5 * SECOND);
        assert!(matches!(l.take(&host), Outcome::Limited { .. }));
        host.advance(5 * SECOND + SECOND / 2);
        assert!(
            matches!(l.take(&host), Outcome::Limited { .. }),
            "only 0.5 s after the refill time"
        );
        host.advance(SECOND / 2);
        assert_eq!(l.take(&host), Outcome::Allowed);
    }

    #[test]
    fn garbage_in_a_bucket_entry_is_replaced_by_a_full_bucket() {
        let l =
            limit(r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "hour", "burst": 2}"#);
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        host.set_shared(&slot(&l, "ip:10.0.0.1"), b"junk");
        assert_eq!(allowed(&l, &host, 5), 2);
    }

    #[test]
    fn bad_limits_are_refused_with_their_field() {
        let cases = [
            (
                r#"{"name": "l", "key": "client_ip", "requests": 0, "per": "second"}"#,
                "rate_limits[0].requests: must be at least 1",
            ),
            (
                r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "second", "burst": 0}"#,
                "rate_limits[0].burst",
            ),
            (
                r#"{"name": "l", "key": {"header": ""}, "requests": 1, "per": "second"}"#,
                "rate_limits[0].key.header",
            ),
            (
                r#"{"name": "", "key": "client_ip", "requests": 1, "per": "second"}"#,
                "rate_limits[0].name",
            ),
            (
                r#"{"name": "l", "key": "client_ip", "requests": 1, "per": "second", "max_keys": 0}"#,
                "rate_limits[0].max_keys",
            ),
            (
                r#"{"name": "l", "scope": {"route_prefixes": []}, "key": "client_ip", "requests": 1, "per": "second"}"#,
                "rate_limits[0].scope.route_prefixes",
            ),
        ];
        for (json, expected) in cases {
            let message = compile_error(json);
            assert!(message.contains(expected), "{json}: {message}");
        }
    }

    #[test]
    fn lease_sizes_follow_the_rate_and_the_burst() {
        assert_eq!(lease_size(50, SECOND, 5), 1, "no lease for low rates");
        assert_eq!(lease_size(199, SECOND, 199), 1);
        assert_eq!(lease_size(200, SECOND, 200), 2);
        assert_eq!(lease_size(10_000, SECOND, 10_000), 100);
        assert_eq!(lease_size(1_000_000, SECOND, 1_000_000), MAX_LEASE);
        assert_eq!(lease_size(10_000, SECOND, 40), 10, "a quarter of the burst");
        assert_eq!(lease_size(60_000, 60 * SECOND, 60_000), 10, "per minute");
        assert_eq!(lease_size(u32::MAX, 1, u32::MAX), MAX_LEASE);
    }

    /// Two workers (two compiled copies of one limit: two VMs) on one proxy.
    fn two_workers(json: &str) -> ([RateLimit; 2], [MockHost; 2]) {
        let a = MockHost::get("/").with_source("10.0.0.1:1");
        let b = a.sibling().with_source("10.0.0.1:2");
        ([limit(json), limit(json)], [a, b])
    }

    /// Sends `rate` requests per second for `seconds`, alternating between the workers, and
    /// checks after every request that no more were admitted than the bucket can have held
    /// (the burst plus the rate times the time so far). Returns (admitted, limited).
    fn drive(
        limits: &[RateLimit; 2],
        hosts: &[MockHost; 2],
        (requests, burst): (u64, u64),
        rate: u64,
        seconds: u64,
    ) -> (u64, u64) {
        let (mut admitted, mut limited) = (0, 0);
        let step = SECOND / rate;
        for n in 0..rate * seconds {
            hosts[0].advance(step);
            let worker = (n % 2) as usize;
            match limits[worker].take(&hosts[worker]) {
                Outcome::Allowed => admitted += 1,
                Outcome::Limited { .. } => limited += 1,
                Outcome::Error => panic!("shared data error"),
            }
            let elapsed = (n + 1) * step;
            let bound =
                burst + (u128::from(requests) * u128::from(elapsed) / u128::from(SECOND)) as u64;
            assert!(
                admitted <= bound,
                "{admitted} admitted after {elapsed} ns, at most {bound}"
            );
        }
        (admitted, limited)
    }

    #[test]
    fn a_live_lease_is_spent_without_shared_data_calls() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 10000, "per": "second", "burst": 1000}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        let key = &slot(&l, "ip:10.0.0.1");
        assert_eq!(l.take(&host), Outcome::Allowed);
        let stored = Bucket::decode(&host.shared(key).unwrap()).unwrap();
        assert_eq!(
            stored.micro_tokens,
            900 * 1_000_000,
            "a lease of 100 tokens"
        );
        let calls = host.shared_calls();
        assert_eq!(allowed(&l, &host, 99), 99);
        assert_eq!(host.shared_calls(), calls, "the lease's 99 other tokens");
        assert_eq!(l.take(&host), Outcome::Allowed);
        assert_eq!(
            host.shared_calls(),
            calls + 2,
            "one read and one write for the next lease"
        );
    }

    #[test]
    fn unused_lease_tokens_go_back_to_the_bucket_and_expired_ones_are_not_spent() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 10000, "per": "second", "burst": 1000}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        let key = &slot(&l, "ip:10.0.0.1");
        assert_eq!(l.take(&host), Outcome::Allowed); // leased 100, 99 left
        // Other workers empty the bucket meanwhile.
        host.set_shared(
            key,
            &Bucket {
                fingerprint: fingerprint(&l, "ip:10.0.0.1"),
                micro_tokens: 0,
                last_nanos: host.now_nanos(),
            }
            .encode(),
        );
        host.advance(LEASE_NANOS); // the lease expires; 100 tokens earned
        assert_eq!(l.take(&host), Outcome::Allowed);
        let stored = Bucket::decode(&host.shared(key).unwrap()).unwrap();
        // 100 earned + 99 given back - 1 taken (199 < half the burst + a lease: no new lease).
        assert_eq!(stored.micro_tokens, 198 * 1_000_000);
        // The expired lease was not spent: every take now goes to the bucket.
        let calls = host.shared_calls();
        assert_eq!(l.take(&host), Outcome::Allowed);
        assert_eq!(host.shared_calls(), calls + 2);
    }

    #[test]
    fn given_back_tokens_never_fill_the_bucket_beyond_its_burst() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 10000, "per": "second", "burst": 1000}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        assert_eq!(l.take(&host), Outcome::Allowed); // leased 100, 99 left
        host.advance(SECOND);
        assert_eq!(l.take(&host), Outcome::Allowed);
        let stored = Bucket::decode(&host.shared(&slot(&l, "ip:10.0.0.1")).unwrap()).unwrap();
        assert_eq!(
            stored.micro_tokens,
            900 * 1_000_000,
            "full (1000), minus a new lease"
        );
    }

    #[test]
    fn leases_across_two_workers_never_exceed_the_limit_and_hold_its_rate() {
        // 3x the rate with a small burst: the bucket is soon empty, requests take single tokens.
        let json = r#"{"name": "l", "key": "client_ip", "requests": 10000, "per": "second", "burst": 1000}"#;
        let (limits, hosts) = two_workers(json);
        let (admitted, limited) = drive(&limits, &hosts, (10_000, 1000), 30_000, 2);
        assert!(limited > 0);
        let expected = 1000 + 10_000 * 2;
        assert!(
            admitted * 100 >= expected * 99,
            "{admitted} admitted, {expected} expected"
        );

        // 1.2x the rate, a large burst: each worker's leases outlive their 10 ms and are given
        // back; once the burst is spent the rate admitted is still the configured one.
        let json = r#"{"name": "l", "key": "client_ip", "requests": 10000, "per": "second", "burst": 10000}"#;
        let (limits, hosts) = two_workers(json);
        let (admitted, limited) = drive(&limits, &hosts, (10_000, 10_000), 12_000, 10);
        assert!(limited > 0);
        let expected = 10_000 + 10_000 * 10;
        assert!(
            admitted * 100 >= expected * 99,
            "{admitted} admitted, {expected} expected"
        );
    }

    #[test]
    fn leases_limit_nothing_under_the_rate() {
        let json = r#"{"name": "l", "key": "client_ip", "requests": 10000, "per": "second", "burst": 10000}"#;
        let (limits, hosts) = two_workers(json);
        let calls = hosts[0].shared_calls();
        let (admitted, limited) = drive(&limits, &hosts, (10_000, 10_000), 9_000, 5);
        assert_eq!((admitted, limited), (45_000, 0));
        assert!(
            hosts[0].shared_calls() - calls < 45_000 / 10,
            "{} shared data calls",
            hosts[0].shared_calls() - calls
        );
    }

    #[test]
    fn low_rates_take_no_leases() {
        let l = limit(
            r#"{"name": "l", "key": "client_ip", "requests": 100, "per": "second", "burst": 100}"#,
        );
        let host = MockHost::get("/").with_source("10.0.0.1:1");
        let calls = host.shared_calls();
        assert_eq!(allowed(&l, &host, 10), 10);
        let stored = Bucket::decode(&host.shared(&slot(&l, "ip:10.0.0.1")).unwrap()).unwrap();
        assert_eq!(stored.micro_tokens, 90 * 1_000_000);
        assert!(
            host.shared_calls() - calls >= 20,
            "a read and a write per request"
        );
    }

    #[test]
    fn buckets_round_trip_through_bytes() {
        let bucket = Bucket {
            fingerprint: 42,
            micro_tokens: 123_456_789,
            last_nanos: u64::MAX - 1,
        };
        assert_eq!(Bucket::decode(&bucket.encode()), Some(bucket));
        assert_eq!(Bucket::decode(&[0; 23]), None);
        assert_eq!(Bucket::decode(&[0; 25]), None);
    }
}
