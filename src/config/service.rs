//! One service (`services[i]` in the file, or a JSON body from the API) -> `ServiceSpec`.
//!
//! `service` runs one named step per group of keys (name, request, timing, tags, expect, tls,
//! thresholds); each step reports at the key it checks, under the prefix the caller gives
//! (`services[3].` in the file, empty for an API body).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::defaults::{self, ServiceDefaults};
use super::duration::format_duration;
use super::raw::{Headers, RawExpect, RawService, RawTimeouts, RawTls};
use super::url::parse_url;
use super::validate::{dur_range, duration, err, read_file, resolve, Result};
use crate::model::{
    Expect, Method, PhaseTimeouts, Scheme, ServiceId, ServiceSpec, Source, StatusRanges,
    TlsSettings,
};

/// CA files already checked in this parse: thousands of https services usually share one.
pub(super) type TlsCache = HashMap<PathBuf, ()>;

/// Builds the dotted keys of one service: `prefix` + field.
#[derive(Clone, Copy)]
struct Keys<'a>(&'a str);

impl Keys<'_> {
    fn at(self, field: &str) -> String {
        format!("{}{field}", self.0)
    }
}

/// Validates one service; `prefix` starts every key (`services[3].` in the file, empty for an
/// API body).
pub(super) fn service(
    prefix: &str,
    s: RawService,
    d: &ServiceDefaults,
    base: &Path,
    tls_cache: &mut TlsCache,
) -> Result<ServiceSpec> {
    let k = Keys(prefix);
    // Destructured without `..`, so a new raw key cannot be silently ignored here.
    let RawService {
        name,
        url,
        method,
        headers,
        body,
        interval,
        timeout,
        jitter,
        tags,
        expect,
        failure_threshold,
        success_threshold,
        paused,
        tls,
        timeouts,
        max_body_bytes,
    } = s;
    let name = self::name(k, &name)?;
    let url = url.trim().to_string();
    let target = parse_url(&url).or_else(|m| err(k.at("url"), m))?;
    let method = defaults::method(&k.at("method"), method.as_deref(), d.method)?;
    let headers = self::headers(k, headers)?;
    let body = self::body(k, body, method)?;
    let (interval, timeout) = interval_and_timeout(k, &interval, &timeout, d)?;
    let phase_timeouts = self::phase_timeouts(k, timeouts.as_ref(), d, timeout)?;
    let jitter = match jitter {
        Some(j) => defaults::jitter(&k.at("jitter"), Some(&j), d.jitter)?,
        None => d.jitter,
    };
    let tags = self::tags(k, tags)?;
    let max_body_bytes = match max_body_bytes {
        Some(_) => defaults::max_body_bytes(&k.at("max_body_bytes"), max_body_bytes, 0)?,
        None => d.max_body_bytes,
    };
    let expect = match expect {
        Some(e) => self::expect(k, e, method, max_body_bytes, timeout)?,
        None => Expect::default(),
    };
    let tls = self::tls(k, target.scheme, tls, base, tls_cache)?;
    let threshold = |field: &str, v: Option<u64>, inherited| match v {
        Some(_) => defaults::threshold(&k.at(field), v, 1),
        None => Ok(inherited),
    };
    Ok(ServiceSpec {
        id: ServiceId::from_name(&name),
        name,
        target,
        url,
        method,
        headers,
        body,
        interval,
        timeout,
        phase_timeouts,
        jitter,
        tags,
        expect,
        failure_threshold: threshold("failure_threshold", failure_threshold, d.failure_threshold)?,
        success_threshold: threshold("success_threshold", success_threshold, d.success_threshold)?,
        paused: paused.unwrap_or(false),
        tls,
        max_body_bytes,
        source: Source::Config,
    })
}

/// `name`: 1..=128 characters of `A-Z a-z 0-9 . _ -` (it ends up in URLs and metric labels).
fn name(k: Keys, raw: &str) -> Result<String> {
    let name = raw.trim().to_string();
    if name.is_empty() || name.len() > 128 {
        return err(k.at("name"), "must be 1 to 128 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return err(
            k.at("name"),
            format!("\"{name}\" contains {c:?} (use only A-Z, a-z, 0-9, '.', '_', '-')"),
        );
    }
    Ok(name)
}

/// `headers`: valid names, no framing headers, no CR/LF/NUL in values; file order kept.
fn headers(k: Keys, raw: Option<Headers>) -> Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    for (hname, value) in raw.map(|h| h.0).unwrap_or_default() {
        let hk = k.at(&format!("headers.{hname}"));
        if hname.is_empty() || !hname.bytes().all(is_tchar) {
            return err(hk, format!("\"{hname}\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"));
        }
        let lower = hname.to_ascii_lowercase();
        if lower == "content-length" || lower == "transfer-encoding" {
            // The prober frames the body itself; a user value would corrupt the request.
            return err(hk, "is set by the prober from the body; remove it");
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return err(hk, "value must not contain CR, LF or NUL");
        }
        headers.push((hname, value));
    }
    Ok(headers)
}

/// An RFC 9110 token character (valid in a header name).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `body`: only a POST sends one.
fn body(k: Keys, raw: Option<String>, method: Method) -> Result<Option<Bytes>> {
    match raw {
        Some(_) if method != Method::Post => err(
            k.at("body"),
            format!("a body needs method: POST (method is {})", method.as_str()),
        ),
        b => Ok(b.map(Bytes::from)),
    }
}

/// `interval` and `timeout`, each the service's own or inherited; the timeout must be shorter.
///
/// A clash is reported at `timeout` whenever the service sets either key, because that is the
/// key to add or change; an inherited value is named as such (`timeout (default 5s)`) so the
/// message never quotes a value as if the user had written it. Only when both are inherited is
/// it the defaults that clash.
fn interval_and_timeout(
    k: Keys,
    own_interval: &Option<String>,
    own_timeout: &Option<String>,
    d: &ServiceDefaults,
) -> Result<(Duration, Duration)> {
    let interval = match own_interval {
        Some(_) => defaults::interval(&k.at("interval"), own_interval, d.interval)?,
        None => d.interval,
    };
    let timeout = match own_timeout {
        Some(_) => defaults::timeout(&k.at("timeout"), own_timeout, d.timeout)?,
        None => d.timeout,
    };
    if timeout < interval {
        return Ok((interval, timeout));
    }
    let (i, t) = (format_duration(interval), format_duration(timeout));
    match (own_interval.is_some(), own_timeout.is_some()) {
        (true, true) => err(
            k.at("timeout"),
            format!("{t} must be shorter than interval {i}"),
        ),
        (false, true) => err(
            k.at("timeout"),
            format!("{t} must be shorter than interval (default {i})"),
        ),
        (true, false) => err(
            k.at("timeout"),
            format!("timeout (default {t}) must be shorter than interval {i}"),
        ),
        (false, false) => err(
            "defaults.timeout",
            format!("{t} must be shorter than defaults.interval {i}"),
        ),
    }
}

/// `timeouts.*`, falling back to `defaults.timeouts.*`, then to `timeout`.
fn phase_timeouts(
    k: Keys,
    own: Option<&RawTimeouts>,
    d: &ServiceDefaults,
    timeout: Duration,
) -> Result<PhaseTimeouts> {
    let own = own.cloned().unwrap_or_default();
    defaults::phase_timeouts(&k.at("timeouts"), &own, &d.timeouts, timeout)
}

/// `tags`: 1..=64 characters, no whitespace, control characters or commas (commas separate
/// tags in query strings).
fn tags(k: Keys, raw: Option<Vec<String>>) -> Result<Vec<String>> {
    let mut tags = Vec::new();
    for (t, tag) in raw.unwrap_or_default().into_iter().enumerate() {
        let tag = tag.trim().to_string();
        if tag.is_empty()
            || tag.len() > 64
            || tag
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return err(
                k.at(&format!("tags[{t}]")),
                format!("invalid tag \"{tag}\" (1 to 64 characters, no spaces or commas)"),
            );
        }
        tags.push(tag);
    }
    Ok(tags)
}

/// `expect`: status ranges, a body needle that could match, a latency bound that could fire.
fn expect(
    k: Keys,
    e: RawExpect,
    method: Method,
    max_body_bytes: usize,
    timeout: Duration,
) -> Result<Expect> {
    let mut expect = Expect::default();
    if let Some(st) = e.status {
        expect.status = parse_status_ranges(&st).or_else(|m| err(k.at("expect.status"), m))?;
    }
    if let Some(needle) = e.body_contains {
        let key = k.at("expect.body_contains");
        if needle.is_empty() {
            return err(key, "must not be empty");
        }
        if method == Method::Head {
            return err(key, "HEAD responses have no body; use GET");
        }
        if needle.len() > max_body_bytes {
            return err(
                key,
                format!(
                    "is longer than max_body_bytes ({max_body_bytes}), so it could never match"
                ),
            );
        }
        expect.body_contains = Some(needle);
    }
    if e.max_latency.is_some() {
        let key = k.at("expect.max_latency");
        let ml = duration(&key, &e.max_latency, timeout)?;
        dur_range(&key, ml, Duration::from_millis(1), None)?;
        if ml > timeout {
            // The probe is cut off at `timeout`, so a larger bound could never fire.
            return err(
                key,
                format!(
                    "{} is longer than timeout {}, so it could never apply",
                    format_duration(ml),
                    format_duration(timeout)
                ),
            );
        }
        expect.max_latency = Some(ml);
    }
    Ok(expect)
}

/// Parses `200-299,304`; codes must be 100..=599 and ranges ascending.
pub fn parse_status_ranges(text: &str) -> std::result::Result<StatusRanges, String> {
    let hint = "(expected codes or ranges in 100..=599, e.g. \"200-299,304\")";
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!(
                "invalid status list \"{text}\": empty entry {hint}"
            ));
        }
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let code = |c: &str| match c.parse::<u16>() {
            Ok(n) if (100..=599).contains(&n) => Ok(n),
            _ => Err(format!("invalid status \"{c}\" in \"{text}\" {hint}")),
        };
        let (lo, hi) = (code(lo)?, code(hi)?);
        if lo > hi {
            return Err(format!("range \"{part}\" is reversed (write {hi}-{lo})"));
        }
        out.push((lo, hi));
    }
    Ok(StatusRanges(out))
}

/// `tls`: only for https; a CA file must hold a certificate (each file is read once per parse).
fn tls(
    k: Keys,
    scheme: Scheme,
    raw: Option<RawTls>,
    base: &Path,
    tls_cache: &mut TlsCache,
) -> Result<Option<TlsSettings>> {
    let t = match (scheme, raw) {
        (Scheme::Http, Some(_)) => return err(k.at("tls"), "only applies to https:// URLs"),
        (Scheme::Http, None) => return Ok(None),
        (Scheme::Https, t) => t.unwrap_or_default(),
    };
    let ca = t.ca_file.as_deref().map(|p| resolve(base, p.trim()));
    if let Some(ca) = ca.as_ref().filter(|ca| !tls_cache.contains_key(*ca)) {
        check_ca_file(&k.at("tls.ca_file"), ca)?;
        tls_cache.insert(ca.clone(), ());
    }
    Ok(Some(TlsSettings {
        ca_file: ca,
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
    }))
}

/// Checks that a CA file holds at least one PEM certificate, so `ringwatch check` names the key
/// of a bad file; the prober builds its TLS client config from the same file later.
fn check_ca_file(key: &str, path: &Path) -> Result<()> {
    let pem = read_file(key, "CA file", path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<std::result::Result<_, _>>()
        .or_else(|e| err(key, format!("CA file {}: invalid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return err(
            key,
            format!("CA file {}: no certificate found", path.display()),
        );
    }
    Ok(())
}
