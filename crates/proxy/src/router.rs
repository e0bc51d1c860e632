//! The slot table: an immutable snapshot of "which server answers slot S",
//! swapped atomically when the topology changes.
//!
//! Sessions take a snapshot (`Router::load`) for the few microseconds it takes
//! to route and queue a read-batch, then drop it. That is what makes the
//! drain cheap and exact: after a swap, once no session holds the old snapshot
//! any more, everything routed with it is already queued on a backend
//! connection, and a marker sent down every connection resolves when all of it
//! has been answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use shardis_topology::{GroupId, SlotState, Topology, SLOT_COUNT};
use tokio::sync::watch;

use crate::backend::{BackendOptions, Server, ServerFacts};

/// What to do with a request for one slot.
#[derive(Clone)]
pub enum SlotRoute {
    /// Send it to this group's master.
    Serve { group: GroupId, server: Arc<Server> },
    /// The slot is held: wait for the next topology, bounded by the hold
    /// timeout.
    Wait,
    /// Keys are moving from `from`'s master to `to`'s: a request runs on
    /// `from` while all its keys are there (writes only if
    /// `writes_on_source`), else it moves them and runs on `to`.
    Migrating {
        from: Arc<Server>,
        to: Arc<Server>,
        to_group: GroupId,
        /// False in the mover's safe mode: writes move their keys first.
        writes_on_source: bool,
    },
    /// No group owns this slot.
    Unassigned,
    /// The owning group has no master in the topology.
    NoMaster { group: GroupId },
}

pub struct SlotTable {
    pub version: u64,
    slots: Vec<SlotRoute>,
    /// Each group's master, for commands sent to every group (DBSIZE).
    pub masters: Vec<(GroupId, Arc<Server>)>,
    /// Some slot is migrating: requests look for keys to move first.
    pub any_migrating: bool,
    /// Keys no request may touch now (big keys being copied in chunks):
    /// a request for one waits like a request for a held slot. Few, if any.
    pub held_keys: Vec<bytes::Bytes>,
    /// Set while the proxy cannot vouch for its view of the topology (lost
    /// its etcd lease): every request is refused.
    pub fenced: bool,
    /// False until the first topology was loaded.
    pub loaded: bool,
}

impl SlotTable {
    fn empty() -> SlotTable {
        SlotTable {
            version: 0,
            slots: vec![SlotRoute::Unassigned; SLOT_COUNT],
            masters: Vec::new(),
            any_migrating: false,
            held_keys: Vec::new(),
            fenced: false,
            loaded: false,
        }
    }

    #[inline]
    pub fn route(&self, slot: u16) -> &SlotRoute {
        self.slots
            .get(slot as usize)
            .unwrap_or(&SlotRoute::Unassigned)
    }
}

pub struct Router {
    current: ArcSwap<SlotTable>,
    /// Bumped on every swap; sessions waiting on a held slot watch it.
    changed: watch::Sender<u64>,
    servers: Mutex<HashMap<String, Arc<Server>>>,
    opts: Arc<BackendOptions>,
    pub facts: Arc<ServerFacts>,
    conns_per_server: usize,
    /// Serialises `apply` calls (the follower and the fence may race).
    applying: tokio::sync::Mutex<()>,
    fenced: AtomicBool,
}

impl Router {
    pub fn new(opts: BackendOptions, conns_per_server: usize) -> Router {
        Router {
            current: ArcSwap::from_pointee(SlotTable::empty()),
            changed: watch::channel(0).0,
            servers: Mutex::new(HashMap::new()),
            opts: Arc::new(opts),
            facts: Arc::new(ServerFacts::default()),
            conns_per_server,
            applying: tokio::sync::Mutex::new(()),
            fenced: AtomicBool::new(false),
        }
    }

    /// The current snapshot. Hold it only while routing, never across a wait
    /// for a reply: `apply` waits for old snapshots to be released.
    #[inline]
    pub fn load(&self) -> Arc<SlotTable> {
        self.current.load_full()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn servers(&self) -> Vec<Arc<Server>> {
        self.servers.lock().values().cloned().collect()
    }

    /// Installs `topo` and returns once every request routed with an older
    /// table has been answered: only then may the proxy report the version as
    /// applied.
    pub async fn apply(&self, topo: &Topology) {
        let _guard = self.applying.lock().await;
        let table = self.build(topo, self.fenced.load(Ordering::SeqCst));
        self.swap_and_drain(table).await;
    }

    /// Stops (or resumes) serving: a fenced proxy refuses every request,
    /// after draining what was in flight.
    pub async fn set_fenced(&self, fenced: bool) {
        let _guard = self.applying.lock().await;
        if self.fenced.swap(fenced, Ordering::SeqCst) == fenced {
            return;
        }
        let cur = self.load();
        let table = SlotTable {
            version: cur.version,
            slots: cur.slots.clone(),
            masters: cur.masters.clone(),
            any_migrating: cur.any_migrating,
            held_keys: cur.held_keys.clone(),
            fenced,
            loaded: cur.loaded,
        };
        // The drain waits for every holder of the old table to let go: this
        // function must not be one of them.
        drop(cur);
        self.swap_and_drain(table).await;
    }

    /// The clock backends check before every write.
    pub fn lease_clock(&self) -> &Arc<crate::lease::LeaseClock> {
        &self.opts.lease
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    async fn swap_and_drain(&self, table: SlotTable) {
        let version = table.version;
        let old = self.current.swap(Arc::new(table));
        self.changed.send_replace(version);
        // Sessions hold a snapshot only while routing and queueing, so this
        // is short; it is what makes the markers below cover every request
        // routed with the old table.
        let mut waited = Duration::ZERO;
        while Arc::strong_count(&old) > 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += Duration::from_millis(1);
            if waited == Duration::from_secs(5) {
                tracing::warn!(
                    version,
                    "still waiting for sessions to release the old slot table"
                );
            }
        }
        drop(old);
        let servers = self.servers();
        let markers = servers
            .iter()
            .flat_map(|s| s.all_conns())
            .map(|c| c.marker());
        futures::future::join_all(markers).await;
        self.prune();
    }

    fn build(&self, topo: &Topology, fenced: bool) -> SlotTable {
        let mut servers = self.servers.lock();
        let mut server_for = |addr: &str| -> Arc<Server> {
            servers
                .entry(addr.to_string())
                .or_insert_with(|| {
                    Arc::new(Server::new(
                        addr,
                        self.conns_per_server,
                        self.opts.clone(),
                        self.facts.clone(),
                    ))
                })
                .clone()
        };
        let mut masters = Vec::new();
        let mut group_route: HashMap<GroupId, SlotRoute> = HashMap::new();
        for (id, group) in &topo.groups {
            let route = match group.master() {
                Some(addr) => {
                    let server = server_for(addr);
                    masters.push((*id, server.clone()));
                    SlotRoute::Serve { group: *id, server }
                }
                None => SlotRoute::NoMaster { group: *id },
            };
            group_route.insert(*id, route);
        }
        let slots = (0..SLOT_COUNT)
            .map(|s| match topo.slot(s) {
                SlotState::Unassigned => SlotRoute::Unassigned,
                SlotState::Normal { group } => group_route
                    .get(&group)
                    .cloned()
                    .unwrap_or(SlotRoute::NoMaster { group }),
                SlotState::Held { .. } => SlotRoute::Wait,
                SlotState::Migrating { from, to, safe } => {
                    match (group_route.get(&from), group_route.get(&to)) {
                        (
                            Some(SlotRoute::Serve { server: f, .. }),
                            Some(SlotRoute::Serve { server: t, .. }),
                        ) => SlotRoute::Migrating {
                            from: f.clone(),
                            to: t.clone(),
                            to_group: to,
                            writes_on_source: !safe,
                        },
                        (Some(SlotRoute::Serve { .. }), _) => SlotRoute::NoMaster { group: to },
                        _ => SlotRoute::NoMaster { group: from },
                    }
                }
            })
            .collect::<Vec<_>>();
        let any_migrating = slots
            .iter()
            .any(|r| matches!(r, SlotRoute::Migrating { .. }));
        SlotTable {
            version: topo.version,
            slots,
            masters,
            any_migrating,
            held_keys: topo
                .held_keys
                .iter()
                .map(|k| bytes::Bytes::copy_from_slice(k))
                .collect(),
            fenced,
            loaded: true,
        }
    }

    /// Forgets servers the current table no longer uses; their connections
    /// close once the last batch routed to them is answered.
    fn prune(&self) {
        let table = self.load();
        let mut servers = self.servers.lock();
        servers.retain(|addr, _| {
            table.slots.iter().any(
                |r| matches!(r, SlotRoute::Serve { server, .. } if &*server.addr == addr.as_str()),
            ) || table.masters.iter().any(|(_, s)| &*s.addr == addr.as_str())
        });
    }
}
