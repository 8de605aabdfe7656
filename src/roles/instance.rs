//! One process per port and per database: locks held for the process's life.
//!
//! The shards' listeners use SO_REUSEPORT, so a second ringwatch on the same port would bind
//! without complaint and the kernel would split the clients between the two; two processes on
//! one SQLite file would both number transitions from the same maximum. Both are refused at
//! start, with a message naming the port or the file.
//!
//! - The port: an abstract-namespace Unix socket named after it (`@ringwatch/port/8080`). It
//!   belongs to this process's network namespace, like the port itself, and the kernel frees it
//!   when the process dies, even by `kill -9`, so there is no stale lock file to clean up.
//!   It is keyed by port, not address: two ringwatch processes on one port of one host are
//!   refused whatever addresses they name.
//! - The SQLite file: an exclusive `flock` on the database file itself. SQLite locks with
//!   `fcntl`, which on Linux is independent of `flock`, so this does not get in the way of
//!   the store's own connections or of an operator's `sqlite3` shell.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::config::{StorageConfig, StorageKind};

/// Why this process may not run as configured.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another ringwatch holds the port.
    #[error("another ringwatch is already serving port {port} (server.listen {addr}); stop it or choose another port")]
    PortTaken {
        /// The configured address.
        addr: SocketAddr,
        /// Its port.
        port: u16,
    },
    /// Another process holds the SQLite file.
    #[error("another ringwatch is already using the database {} (storage.path); stop it or choose another file", path.display())]
    StoreTaken {
        /// The database file.
        path: PathBuf,
    },
    /// The lock could not be taken for another reason.
    #[error("cannot lock {what}: {source}")]
    Os {
        /// What was being locked.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Held for the life of the process; dropping it releases the locks.
#[derive(Debug)]
pub struct InstanceLock {
    _port: UnixListener,
    _store: Option<File>,
}

impl InstanceLock {
    /// Takes the port lock for `addr` and, for SQLite, the database file lock.
    pub fn acquire(
        addr: SocketAddr,
        storage: &StorageConfig,
    ) -> Result<InstanceLock, InstanceError> {
        let port = lock_port(addr)?;
        let store = match &storage.kind {
            StorageKind::Sqlite { path } => Some(lock_file(path)?),
            // A database server serves many processes; a standalone one on PostgreSQL is
            // guarded by the store itself.
            StorageKind::Postgres { .. } => None,
        };
        Ok(InstanceLock {
            _port: port,
            _store: store,
        })
    }
}

fn lock_port(addr: SocketAddr) -> Result<UnixListener, InstanceError> {
    let name = format!("ringwatch/port/{}", addr.port());
    let sock =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(|source| {
            InstanceError::Os {
                what: format!("port {}", addr.port()),
                source,
            }
        })?;
    UnixListener::bind_addr(&sock).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => InstanceError::PortTaken {
            addr,
            port: addr.port(),
        },
        _ => InstanceError::Os {
            what: format!("port {}", addr.port()),
            source,
        },
    })
}

fn lock_file(path: &Path) -> Result<File, InstanceError> {
    let os = |source| InstanceError::Os {
        what: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(os)?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(os)?;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => InstanceError::StoreTaken {
                path: path.to_path_buf(),
            },
            _ => os(err),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sqlite(path: &Path) -> StorageConfig {
        StorageConfig {
            kind: StorageKind::Sqlite {
                path: path.to_path_buf(),
            },
            queue_capacity: 1,
            batch_size: 1,
            flush_interval: Duration::from_millis(1),
            retention: None,
        }
    }

    #[test]
    fn a_second_lock_on_the_port_or_the_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let first = InstanceLock::acquire(port, &sqlite(&dir.path().join("a.db"))).expect("first");
        let e = InstanceLock::acquire(port, &sqlite(&dir.path().join("b.db"))).unwrap_err();
        assert!(matches!(e, InstanceError::PortTaken { .. }), "{e}");
        assert!(e.to_string().contains(&port.port().to_string()));
        let other = SocketAddr::from(([127, 0, 0, 1], 0));
        let e = InstanceLock::acquire(other, &sqlite(&dir.path().join("a.db"))).unwrap_err();
        assert!(matches!(e, InstanceError::StoreTaken { .. }), "{e}");
        assert!(e.to_string().contains("a.db"));
        drop(first);
        assert!(InstanceLock::acquire(port, &sqlite(&dir.path().join("a.db"))).is_ok());
    }
}
