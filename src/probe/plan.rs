//! A probe plan: what every probe of one service reads, prepared once per definition.
//!
//! With 100k+ services a probe's cost is set by cache misses more than by instructions: the
//! definition (`ServiceSpec`, ~400 bytes over seven cache lines) and its strings (host, path,
//! headers, status ranges) are separate allocations scattered over the heap, and the old hot
//! path touched most of them on every run (plus a host `String` allocated per probe for the pool
//! key). A `Plan` packs the fields a probe and the state machine read into one allocation next
//! to the encoded request, so the common path touches a few lines and allocates nothing.
//! The definition stays reachable (`Plan::spec`) for the cold paths: dialling, TLS, messages.
//!
//! A plan is kept per service, so its size is part of the per-service memory budget (perf.md):
//! durations are stored as 8-byte `Nanos`, the host as a thin pointer, rare expectations as
//! flags that send the probe to the spec, so that a plan with its inline request fills exactly
//! one 256-byte allocation (a test holds it there).

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::{FxHashMap as HashMap, FxHasher};

use crate::model::{Method, Scheme, ServiceId, ServiceSpec};

use super::http1;

/// Requests up to this many bytes are stored inside the plan itself, next to the fields the
/// probe reads, instead of in an allocation of their own (one cache miss fewer per probe).
const INLINE_REQUEST: usize = 128;

/// Interned hosts kept at most; past it, entries no plan uses any more are dropped, and a host
/// that still does not fit gets a private copy (correct, just not shared).
const MAX_INTERNED_HOSTS: usize = 65_536;

/// A host name as the connection pool keys it: hashed once, compared by pointer first (plans
/// of one shard share one interned copy per host, so equal hosts are almost always the same
/// allocation and the comparison never reads the string). One pointer wide.
#[derive(Clone, Debug)]
pub struct HostKey(Rc<HostName>);

#[derive(Debug)]
struct HostName {
    hash: u64,
    name: Box<str>,
}

impl HostKey {
    /// A key for `name` (not interned; see `Hosts` for the shared form).
    pub fn new(name: &str) -> Self {
        let mut h = FxHasher::default();
        name.hash(&mut h);
        HostKey(Rc::new(HostName {
            hash: h.finish(),
            name: name.into(),
        }))
    }

    /// The host name.
    pub fn as_str(&self) -> &str {
        &self.0.name
    }
}

impl PartialEq for HostKey {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.name == other.0.name)
    }
}

impl Eq for HostKey {}

impl Hash for HostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

/// One shard's interned host names (single-threaded, like the prober that owns it).
#[derive(Default)]
pub(crate) struct Hosts {
    names: RefCell<HashMap<Box<str>, HostKey>>,
}

impl Hosts {
    /// The shared key for `name`.
    pub(crate) fn intern(&self, name: &str) -> HostKey {
        let mut names = self.names.borrow_mut();
        if let Some(k) = names.get(name) {
            return k.clone();
        }
        if names.len() >= MAX_INTERNED_HOSTS {
            // Only the table holds these: no plan or pooled connection uses them any more.
            names.retain(|_, k| Rc::strong_count(&k.0) > 1);
            if names.len() >= MAX_INTERNED_HOSTS {
                return HostKey::new(name);
            }
        }
        let key = HostKey::new(name);
        names.insert(name.into(), key.clone());
        key
    }

    /// Hosts currently interned.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.borrow().len()
    }
}

/// An encoded request: inline when small (the usual GET), else on the heap.
#[derive(Debug)]
pub(crate) enum Request {
    /// `len` bytes at the start of `bytes`.
    Inline {
        /// Bytes used.
        len: u8,
        /// Storage.
        bytes: [u8; INLINE_REQUEST],
    },
    /// Too large to inline (long headers, a POST body).
    Heap(Box<[u8]>),
}

impl Request {
    fn new(encoded: Vec<u8>) -> Self {
        match u8::try_from(encoded.len()) {
            Ok(len) if encoded.len() <= INLINE_REQUEST => {
                let mut bytes = [0; INLINE_REQUEST];
                bytes[..encoded.len()].copy_from_slice(&encoded);
                Request::Inline { len, bytes }
            }
            _ => Request::Heap(encoded.into_boxed_slice()),
        }
    }

    /// The bytes to write.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Request::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Request::Heap(b) => b,
        }
    }
}

/// A duration in 8 bytes (nanoseconds, saturating past 584 years) instead of `Duration`'s 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nanos(u64);

impl Nanos {
    /// `d`, saturated.
    pub fn new(d: Duration) -> Self {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Back to a `Duration`.
    pub fn get(self) -> Duration {
        Duration::from_nanos(self.0)
    }
}

/// What a probe of one service needs on every run, prepared once per definition.
#[derive(Debug)]
pub struct Plan {
    /// The definition this plan was made from.
    pub spec: Arc<ServiceSpec>,
    /// Copied from the spec so the state machine need not read it.
    pub id: ServiceId,
    /// Time between probe starts.
    pub interval: Nanos,
    /// Fraction of the interval used as +- jitter (4 bytes: a fraction of at most 0.5 needs no
    /// more, and the plan must stay within one 256-byte allocation).
    pub jitter: f32,
    /// Consecutive failures before DOWN.
    pub failure_threshold: NonZeroU32,
    /// Consecutive successes before UP.
    pub success_threshold: NonZeroU32,
    /// Whole-probe deadline.
    pub(crate) timeout: Nanos,
    /// Limit from request written to the end of the response head.
    pub(crate) head_timeout: Nanos,
    /// Body bytes kept for `expect.body_contains`; None when there is no needle. Non-zero, so
    /// the option takes 4 bytes, not 8: validation refuses a needle longer than
    /// `max_body_bytes`, so with a needle at least one byte is kept anyway.
    pub(crate) keep: Option<NonZeroU32>,
    /// The accepted status range when there is exactly one (the usual case); otherwise the
    /// spec's ranges are consulted.
    pub(crate) status: Option<(u16, u16)>,
    /// The spec has `expect.max_latency` (read from the spec only then).
    pub(crate) latency_bound: bool,
    /// The target's address when its host is an IP literal (no resolver, no cache lookup).
    pub(crate) literal: Option<IpAddr>,
    /// Pool key part: the host, interned.
    pub(crate) host: HostKey,
    /// Request method (decides body framing).
    pub(crate) method: Method,
    /// http or https.
    pub(crate) scheme: Scheme,
    /// The TLS client config of an https target, built from the definition's settings.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    /// Target port.
    pub(crate) port: u16,
    /// Redirects followed at most (0 = off); read only when a redirect arrives.
    pub(crate) follow_redirects: u8,
    /// The request exactly as written on the wire.
    pub(crate) request: Request,
}

impl Plan {
    /// Prepares the plan of `spec`, interning its host in `hosts`.
    pub(crate) fn new(
        spec: Arc<ServiceSpec>,
        hosts: &Hosts,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Plan {
        let mut request = Vec::new();
        http1::encode_request(&spec, &mut request);
        let ranges = &spec.expect.status.0;
        let host = spec.target.host.as_str();
        Plan {
            id: spec.id,
            interval: Nanos::new(spec.interval),
            jitter: spec.jitter as f32,
            failure_threshold: spec.failure_threshold,
            success_threshold: spec.success_threshold,
            timeout: Nanos::new(spec.timeout),
            head_timeout: Nanos::new(spec.phase_timeouts.head),
            keep: spec.expect.body_contains.is_some().then(|| {
                let n = u32::try_from(spec.max_body_bytes).unwrap_or(u32::MAX);
                NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
            }),
            status: (ranges.len() == 1).then(|| ranges[0]),
            latency_bound: spec.expect.max_latency.is_some(),
            literal: crate::rt::dns::literal(host, spec.target.port).map(|a| a.ip()),
            host: hosts.intern(host),
            method: spec.method,
            scheme: spec.target.scheme,
            tls,
            port: spec.target.port,
            follow_redirects: spec.follow_redirects,
            request: Request::new(request),
            spec,
        }
    }

    /// True when `code` is an accepted status.
    pub(crate) fn status_ok(&self, code: u16) -> bool {
        match self.status {
            Some((lo, hi)) => (lo..=hi).contains(&code),
            None => self.spec.expect.status.contains(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatusRanges;

    fn spec(url: &str) -> Arc<ServiceSpec> {
        let mut s = crate::probe::http1::tests::spec("h", 80, Scheme::Http);
        s.target = crate::config::parse_url(url).expect("test url");
        Arc::new(s)
    }

    #[test]
    fn plans_share_interned_hosts_and_know_literals() {
        let hosts = Hosts::default();
        let a = Plan::new(spec("http://example.test:8080/a"), &hosts, None);
        let b = Plan::new(spec("http://example.test:8080/b"), &hosts, None);
        assert!(Rc::ptr_eq(&a.host.0, &b.host.0));
        assert_eq!(a.host, HostKey::new("example.test"));
        assert_ne!(a.host, HostKey::new("other.test"));
        assert_eq!(hosts.len(), 1);
        assert_eq!(a.literal, None);
        let v4 = Plan::new(spec("http://127.0.0.1:9/"), &hosts, None);
        assert_eq!(v4.literal, Some(IpAddr::from([127, 0, 0, 1])));
        let v6 = Plan::new(spec("http://[::1]:9/"), &hosts, None);
        assert_eq!(v6.literal, Some("::1".parse().expect("v6")));
        assert!(matches!(a.request, Request::Inline { .. }));
        assert!(String::from_utf8_lossy(a.request.as_slice()).starts_with("GET /a HTTP/1.1\r\n"));
    }

    #[test]
    fn large_requests_live_on_the_heap_and_encode_the_same() {
        let hosts = Hosts::default();
        let mut s = (*spec("http://h/")).clone();
        s.headers = vec![("X-Long".into(), "v".repeat(INLINE_REQUEST))];
        let plan = Plan::new(Arc::new(s.clone()), &hosts, None);
        assert!(matches!(plan.request, Request::Heap(_)));
        let mut direct = Vec::new();
        http1::encode_request(&s, &mut direct);
        assert_eq!(plan.request.as_slice(), &direct[..]);
    }

    #[test]
    fn status_fast_path_agrees_with_the_ranges() {
        let hosts = Hosts::default();
        let one = Plan::new(spec("http://h/"), &hosts, None);
        assert_eq!(one.status, Some((200, 299)));
        assert!(one.status_ok(204) && !one.status_ok(300));
        let mut s = (*spec("http://h/")).clone();
        s.expect.status = StatusRanges(vec![(200, 200), (404, 404)]);
        let two = Plan::new(Arc::new(s), &hosts, None);
        assert_eq!(two.status, None);
        assert!(two.status_ok(404) && two.status_ok(200) && !two.status_ok(201));
    }

    #[test]
    fn a_full_intern_table_drops_unused_hosts_first() {
        let hosts = Hosts::default();
        let kept = hosts.intern("kept.test");
        for i in 0..MAX_INTERNED_HOSTS {
            drop(hosts.intern(&format!("h{i}.test")));
        }
        // The table was full of unused names: they were purged to make room.
        let again = hosts.intern("new.test");
        assert!(hosts.len() < MAX_INTERNED_HOSTS);
        assert_eq!(again.as_str(), "new.test");
        assert!(Rc::ptr_eq(&hosts.intern("kept.test").0, &kept.0));
    }

    #[test]
    fn a_plan_fills_one_256_byte_allocation() {
        // Plans are per service: perf.md's memory per service counts on this (an `Rc` adds a
        // 16-byte header; 256 is one of the allocator's size classes).
        assert!(
            std::mem::size_of::<Plan>() + 16 <= 256,
            "{}",
            std::mem::size_of::<Plan>()
        );
        assert_eq!(
            Nanos::new(Duration::from_millis(1500)).get(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            Nanos::new(Duration::MAX).get(),
            Duration::from_nanos(u64::MAX)
        );
    }
}
