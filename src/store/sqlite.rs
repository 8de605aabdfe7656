//! SQLite backend (rusqlite, bundled, WAL): the default, embedded store.
