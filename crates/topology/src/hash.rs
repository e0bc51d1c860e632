//! The slot hash: which of the 1024 slots a key belongs to.
//!
//! CRC32 (IEEE) of the key's hash tag, modulo 1024. The hash tag follows Redis
//! Cluster's rule so that applications already using `{user:1}:name` style keys
//! keep their multi-key commands working: if the key contains a `{` and a later
//! `}` with at least one byte between them, only those bytes are hashed.

/// Number of slots in every Shardis cluster. Fixed: changing it would move every key.
pub const SLOT_COUNT: usize = 1024;

/// The part of `key` that is hashed.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = key.get(open + 1..).unwrap_or_default();
        if let Some(close) = rest.iter().position(|&b| b == b'}') {
            if close > 0 {
                return rest.get(..close).unwrap_or(key);
            }
        }
    }
    key
}

/// The slot of `key`, in `0..SLOT_COUNT`.
#[inline]
pub fn slot_of(key: &[u8]) -> u16 {
    (crc32fast::hash(hash_tag(key)) % SLOT_COUNT as u32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"foo"), b"foo");
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"{"), b"{");
        assert_eq!(hash_tag(b"}{"), b"}{");
        assert_eq!(hash_tag(b""), b"");
    }

    /// Pinned vectors: changing any of these would silently move keys between groups
    /// in every existing cluster.
    #[test]
    fn pinned_slots() {
        assert_eq!(slot_of(b"foo"), 289);
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926); // the IEEE check value
        assert_eq!(slot_of(b"123456789"), 294);
        assert_eq!(slot_of(b"bar"), 170);
        assert_eq!(slot_of(b"hello"), 646);
        assert_eq!(slot_of(b"key:1"), 1004);
        assert_eq!(slot_of(b"user:1000"), 995);
        assert_eq!(slot_of(b"{user:1000}:followers"), 995);
        assert_eq!(slot_of(b"{foo}bar"), 289);
        assert_eq!(slot_of(b"x{foo}"), 289);
        assert_eq!(slot_of(b""), 0);
    }

    #[test]
    fn every_slot_in_range() {
        for i in 0..10_000u32 {
            let key = format!("key:{i}");
            assert!((slot_of(key.as_bytes()) as usize) < SLOT_COUNT);
        }
    }
}
