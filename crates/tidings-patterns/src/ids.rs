//! Names that must not collide between processes: consumers, reply queues,
//! correlation ids.

/// `len` random bytes as lowercase hex.
pub(crate) fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    // Without an entropy source the process id and clock still keep names
    // apart between processes.
    if getrandom::fill(&mut bytes).is_err() {
        let seed = u128::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seed.to_le_bytes()[i % 16];
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `prefix-<pid>-<random>`: unique per process and per call.
pub(crate) fn process_unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), random_hex(4))
}
