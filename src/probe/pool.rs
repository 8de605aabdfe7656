//! Keep-alive connection pool, per shard, keyed by target (address, scheme, host).
