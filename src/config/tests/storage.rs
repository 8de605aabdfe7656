//! `storage` and `log`: the sections a reload does not apply.

use super::*;

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let c = parse("storage: {path: data/rw.db}\n").unwrap();
    assert_eq!(
        c.storage.kind,
        StorageKind::Sqlite {
            path: "/etc/ringwatch/data/rw.db".into()
        }
    );
    let c = parse("storage: {path: /var/lib/rw.db}\n").unwrap();
    assert_eq!(
        c.storage.kind,
        StorageKind::Sqlite {
            path: "/var/lib/rw.db".into()
        }
    );
    // A missing CA file is reported with its resolved path, on the ca_file key.
    let e = fails(
        "services:\n  - {name: x, url: 'https://h/', tls: {ca_file: certs/ca.pem}}\n",
        "services[0].tls.ca_file",
        "/etc/ringwatch/certs/ca.pem",
    );
    assert_eq!(
        e.message,
        "cannot read CA file /etc/ringwatch/certs/ca.pem: No such file or directory (os error 2)"
    );
}

#[test]
fn postgres_storage() {
    let c =
        parse("storage: {kind: postgres, url: 'postgres://u:p@db/rw', retention: 30d}\n").unwrap();
    let StorageKind::Postgres(pg) = &c.storage.kind else {
        panic!("{:?}", c.storage.kind)
    };
    assert_eq!(pg.redacted_url(), "postgres://u@db:5432/rw");
    assert_eq!(c.storage.retention, Some(Duration::from_secs(30 * 86_400)));
    fails("storage: {kind: postgres}\n", "storage.url", "required");
    fails(
        "storage: {kind: postgres, url: 'mysql://x'}\n",
        "storage.url",
        "postgres://",
    );
    fails(
        "storage: {url: 'postgres://x'}\n",
        "storage.url",
        "only used with kind: postgres",
    );
    fails(
        "storage: {retention: 5m}\n",
        "storage.retention",
        "minimum 1h",
    );
}

#[test]
fn bad_storage_kind() {
    fails(
        "storage: {kind: mysql}\n",
        "storage.kind",
        "expected sqlite or postgres",
    );
    fails(
        "storage: {batch_size: 10, queue_capacity: 5}\n",
        "storage.batch_size",
        "larger",
    );
}

#[test]
fn bad_log_section() {
    fails("log: {format: xml}\n", "log.format", "text or json");
    fails(
        "log: {level: 'ringwatch=[bad'}\n",
        "log.level",
        "invalid filter",
    );
    let c = parse("log: {level: 'ringwatch=debug,warn', format: json}\n").unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
}
