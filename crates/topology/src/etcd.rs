//! `EtcdStore`: the `Store` on etcd's v3 API (tested against etcd 3.4).
//!
//! Every unary request runs under the store's request timeout, so no caller
//! hangs on an etcd that stopped answering; every failure to talk to etcd is
//! `StoreError::Unavailable` with the request and the endpoints in its text.
//!
//! The topology watch is a background task that survives disconnects: it
//! resumes from the last revision it saw, and reloads the document when etcd
//! says that revision was compacted away (see [`EtcdStore::watch_topology`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::keys::{valid_name, Keys};
use crate::migration::Migration;
use crate::model::{ProxyInfo, Topology};
use crate::store::{
    check_next, check_proxy, LeaderEntry, LeaseId, Store, StoreError, TopologyWatch,
};

/// How long `connect` waits for etcd to answer at all.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any single request waits for its answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings on open streams, so that a watch on a connection that died
/// silently (no RST: a partition, a dead host) errors out instead of waiting
/// forever. etcd refuses pings more often than every 5 s (its default
/// `--grpc-keepalive-min-time`) and pings without an open stream, so pings are
/// only sent while a stream is open.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(10);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between attempts to re-establish the topology watch.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(200);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A client of one etcd cluster, scoped to one Shardis cluster's keys. Cheap to
/// clone; clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    /// For error messages only.
    endpoints: Arc<str>,
    request_timeout: Duration,
    /// Open keep-alive streams, one per lease this process keeps alive, so a
    /// keep-alive is one round trip. A stream that fails is dropped and opened
    /// anew on the next call (that is how keep-alives survive reconnects).
    keepers: Arc<Mutex<HashMap<LeaseId, Keeper>>>,
}

struct Keeper {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("root", &self.keys.root())
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// How one watch stream ended.
enum WatchEnd {
    /// Every receiver is gone: the watch task is done.
    Closed,
    /// etcd canceled the watch, `compacted` if because the revision to resume
    /// from is gone: the document must be reloaded.
    Canceled { compacted: bool },
    /// The stream broke (etcd down, connection lost): resume after a pause.
    Broken(String),
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port` or `host:port`) for
    /// the Shardis cluster `cluster`, and checks that etcd answers, within
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(endpoints: &[String], cluster: &str) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect_with(
            endpoints,
            cluster,
            DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_REQUEST_TIMEOUT,
        )
        .await
    }

    /// [`EtcdStore::connect`] with explicit timeouts.
    pub async fn connect_with(
        endpoints: &[String],
        cluster: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<EtcdStore, StoreError> {
        if !valid_name(cluster) {
            return Err(StoreError::Invalid(format!(
                "cluster name {cluster:?} must be 1-64 characters of [A-Za-z0-9_-]"
            )));
        }
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints given".into()));
        }
        let joined: Arc<str> = endpoints.join(",").into();
        let options = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            .with_keep_alive(HTTP2_PING_INTERVAL, HTTP2_PING_TIMEOUT);
        let client =
            match tokio::time::timeout(connect_timeout, Client::connect(endpoints, Some(options)))
                .await
            {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to etcd at {joined}: {e}"
                    )))
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to etcd at {joined}: no answer within {connect_timeout:?}"
                    )))
                }
            };
        let store = EtcdStore {
            client,
            keys: Keys::new(cluster),
            endpoints: joined,
            request_timeout: connect_timeout,
            keepers: Arc::new(Mutex::new(HashMap::new())),
        };
        // The channel connects lazily: make one real request, so that a wrong
        // address fails here and not at the first use.
        let probe = store.keys.topology_version();
        let mut kv = store.client.kv_client();
        store
            .call(
                "connect",
                None,
                kv.get(probe, Some(GetOptions::new().with_count_only())),
            )
            .await?;
        Ok(EtcdStore {
            request_timeout,
            ..store
        })
    }

    /// The key layout of this store's cluster.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The underlying client, for what the store does not wrap (elections, locks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    // ---- generic helpers ------------------------------------------------------

    /// The JSON value at `key` and its `mod_revision` (for [`EtcdStore::put_json_if`]),
    /// or `None` when the key does not exist.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(&format!("get {key}"), None, kv.get(key, None))
            .await?;
        match resp.kvs().first() {
            None => Ok(None),
            Some(found) => Ok(Some((decode(key, found.value())?, found.mod_revision()))),
        }
    }

    /// Every key under `prefix` with its JSON value, in key order. One corrupt
    /// value fails the whole listing.
    pub async fn list_json<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                &format!("list {prefix}"),
                None,
                kv.get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        resp.kvs()
            .iter()
            .map(|found| {
                let key = String::from_utf8_lossy(found.key()).into_owned();
                let value = decode(&key, found.value())?;
                Ok((key, value))
            })
            .collect()
    }

    /// Writes `value` as JSON at `key` (no lease).
    pub async fn put_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let json = encode(key, value)?;
        let mut kv = self.client.kv_client();
        self.call(&format!("put {key}"), None, kv.put(key, json, None))
            .await?;
        Ok(())
    }

    /// Writes `value` as JSON at `key` if and only if the key's `mod_revision`
    /// is still `mod_revision` (0: the key must not exist), in one transaction.
    /// Returns the new `mod_revision`, or `None` when the guard failed and
    /// nothing was written.
    pub async fn put_json_if<T: Serialize>(
        &self,
        key: &str,
        mod_revision: i64,
        value: &T,
    ) -> Result<Option<i64>, StoreError> {
        let json = encode(key, value)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::put(key, json, None)]);
        let mut kv = self.client.kv_client();
        let resp = self
            .call(&format!("guarded put {key}"), None, kv.txn(txn))
            .await?;
        if !resp.succeeded() {
            return Ok(None);
        }
        match resp.header() {
            Some(header) => Ok(Some(header.revision())),
            None => Err(self.unavailable(&format!("guarded put {key}"), "answer has no header")),
        }
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut kv = self.client.kv_client();
        let resp = self
            .call(&format!("delete {key}"), None, kv.delete(key, None))
            .await?;
        Ok(resp.deleted() > 0)
    }

    // ---- internals ------------------------------------------------------------

    /// Runs one etcd request under the request timeout and maps its errors.
    /// With `lease`, etcd's "lease not found" becomes `LeaseExpired(lease)`.
    async fn call<T>(
        &self,
        what: &str,
        lease: Option<LeaseId>,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => match lease {
                // etcd says "etcdserver: requested lease not found"; etcd-client's
                // keep-alive says "lease not found".
                Some(lease) if e.to_string().contains("lease not found") => {
                    Err(StoreError::LeaseExpired(lease))
                }
                _ => Err(self.unavailable(what, e)),
            },
            Err(_) => Err(self.unavailable(
                what,
                format_args!("no answer within {:?}", self.request_timeout),
            )),
        }
    }

    fn unavailable(&self, what: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!("etcd {what} (at {}): {reason}", self.endpoints))
    }

    /// The raw topology document (if any) and the revision the read saw.
    async fn get_topology(&self) -> Result<(Option<Vec<u8>>, i64), StoreError> {
        let key = self.keys.topology();
        let mut kv = self.client.kv_client();
        let mut resp = self
            .call(&format!("get {key}"), None, kv.get(key.as_str(), None))
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let value = resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|found| found.into_key_value().1);
        Ok((value, revision))
    }

    /// The background half of `watch_topology`: follows the topology key from
    /// `revision + 1` until every receiver is gone.
    async fn follow_topology(self, tx: watch::Sender<Option<Arc<Topology>>>, mut revision: i64) {
        let key = self.keys.topology();
        let mut backoff = WATCH_BACKOFF_MIN;
        let mut reload = false;
        loop {
            if reload {
                match self.get_topology().await {
                    Ok((value, at)) => {
                        if let Some(value) = value {
                            match decode_topology(&key, &value) {
                                Ok(topology) => {
                                    publish(&tx, topology);
                                }
                                Err(e) => warn!("ignoring the stored topology: {e}"),
                            }
                        }
                        revision = at;
                        reload = false;
                    }
                    Err(e) => {
                        warn!("topology watch cannot reload: {e}");
                        if !pause(&tx, &mut backoff).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            match self
                .watch_from(&tx, &key, &mut revision, &mut backoff)
                .await
            {
                WatchEnd::Closed => return,
                WatchEnd::Canceled { compacted } => {
                    reload = true;
                    // A compaction cannot recur right after a reload: go at once.
                    if !compacted && !pause(&tx, &mut backoff).await {
                        return;
                    }
                }
                WatchEnd::Broken(reason) => {
                    warn!(
                        "topology watch on {} lost ({reason}); resuming from revision {}",
                        self.endpoints,
                        revision + 1
                    );
                    if !pause(&tx, &mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// One watch stream, from `revision + 1` until it ends. Advances `revision`
    /// past every event seen, so that the next stream resumes after it.
    async fn watch_from(
        &self,
        tx: &watch::Sender<Option<Arc<Topology>>>,
        key: &str,
        revision: &mut i64,
        backoff: &mut Duration,
    ) -> WatchEnd {
        let mut client = self.client.watch_client();
        let options = WatchOptions::new().with_start_revision(*revision + 1);
        let mut stream = tokio::select! {
            _ = tx.closed() => return WatchEnd::Closed,
            opened = tokio::time::timeout(self.request_timeout, client.watch(key, Some(options))) => {
                match opened {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return WatchEnd::Broken(e.to_string()),
                    Err(_) => return WatchEnd::Broken(format!(
                        "no answer within {:?}", self.request_timeout)),
                }
            }
        };
        loop {
            let message = tokio::select! {
                _ = tx.closed() => return WatchEnd::Closed,
                message = stream.message() => message,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return WatchEnd::Broken("etcd ended the watch stream".into()),
                Err(e) => return WatchEnd::Broken(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                info!(
                    "topology watch: revision {} was compacted (now {}); reloading",
                    *revision + 1,
                    resp.compact_revision()
                );
                return WatchEnd::Canceled { compacted: true };
            }
            if resp.canceled() {
                warn!(
                    "etcd canceled the topology watch ({}); reloading",
                    resp.cancel_reason()
                );
                return WatchEnd::Canceled { compacted: false };
            }
            if resp.created() {
                // Only confirms the watch: it carries no events.
                debug!("topology watch established from revision {}", *revision + 1);
                *backoff = WATCH_BACKOFF_MIN;
                continue;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                *revision = (*revision).max(kv.mod_revision());
                match event.event_type() {
                    EventType::Put => match decode_topology(key, kv.value()) {
                        Ok(topology) => {
                            publish(tx, topology);
                        }
                        Err(e) => warn!("ignoring a topology update: {e}"),
                    },
                    EventType::Delete => {
                        warn!("the topology key {key} was deleted; keeping the last version seen")
                    }
                }
            }
        }
    }

    /// One transaction: if the version key still holds `expected` (is absent,
    /// for 0) and, with `leader_lease`, the leader key lives under that lease,
    /// put the document and the new version; otherwise read the version and
    /// the leader key, to say which guard failed.
    ///
    /// `Unavailable` (a timeout, a lost connection) leaves the outcome
    /// unknown: the write may have been applied. Reload to find out.
    async fn save(
        &self,
        leader_lease: Option<LeaseId>,
        expected: u64,
        next: &Topology,
    ) -> Result<(), StoreError> {
        check_next(expected, next)?;
        let topology_key = self.keys.topology();
        let version_key = self.keys.topology_version();
        let leader_key = self.keys.leader();
        let json = encode(&topology_key, next)?;
        let mut guards = vec![if expected == 0 {
            Compare::create_revision(version_key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::value(version_key.as_str(), CompareOp::Equal, expected.to_string())
        }];
        if let Some(lease) = leader_lease {
            guards.push(Compare::lease(leader_key.as_str(), CompareOp::Equal, lease));
        }
        let txn = Txn::new()
            .when(guards)
            .and_then([
                TxnOp::put(topology_key.as_str(), json, None),
                TxnOp::put(version_key.as_str(), next.version.to_string(), None),
            ])
            .or_else([
                TxnOp::get(version_key.as_str(), None),
                TxnOp::get(leader_key.as_str(), None),
            ]);
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                &format!("save of topology version {}", next.version),
                None,
                kv.txn(txn),
            )
            .await?;
        if resp.succeeded() {
            return Ok(());
        }
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        });
        let (version_get, leader_get) = (gets.next(), gets.next());
        if let Some(lease) = leader_lease {
            let held_by = leader_get
                .as_ref()
                .and_then(|get| get.kvs().first())
                .map(|kv| kv.lease());
            if held_by != Some(lease) {
                return Err(StoreError::NotLeader(match held_by {
                    None => "no dashboard holds the leadership".to_string(),
                    Some(other) => format!("the leadership is held under lease {other:x}"),
                }));
            }
        }
        let found = match version_get.as_ref().and_then(|get| get.kvs().first()) {
            None => 0,
            Some(found) => parse_version(&version_key, found.value())?,
        };
        if found == expected {
            // The compare failed on text that still parses as `expected`
            // (say "07"): only a hand-made value can look like that.
            return Err(StoreError::Corrupt {
                key: version_key,
                reason: format!("version text is not the canonical form of {found}"),
            });
        }
        Err(StoreError::Conflict { expected, found })
    }

    /// One keep-alive on an open stream: the granted TTL, or `None` when etcd
    /// says the lease is gone.
    async fn keep_alive_on(
        &self,
        keeper: &mut Keeper,
        lease: LeaseId,
    ) -> Result<Option<Duration>, StoreError> {
        let what = format!("keep-alive of lease {lease:x}");
        let exchange = async {
            keeper.keeper.keep_alive().await?;
            keeper.stream.message().await
        };
        match self.call(&what, Some(lease), exchange).await? {
            None => Err(self.unavailable(&what, "the keep-alive stream ended")),
            Some(resp) if resp.ttl() <= 0 => Ok(None),
            Some(resp) => Ok(Some(Duration::from_secs(resp.ttl().unsigned_abs()))),
        }
    }
}

/// Publishes `topology` unless the receivers already have it or a newer one.
fn publish(tx: &watch::Sender<Option<Arc<Topology>>>, topology: Topology) -> bool {
    tx.send_if_modified(|current| {
        if current
            .as_ref()
            .is_some_and(|c| c.version >= topology.version)
        {
            return false;
        }
        *current = Some(Arc::new(topology));
        true
    })
}

/// Sleeps for the current backoff, then doubles it. `false` when every
/// receiver went away meanwhile.
async fn pause(tx: &watch::Sender<Option<Arc<Topology>>>, backoff: &mut Duration) -> bool {
    let wait = *backoff;
    *backoff = (wait * 2).min(WATCH_BACKOFF_MAX);
    tokio::select! {
        _ = tx.closed() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|e| StoreError::Invalid(format!("cannot encode the value for {key}: {e}")))
}

/// A stored topology must parse and be valid: proxies apply what they read.
fn decode_topology(key: &str, value: &[u8]) -> Result<Topology, StoreError> {
    let topology: Topology = decode(key, value)?;
    topology.validate().map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: format!("version {}: {e}", topology.version),
    })?;
    Ok(topology)
}

fn parse_version(key: &str, value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: key.to_string(),
            reason: format!(
                "{:?} is not a version number",
                String::from_utf8_lossy(value)
            ),
        })
}

/// TTLs are whole seconds in etcd: round up, so a lease never lives shorter
/// than asked.
fn ttl_seconds(ttl: Duration) -> Result<i64, StoreError> {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    match i64::try_from(secs) {
        Ok(secs) if secs > 0 => Ok(secs),
        _ => Err(StoreError::Invalid(format!(
            "lease TTL {ttl:?} is out of range"
        ))),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn load_topology(&self) -> Result<Option<Topology>, StoreError> {
        let (value, _) = self.get_topology().await?;
        value
            .map(|v| decode_topology(&self.keys.topology(), &v))
            .transpose()
    }

    /// See `EtcdStore::save`. `Unavailable` (a timeout, a lost connection)
    /// leaves the outcome unknown: the write may have been applied. Reload to
    /// find out.
    async fn save_topology(&self, expected: u64, next: &Topology) -> Result<(), StoreError> {
        self.save(None, expected, next).await
    }

    /// The same transaction as `save_topology`, with one more compare: the
    /// leader key must live under `leader_lease` (etcd compares a missing
    /// key's lease as 0, which no granted lease is).
    async fn save_topology_as_leader(
        &self,
        leader_lease: LeaseId,
        expected: u64,
        next: &Topology,
    ) -> Result<(), StoreError> {
        self.save(Some(leader_lease), expected, next).await
    }

    /// Create-if-absent: `create_revision == 0` means the key does not exist.
    /// When it does, the `else` branch reads it to tell whether it is ours.
    async fn acquire_leadership(&self, lease: LeaseId, value: &str) -> Result<bool, StoreError> {
        let key = self.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut kv = self.client.kv_client();
        let resp = self
            .call(&format!("campaign for {key}"), Some(lease), kv.txn(txn))
            .await?;
        if resp.succeeded() {
            return Ok(true);
        }
        let held_by = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
                _ => None,
            })
            .unwrap_or(0);
        Ok(held_by == lease)
    }

    async fn leader(&self) -> Result<Option<LeaderEntry>, StoreError> {
        let key = self.keys.leader();
        let mut kv = self.client.kv_client();
        let resp = self
            .call(&format!("get {key}"), None, kv.get(key.as_str(), None))
            .await?;
        Ok(resp.kvs().first().map(|found| LeaderEntry {
            value: String::from_utf8_lossy(found.value()).into_owned(),
            lease: found.lease(),
        }))
    }

    /// Reads the current document (an error if etcd cannot be read or the
    /// document is corrupt), then follows changes in a background task, which
    /// ends when every receiver is dropped. The receiver only ever moves to
    /// newer versions: a deleted or corrupt document is logged and skipped.
    async fn watch_topology(&self) -> Result<TopologyWatch, StoreError> {
        let (value, revision) = self.get_topology().await?;
        let current = value
            .map(|v| decode_topology(&self.keys.topology(), &v))
            .transpose()?;
        let (tx, rx) = watch::channel(current.map(Arc::new));
        tokio::spawn(self.clone().follow_topology(tx, revision));
        Ok(rx)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl_seconds(ttl)?;
        let mut leases = self.client.lease_client();
        let resp = self
            .call(
                &format!("grant of a {secs} s lease"),
                None,
                leases.grant(secs, None),
            )
            .await?;
        if !resp.error().is_empty() {
            return Err(self.unavailable("lease grant", resp.error()));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let cached = self.keepers.lock().remove(&lease);
        if let Some(mut keeper) = cached {
            match self.keep_alive_on(&mut keeper, lease).await {
                Ok(Some(ttl)) => {
                    self.keepers.lock().insert(lease, keeper);
                    return Ok(ttl);
                }
                Ok(None) => return Err(StoreError::LeaseExpired(lease)),
                Err(StoreError::LeaseExpired(_)) => return Err(StoreError::LeaseExpired(lease)),
                // Most likely the connection was reset under the stream: open
                // a new one below.
                Err(e) => debug!("keep-alive stream of lease {lease:x} failed ({e}); reopening"),
            }
        }
        let mut leases = self.client.lease_client();
        // Opening the stream sends a first keep-alive and checks its answer
        // (but does not hand over the TTL it carries).
        let (keeper, stream) = self
            .call(
                &format!("keep-alive of lease {lease:x}"),
                Some(lease),
                leases.keep_alive(lease),
            )
            .await?;
        let mut keeper = Keeper { keeper, stream };
        match self.keep_alive_on(&mut keeper, lease).await? {
            Some(ttl) => {
                self.keepers.lock().insert(lease, keeper);
                Ok(ttl)
            }
            None => Err(StoreError::LeaseExpired(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.keepers.lock().remove(&lease);
        let mut leases = self.client.lease_client();
        self.call(
            &format!("revoke of lease {lease:x}"),
            Some(lease),
            leases.revoke(lease),
        )
        .await?;
        Ok(())
    }

    async fn list_migrations(&self) -> Result<Vec<Migration>, StoreError> {
        let found: Vec<(String, Migration)> =
            self.list_json(&self.keys.migrations_prefix()).await?;
        let mut all: Vec<Migration> = found.into_iter().map(|(_, m)| m).collect();
        all.sort_by_key(|m| m.id);
        Ok(all)
    }

    /// One transaction: the put only happens while the leader key lives
    /// under `leader_lease`.
    async fn save_migration_as_leader(
        &self,
        leader_lease: LeaseId,
        migration: &Migration,
    ) -> Result<(), StoreError> {
        let key = self.keys.migration(migration.id);
        let leader_key = self.keys.leader();
        let json = encode(&key, migration)?;
        let txn = Txn::new()
            .when([Compare::lease(
                leader_key.as_str(),
                CompareOp::Equal,
                leader_lease,
            )])
            .and_then([TxnOp::put(key.as_str(), json, None)]);
        let mut kv = self.client.kv_client();
        let resp = self
            .call(&format!("save of {key}"), None, kv.txn(txn))
            .await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(StoreError::NotLeader(format!(
                "the leader entry is not held under lease {leader_lease:x}"
            )))
        }
    }

    async fn put_proxy(&self, lease: LeaseId, info: &ProxyInfo) -> Result<(), StoreError> {
        check_proxy(info)?;
        let info = ProxyInfo {
            lease,
            ..info.clone()
        };
        let key = self.keys.proxy(&info.id);
        let json = encode(&key, &info)?;
        let mut kv = self.client.kv_client();
        self.call(
            &format!("put {key}"),
            Some(lease),
            kv.put(
                key.as_str(),
                json,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        Ok(())
    }

    /// A corrupt registration is logged and left out: one bad entry must not
    /// hide every other proxy from the control plane.
    async fn list_proxies(&self) -> Result<Vec<ProxyInfo>, StoreError> {
        let prefix = self.keys.proxies_prefix();
        let mut kv = self.client.kv_client();
        let resp = self
            .call(
                &format!("list {prefix}"),
                None,
                kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut proxies = Vec::with_capacity(resp.kvs().len());
        for found in resp.kvs() {
            let key = String::from_utf8_lossy(found.key());
            let mut info: ProxyInfo = match decode(&key, found.value()) {
                Ok(info) => info,
                Err(e) => {
                    warn!("skipping a proxy registration: {e}");
                    continue;
                }
            };
            if key.strip_prefix(prefix.as_str()) != Some(info.id.as_str()) {
                warn!(
                    "skipping the proxy registration at {key}: it names proxy {:?}",
                    info.id
                );
                continue;
            }
            // The lease the key really lives under, whatever the JSON says.
            info.lease = found.lease();
            proxies.push(info);
        }
        proxies.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(proxies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_secs(2)).unwrap(), 2);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)).unwrap(), 2);
        assert_eq!(ttl_seconds(Duration::from_millis(1)).unwrap(), 1);
        assert!(ttl_seconds(Duration::ZERO).is_err());
        assert!(ttl_seconds(Duration::MAX).is_err());
    }

    #[test]
    fn versions_parse_strictly() {
        assert_eq!(parse_version("k", b"12").unwrap(), 12);
        assert!(parse_version("k", b"").is_err());
        assert!(parse_version("k", b"-1").is_err());
        assert!(parse_version("k", b"x").is_err());
    }

    #[test]
    fn publish_only_moves_forward() {
        let (tx, rx) = watch::channel(None);
        let at = |version| Topology {
            version,
            ..Topology::default()
        };
        assert!(publish(&tx, at(2)));
        assert!(!publish(&tx, at(2)));
        assert!(!publish(&tx, at(1)));
        assert!(publish(&tx, at(3)));
        assert_eq!(rx.borrow().as_ref().map(|t| t.version), Some(3));
    }

    #[tokio::test]
    async fn connect_refuses_bad_names_and_dead_endpoints() {
        assert!(matches!(
            EtcdStore::connect(&["127.0.0.1:1".to_string()], "a/b").await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            EtcdStore::connect(&[], "c").await,
            Err(StoreError::Invalid(_))
        ));
        // Port 1 on loopback: refused at once (or, at worst, the connect timeout).
        let err = EtcdStore::connect_with(
            &["127.0.0.1:1".to_string()],
            "c",
            Duration::from_millis(500),
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
