//! PostgreSQL for integration tests: a database of its own on the shared server (dropped at
//! the end), and a private server (initdb + pg_ctl on a free port in a temp dir) for tests
//! that stop and restart it. The shared server is the one `scripts/test.sh` starts:
//! `RINGWATCH_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/test` (trust auth).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The shared server's admin URL.
pub fn admin_url() -> String {
    std::env::var("RINGWATCH_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `url` with its database replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("url has a path");
    format!("{base}/{db}")
}

/// Runs `sql` (one or more statements, no results) on `url`.
pub fn exec(url: &str, sql: &str) -> Result<(), String> {
    run(url, |c| async move {
        c.batch_execute(sql).await.map(|_| Vec::new())
    })
    .map(|_| ())
}

/// The first column of the first row of `sql` as an i64.
pub fn scalar(url: &str, sql: &str) -> i64 {
    let rows = run(url, |c| async move { c.query(sql, &[]).await }).expect(sql);
    let row = rows.first().unwrap_or_else(|| panic!("no row: {sql}"));
    row.try_get::<_, i64>(0)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The first column of every row of `sql` as i64s.
pub fn column(url: &str, sql: &str) -> Vec<i64> {
    run(url, |c| async move { c.query(sql, &[]).await })
        .expect(sql)
        .iter()
        .map(|r| r.try_get::<_, i64>(0).expect("i64 column"))
        .collect()
}

fn run<F, Fut>(url: &str, f: F) -> Result<Vec<tokio_postgres::Row>, String>
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
        let (client, conn) = tokio::time::timeout(Duration::from_secs(10), connect)
            .await
            .map_err(|_| format!("connect to {url} timed out"))?
            .map_err(|e| format!("connect to {url}: {e} ({e:?})"))?;
        let task = tokio::spawn(conn);
        let out = f(client).await.map_err(|e| format!("{e} ({e:?})"));
        task.abort();
        out
    })
}

/// A database of its own on the shared server; dropped (with its connections) on drop.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub fn create() -> PgDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "rw_it_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin_url();
        exec(&admin, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("PostgreSQL is needed for this test (scripts/test.sh starts it): {e}")
        });
        PgDb {
            url: with_db(&admin, &name),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = exec(
            &admin_url(),
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Where the server binaries are: on PATH, else Debian's versioned directory.
fn pg_bin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            let mut v: Vec<PathBuf> = d
                .flatten()
                .map(|e| e.path().join("bin").join(name))
                .collect();
            v.sort();
            v.reverse();
            v
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(debian)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (install postgresql)"))
}

/// Runs a server binary as the `postgres` OS user when we are root (the server refuses to
/// run as root), else as ourselves.
fn as_postgres(bin: &str, args: &[&str]) -> Output {
    let is_root = unsafe { libc::geteuid() } == 0;
    let bin = pg_bin(bin);
    let mut cmd = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.args(args).output().expect("run postgres binary")
}

/// A private PostgreSQL server in a temp dir on a free port, for tests that stop it.
pub struct PrivatePg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
}

impl PrivatePg {
    /// initdb (trust auth, no fsync) and start.
    pub fn start() -> PrivatePg {
        let dir = tempfile::tempdir().expect("tempdir");
        if unsafe { libc::geteuid() } == 0 {
            let pw = c"postgres";
            // SAFETY: getpwnam with a valid C string; the result is read before any other call.
            let pwd = unsafe { libc::getpwnam(pw.as_ptr()) };
            assert!(!pwd.is_null(), "no postgres OS user");
            let (uid, gid) = unsafe { ((*pwd).pw_uid, (*pwd).pw_gid) };
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let out = as_postgres(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "-N",
                "-E",
                "UTF8",
                "-D",
                path(&data),
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PrivatePg {
            log: dir.path().join("server.log"),
            port: super::free_port(),
            data,
            _dir: dir,
        };
        pg.up();
        pg
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            path(self.data.parent().expect("dir"))
        );
        let out = as_postgres(
            "pg_ctl",
            &[
                "-D",
                path(&self.data),
                "-l",
                path(&self.log),
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Stops the server (fast: sessions are terminated, like a restart in production).
    pub fn down(&self) {
        let out = as_postgres(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Admin URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_postgres(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The first row of `sql` as text columns.
pub fn text_row(url: &str, sql: &str) -> Vec<String> {
    let rows = run(url, |c| async move { c.query(sql, &[]).await }).expect(sql);
    let row = rows.first().unwrap_or_else(|| panic!("no row: {sql}"));
    (0..row.len())
        .map(|i| row.try_get::<_, String>(i).unwrap_or_default())
        .collect()
}
