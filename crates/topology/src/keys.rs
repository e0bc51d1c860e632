//! The etcd key layout. Every path Shardis reads or writes is built here, so the
//! layout is written down in exactly one place:
//!
//! ```text
//! /shardis/<cluster>/topology           the Topology document (JSON)
//! /shardis/<cluster>/topology-version   its version, as decimal text: the counter
//!                                       that transactions compare against
//! /shardis/<cluster>/proxies/<id>       a proxy's ProxyInfo, under the proxy's lease
//! /shardis/<cluster>/dashboard/leader   the active dashboard (election)
//! /shardis/<cluster>/migrations/<id>    migration records
//! ```

/// Key builder for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

/// Cluster names and proxy ids become path segments and connection names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Keys {
    /// `cluster` must satisfy [`valid_name`].
    pub fn new(cluster: &str) -> Keys {
        Keys {
            root: format!("/shardis/{cluster}"),
        }
    }
    pub fn root(&self) -> &str {
        &self.root
    }
    pub fn topology(&self) -> String {
        format!("{}/topology", self.root)
    }
    pub fn topology_version(&self) -> String {
        format!("{}/topology-version", self.root)
    }
    pub fn proxies_prefix(&self) -> String {
        format!("{}/proxies/", self.root)
    }
    pub fn proxy(&self, id: &str) -> String {
        format!("{}/proxies/{id}", self.root)
    }
    pub fn leader(&self) -> String {
        format!("{}/dashboard/leader", self.root)
    }
    pub fn migrations_prefix(&self) -> String {
        format!("{}/migrations/", self.root)
    }
    pub fn migration(&self, id: u64) -> String {
        format!("{}/migrations/{id:020}", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("prod");
        assert_eq!(k.topology(), "/shardis/prod/topology");
        assert_eq!(k.topology_version(), "/shardis/prod/topology-version");
        assert_eq!(k.proxy("p1"), "/shardis/prod/proxies/p1");
        assert!(k.proxy("p1").starts_with(&k.proxies_prefix()));
        assert!(valid_name("prod-1_a"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }
}
