//! The PostgreSQL part of the `storage` section: the connection URL taken apart and checked,
//! where the password comes from, and the pool and timeout keys.
//!
//! The URL is parsed here rather than by the driver so every mistake is reported with its key
//! (`storage.url`, `storage.pool`, ...) by `ringwatch check`, and so `config` stays free of the
//! database client. The password is never required in the YAML: after the URL's own (if any),
//! `RINGWATCH_PG_PASSWORD`, then libpq's `PGPASSWORD`, then `storage.password_file` are tried,
//! when the store connects (`PgConfig::password`), so `ringwatch check` passes where the
//! secret is not mounted (a CI job) and a rotated secret is read again on reconnect.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration::{format_duration, parse_duration};
use super::raw::RawStorage;
use super::{ConfigError, StorageKind};

/// Environment variable read for the password first (ringwatch's own name).
pub const PASSWORD_ENV: &str = "RINGWATCH_PG_PASSWORD";
/// libpq's variable, honoured after `PASSWORD_ENV`.
pub const LIBPQ_PASSWORD_ENV: &str = "PGPASSWORD";

/// Reader connections (and threads) when `storage.pool` is not set.
const DEFAULT_POOL: u64 = 2;
/// Upper bound on `storage.pool`: each reader is a server process on the database host.
const MAX_POOL: u64 = 64;

type Result<T> = std::result::Result<T, ConfigError>;

fn err<T>(key: &str, message: impl Into<String>) -> Result<T> {
    Err(ConfigError {
        key: key.to_string(),
        message: message.into(),
    })
}

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct PgPassword(String);

impl PgPassword {
    /// Wraps a password (from a test or a caller that read it elsewhere).
    pub fn new(p: impl Into<String>) -> PgPassword {
        PgPassword(p.into())
    }

    /// The secret itself, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PgPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgPassword(***)")
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgHost {
    /// A host name or IP address (TCP).
    Tcp(String),
    /// A directory holding the server's Unix socket (`postgres://u@%2Frun%2Fpostgresql/db`).
    Socket(PathBuf),
}

/// A validated PostgreSQL storage configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// Server address.
    pub host: PgHost,
    /// Server port (5432 unless the URL says otherwise).
    pub port: u16,
    /// Role to log in as.
    pub user: String,
    /// Database name (the user name when the URL has no path, as with libpq).
    pub dbname: String,
    /// The URL's own password, if it has one (it wins over every other source).
    pub url_password: Option<PgPassword>,
    /// `storage.password_file`, resolved against the config file's directory.
    pub password_file: Option<PathBuf>,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
    /// Reader connections for history queries (one reader thread each).
    pub pool: usize,
    /// Longest wait for a connection (TCP, startup and authentication).
    pub connect_timeout: Duration,
    /// Longest wait for one statement or batch before the connection is dropped and retried.
    pub query_timeout: Duration,
}

impl PgConfig {
    /// The password to send, read now: the URL's, else `RINGWATCH_PG_PASSWORD`, else
    /// `PGPASSWORD`, else `password_file`; None = none (trust or peer authentication). The
    /// error names `storage.password_file`.
    pub fn password(&self) -> std::result::Result<Option<PgPassword>, ConfigError> {
        if let Some(p) = &self.url_password {
            return Ok(Some(p.clone()));
        }
        if let Some(p) = from_env() {
            return Ok(Some(PgPassword(p)));
        }
        match &self.password_file {
            None => Ok(None),
            Some(f) => Ok(from_file(f, self)?.map(PgPassword)),
        }
    }

    /// The URL without its password, for messages and logs.
    pub fn redacted_url(&self) -> String {
        let host = match &self.host {
            PgHost::Tcp(h) if h.contains(':') => format!("[{h}]"),
            PgHost::Tcp(h) => h.clone(),
            PgHost::Socket(p) => p.display().to_string().replace('/', "%2F"),
        };
        format!(
            "postgres://{}@{host}:{}/{}",
            self.user, self.port, self.dbname
        )
    }
}

/// Rejects the postgres-only keys when the backend is SQLite.
pub(super) fn only_with_postgres(s: &RawStorage) -> Result<()> {
    let set = [
        ("storage.pool", s.pool.is_some()),
        ("storage.connect_timeout", s.connect_timeout.is_some()),
        ("storage.query_timeout", s.query_timeout.is_some()),
        ("storage.password_file", s.password_file.is_some()),
    ];
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((key, _)) => err(key, "only used with kind: postgres"),
        None => Ok(()),
    }
}

/// The postgres backend from `url` (already known to start with `postgres://` or
/// `postgresql://`) and the section's postgres keys; `base` resolves a relative
/// `password_file`.
pub(super) fn storage_kind(s: &RawStorage, url: &str, base: &Path) -> Result<StorageKind> {
    let parts = parse_url(url).or_else(|m| err("storage.url", m))?;
    let pool = match s.pool {
        None => DEFAULT_POOL,
        Some(n) if (1..=MAX_POOL).contains(&n) => n,
        Some(n) => {
            return err(
                "storage.pool",
                format!("{n} is out of range 1..={MAX_POOL}"),
            )
        }
    };
    let connect_timeout = bounded(
        "storage.connect_timeout",
        &s.connect_timeout,
        Duration::from_secs(5),
        Duration::from_secs(300),
    )?;
    let query_timeout = bounded(
        "storage.query_timeout",
        &s.query_timeout,
        Duration::from_secs(30),
        Duration::from_secs(3600),
    )?;
    Ok(StorageKind::Postgres(PgConfig {
        host: parts.host,
        port: parts.port,
        dbname: parts.dbname.unwrap_or_else(|| parts.user.clone()),
        user: parts.user,
        url_password: parts.password.map(PgPassword),
        password_file: s.password_file.as_deref().map(|f| resolve(base, f)),
        application_name: parts
            .application_name
            .unwrap_or_else(|| "ringwatch".to_string()),
        pool: pool as usize,
        connect_timeout,
        query_timeout,
    }))
}

/// An optional duration in `1ms..=hi`, or `default`.
fn bounded(key: &str, v: &Option<String>, default: Duration, hi: Duration) -> Result<Duration> {
    let d = match v {
        None => return Ok(default),
        Some(s) => parse_duration(s).or_else(|m| err(key, m))?,
    };
    if d.is_zero() {
        return err(key, "must be greater than zero");
    }
    if d > hi {
        return err(
            key,
            format!(
                "{} is too long (maximum {})",
                format_duration(d),
                format_duration(hi)
            ),
        );
    }
    Ok(d)
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The password from `RINGWATCH_PG_PASSWORD`, else `PGPASSWORD` (empty = unset).
fn from_env() -> Option<String> {
    [PASSWORD_ENV, LIBPQ_PASSWORD_ENV]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The password from a file: either the bare password (one line, as a container or
/// Kubernetes secret is mounted, often mode 0444), or libpq's password-file format
/// (`host:port:database:user:password` lines, `*` matching anything, `\:` and `\\` escaped),
/// where the first matching line wins; like libpq, a file in that format readable by group or
/// others is refused.
fn from_file(path: &Path, cfg: &PgConfig) -> Result<Option<String>> {
    const KEY: &str = "storage.password_file";
    let text = std::fs::read_to_string(path)
        .or_else(|e| err(KEY, format!("cannot read {}: {e}", path.display())))?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let split: Vec<Vec<String>> = lines.iter().map(|l| split_pgpass(l)).collect();
    if lines.len() == 1 && split[0].len() < 5 {
        return Ok(Some(lines[0].to_string()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .or_else(|e| err(KEY, format!("cannot read {}: {e}", path.display())))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return err(
                KEY,
                format!(
                    "{} is readable by group or others (mode {mode:o}); chmod 600 it",
                    path.display()
                ),
            );
        }
    }
    let host = match &cfg.host {
        PgHost::Tcp(h) => h.clone(),
        // libpq matches a socket connection against "localhost".
        PgHost::Socket(_) => "localhost".to_string(),
    };
    let port = cfg.port.to_string();
    let (db, user) = (cfg.dbname.as_str(), cfg.user.as_str());
    for (i, fields) in split.iter().enumerate() {
        if fields.len() != 5 {
            return err(
                KEY,
                format!(
                    "{} line {}: expected host:port:database:user:password",
                    path.display(),
                    i + 1
                ),
            );
        }
        let want = [host.as_str(), port.as_str(), db, user];
        if fields.iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

/// Splits a password-file line on unescaped colons, unescaping `\:` and `\\`.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(cur)) = (chars.next(), out.last_mut()) {
                    cur.push(next);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(cur) = out.last_mut() {
                    cur.push(c);
                }
            }
        }
    }
    out
}

/// The pieces of a `postgres://user[:password]@host[:port][/dbname][?params]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UrlParts {
    host: PgHost,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: Option<String>,
    application_name: Option<String>,
}

/// Decodes `%XX` escapes (the URL form of `/` in a socket directory, `@` in a password, ...).
fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in \"{s}\""))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("\"{s}\" does not decode to UTF-8"))
}

const URL_EXAMPLE: &str = "e.g. postgres://ringwatch@db.example:5432/ringwatch";

fn parse_url(url: &str) -> std::result::Result<UrlParts, String> {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(|| format!("must start with postgres:// ({URL_EXAMPLE})"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let Some((userinfo, hostport)) = authority.rsplit_once('@') else {
        return Err(format!("names no user ({URL_EXAMPLE})"));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(percent_decode(p)?)),
        None => (userinfo, None),
    };
    let user = percent_decode(user)?;
    if user.is_empty() {
        return Err(format!("names no user ({URL_EXAMPLE})"));
    }
    if hostport.contains(',') {
        return Err("lists several hosts; ringwatch connects to one".into());
    }
    let (host, port) = split_host_port(hostport)?;
    let host = percent_decode(host)?;
    let host = if host.is_empty() {
        return Err(format!("names no host ({URL_EXAMPLE})"));
    } else if host.starts_with('/') {
        PgHost::Socket(PathBuf::from(host))
    } else {
        PgHost::Tcp(host)
    };
    let dbname = match path.map(percent_decode).transpose()? {
        Some(d) if d.contains('/') => return Err(format!("bad database name \"{d}\"")),
        Some(d) if !d.is_empty() => Some(d),
        _ => None,
    };
    let mut application_name = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k {
            "application_name" => application_name = Some(v),
            // No TLS client is built in: accept only modes that may run without it.
            "sslmode" if matches!(v.as_str(), "disable" | "allow" | "prefer") => {}
            "sslmode" => {
                return Err(format!(
                    "sslmode={v} needs TLS, which the postgres backend does not support yet \
                     (use sslmode=disable, e.g. over a private network or a Unix socket)"
                ))
            }
            "connect_timeout" => {
                return Err("set the timeout with storage.connect_timeout, not in the URL".into())
            }
            "password" | "user" | "host" | "port" | "dbname" => {
                return Err(format!("put {k} in the URL itself, not as ?{k}="))
            }
            other => {
                return Err(format!(
                    "unknown parameter \"{other}\" (known: application_name, sslmode)"
                ))
            }
        }
    }
    Ok(UrlParts {
        host,
        port,
        user,
        password,
        dbname,
        application_name,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 5432.
fn split_host_port(s: &str) -> std::result::Result<(&str, u16), String> {
    let port = |p: &str| -> std::result::Result<u16, String> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("bad port \"{p}\" (1-65535)")),
        }
    };
    if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in host \"{s}\""))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, port(p)?)),
            None if after.is_empty() => Ok((host, 5432)),
            None => Err(format!("bad host \"{s}\"")),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h, port(p)?)),
        None => Ok((s, 5432)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(yaml: &str) -> std::result::Result<Config, ConfigError> {
        Config::parse(yaml, Path::new("/etc/rw"))
    }

    fn pg(yaml: &str) -> PgConfig {
        match parse(yaml).map(|c| c.storage.kind) {
            Ok(StorageKind::Postgres(p)) => p,
            other => panic!("not postgres: {other:?}"),
        }
    }

    fn fails(yaml: &str, key: &str, needle: &str) {
        let e = parse(yaml).expect_err("should fail");
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.contains(needle), "{e}");
    }

    #[test]
    fn url_parts_defaults_and_keys() {
        let p = pg("storage: {kind: postgres, url: 'postgres://rw@db.example/mon?application_name=rw1', pool: 4, connect_timeout: 2s, retention: 30d}\n");
        assert_eq!(p.host, PgHost::Tcp("db.example".into()));
        assert_eq!(
            (p.port, p.user.as_str(), p.dbname.as_str()),
            (5432, "rw", "mon")
        );
        assert_eq!((p.pool, p.application_name.as_str()), (4, "rw1"));
        assert_eq!(p.connect_timeout, Duration::from_secs(2));
        assert_eq!(p.query_timeout, Duration::from_secs(30));
        assert_eq!(p.redacted_url(), "postgres://rw@db.example:5432/mon");

        let p = pg("storage: {kind: postgresql, url: 'postgresql://a%40b:p%3Ass@[::1]:6543'}\n");
        assert_eq!(p.host, PgHost::Tcp("::1".into()));
        assert_eq!(
            (p.port, p.user.as_str(), p.dbname.as_str()),
            (6543, "a@b", "a@b")
        );
        assert_eq!(
            p.url_password.as_ref().map(PgPassword::expose),
            Some("p:ss")
        );
        assert!(
            !format!("{p:?}").contains("p:ss"),
            "Debug shows the password"
        );
        assert_eq!(p.pool, 2);

        let p = pg("storage: {kind: postgres, url: 'postgres://rw@%2Frun%2Fpostgresql/x'}\n");
        assert_eq!(p.host, PgHost::Socket("/run/postgresql".into()));
    }

    #[test]
    fn errors_name_their_key() {
        let k = "storage: {kind: postgres, url: ";
        fails(
            &format!("{k}'postgres://db/x'}}\n"),
            "storage.url",
            "no user",
        );
        fails(
            &format!("{k}'postgres://u@db:99999/x'}}\n"),
            "storage.url",
            "bad port",
        );
        fails(
            &format!("{k}'postgres://u@a,b/x'}}\n"),
            "storage.url",
            "several hosts",
        );
        fails(
            &format!("{k}'postgres://u@db/x?sslmode=require'}}\n"),
            "storage.url",
            "TLS",
        );
        fails(
            &format!("{k}'postgres://u@db/x?foo=1'}}\n"),
            "storage.url",
            "unknown parameter",
        );
        fails(
            &format!("{k}'postgres://u@db/x', pool: 0}}\n"),
            "storage.pool",
            "1..=64",
        );
        fails(
            &format!("{k}'postgres://u@db/x', pool: 65}}\n"),
            "storage.pool",
            "out of range",
        );
        fails(
            &format!("{k}'postgres://u@db/x', connect_timeout: 0s}}\n"),
            "storage.connect_timeout",
            "greater than zero",
        );
        fails(
            &format!("{k}'postgres://u@db/x', query_timeout: soon}}\n"),
            "storage.query_timeout",
            "invalid duration",
        );
        fails(
            "storage: {pool: 3}\n",
            "storage.pool",
            "only used with kind: postgres",
        );
        fails(
            "storage: {kind: sqlite, password_file: x}\n",
            "storage.password_file",
            "only used with kind: postgres",
        );
    }

    #[test]
    fn password_files_bare_and_pgpass() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p
        };
        // These tests must not see a password from the environment of whoever runs them.
        if from_env().is_some() {
            return;
        }
        let bare = write("bare", "s3cret\n", 0o600);
        let yaml = |f: &Path, url: &str| {
            format!(
                "storage: {{kind: postgres, url: '{url}', password_file: '{}'}}\n",
                f.display()
            )
        };
        // Read when the store connects, not by `check` (the secret may not be mounted there).
        let pw = |yaml: &str| {
            pg(yaml)
                .password()
                .map(|p| p.map(|p| p.expose().to_string()))
        };
        assert_eq!(
            pw(&yaml(&bare, "postgres://rw@db/mon")),
            Ok(Some("s3cret".into()))
        );
        let missing = dir.path().join("missing");
        let e = pw(&yaml(&missing, "postgres://rw@db/mon")).expect_err("missing file");
        assert_eq!(e.key, "storage.password_file");
        assert!(e.message.contains("cannot read"), "{e}");
        // A container secret is often mounted 0444: a bare password may be readable.
        let shared = write("shared", "s3cret\n", 0o444);
        assert_eq!(
            pw(&yaml(&shared, "postgres://rw@db/mon")),
            Ok(Some("s3cret".into()))
        );

        let pgpass = write(
            "pgpass",
            "# comment\nother:5432:mon:rw:wrong\ndb:*:mon:rw:a\\:b\\\\c\n*:*:*:*:fallback\n",
            0o600,
        );
        assert_eq!(
            pw(&yaml(&pgpass, "postgres://rw@db/mon")),
            Ok(Some("a:b\\c".into()))
        );
        assert_eq!(
            pw(&yaml(&pgpass, "postgres://rw@elsewhere/mon")),
            Ok(Some("fallback".into()))
        );
        // The URL's own password wins over the file.
        assert_eq!(
            pw(&yaml(&pgpass, "postgres://rw:inline@db/mon")),
            Ok(Some("inline".into()))
        );

        // libpq's format must not be readable by others, as libpq requires.
        let open = write("open", "*:*:*:*:pw\n", 0o644);
        let e = pw(&yaml(&open, "postgres://rw@db/mon")).expect_err("mode");
        assert_eq!(e.key, "storage.password_file");
        assert!(e.message.contains("chmod 600"), "{e}");
        let bad = write("bad", "a:b:c:d:e\nshort:line\n", 0o600);
        let e = pw(&yaml(&bad, "postgres://rw@db/mon")).expect_err("format");
        assert!(e.message.contains("line 2"), "{e}");
    }
}
