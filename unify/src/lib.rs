//! No code: see Cargo.toml (feature unification across the workspace's builds).
