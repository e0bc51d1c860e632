//! The OpenAPI 3 description of the API, served at `GET /api/v1/openapi.json`.
//! Written by hand next to [`crate::routes::ROUTES`]; a test checks that
//! both list exactly the same calls.

use serde_json::{json, Value};

fn error_responses(codes: &[(&str, &str)]) -> Value {
    let mut map = serde_json::Map::new();
    for (code, why) in codes {
        map.insert(
            (*code).to_string(),
            json!({
                "description": why,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }),
        );
    }
    Value::Object(map)
}

fn ok(code: &str, description: &str, schema: &str) -> (String, Value) {
    (
        code.to_string(),
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        }),
    )
}

/// A mutating operation: token, leadership and `If-Match` apply.
fn change(
    summary: &str,
    description: &str,
    body: Option<&str>,
    success: (String, Value),
    errors: &[(&str, &str)],
    params: Value,
) -> Value {
    let mut responses = error_responses(
        &[
            &[
                ("401", "the admin token is configured and missing or wrong"),
                ("503", "this dashboard is a standby (the error names the leader), or etcd is unreachable"),
            ],
            errors,
        ]
        .concat(),
    );
    if let Value::Object(map) = &mut responses {
        map.insert(success.0, success.1);
    }
    let mut parameters = vec![json!({"$ref": "#/components/parameters/IfMatch"})];
    if let Value::Array(more) = params {
        parameters.extend(more);
    }
    let mut op = json!({
        "summary": summary,
        "description": description,
        "security": [{"adminToken": []}],
        "parameters": parameters,
        "responses": responses,
    });
    if let (Some(schema), Value::Object(map)) = (body, &mut op) {
        map.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
            }),
        );
    }
    op
}

fn read(summary: &str, description: &str, success: (String, Value), params: Value) -> Value {
    let mut responses = error_responses(&[("503", "etcd is unreachable")]);
    if let Value::Object(map) = &mut responses {
        map.insert(success.0, success.1);
    }
    json!({
        "summary": summary,
        "description": description,
        "parameters": params,
        "responses": responses,
    })
}

fn group_id() -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": "group id (1 or more)",
           "schema": {"type": "integer", "minimum": 1}})
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = control_plane();
    extend(&mut doc, "/components/schemas", stats_schemas());
    extend(&mut doc, "/paths", stats_paths());
    doc
}

/// Adds the entries of the object `more` to the object at `pointer`.
fn extend(doc: &mut Value, pointer: &str, more: Value) {
    if let (Some(Value::Object(map)), Value::Object(more)) = (doc.pointer_mut(pointer), more) {
        map.extend(more);
    }
}

/// Groups, servers, slots, proxies, barrier.
fn control_plane() -> Value {
    let not_found = ("404", "unknown group");
    let bad = ("400", "malformed JSON, a bad address or bad slot ranges");
    let stale = (
        "409",
        "not allowed in the current state, or the topology changed concurrently (stale If-Match version)",
    );
    let server = (
        "502",
        "a Redis server could not be reached or refused a command",
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "shardis-dashboard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The control plane of a Shardis cluster: groups of Redis servers, \
                the 1024 slots, proxies. Every error is JSON {\"error\": \"...\"}. Calls other \
                than GET need `Authorization: Bearer <token>` when the dashboard has an admin \
                token, and are answered only by the leader (a standby answers 503 naming it). \
                Every change is one etcd transaction guarded by the topology version and bumps \
                it; send `If-Match: <version>` to make a change conditional on the version you saw."
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "IfMatch": {"name": "If-Match", "in": "header", "required": false,
                    "description": "refuse the change (409) unless the topology is still at this version",
                    "schema": {"type": "integer"}}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"},
                    "leader": {"$ref": "#/components/schemas/Leader"},
                    "lagging": {"type": "array", "items": {"$ref": "#/components/schemas/LaggingProxy"}}}},
                "Leader": {"type": "object", "properties": {
                    "id": {"type": "string"}, "addr": {"type": "string"}, "since": {"type": "integer"}}},
                "LaggingProxy": {"type": "object", "properties": {
                    "id": {"type": "string"}, "addr": {"type": "string"}, "applied_version": {"type": "integer"}}},
                "CreateMigration": {"type": "object", "required": ["slots", "to_group"], "properties": {
                    "slots": {"type": "string", "example": "0-511"},
                    "to_group": {"type": "integer", "minimum": 1},
                    "wave_size": {"type": "integer", "default": 128},
                    "keys_per_sec": {"type": "integer", "default": 0, "description": "0: unlimited"},
                    "bytes_per_sec": {"type": "integer", "default": 0, "description": "0: unlimited"},
                    "safe": {"type": "boolean", "default": false,
                        "description": "MIGRATE COPY, wait for the target's replicas, then delete on the source"}}},
                "SetRate": {"type": "object", "properties": {
                    "keys_per_sec": {"type": "integer"}, "bytes_per_sec": {"type": "integer"}}},
                "Migration": {"type": "object", "properties": {
                    "id": {"type": "integer"},
                    "state": {"type": "string", "enum": ["pending", "running", "paused", "finished", "stopped", "failed"]},
                    "slots": {"type": "string"}, "to_group": {"type": "integer"},
                    "slots_total": {"type": "integer"}, "slots_done": {"type": "integer"},
                    "slot_states": {"type": "array", "items": {"type": "object", "properties": {
                        "slots": {"type": "string"}, "state": {"type": "string", "enum": ["normal", "held", "migrating"]},
                        "group": {"type": "integer"}, "target": {"type": "integer"}}}},
                    "keys_moved": {"type": "integer"}, "bytes_moved": {"type": "integer"},
                    "keys_per_sec": {"type": "number"}, "elapsed_secs": {"type": "number"},
                    "wave_size": {"type": "integer"}, "keys_per_sec_limit": {"type": "integer"},
                    "bytes_per_sec_limit": {"type": "integer"}, "safe": {"type": "boolean"},
                    "stop_requested": {"type": "boolean"},
                    "reason": {"type": "string", "nullable": true}, "error": {"type": "string", "nullable": true},
                    "checks": {"type": "array", "items": {"type": "string"}},
                    "created_at": {"type": "integer"}, "ended_at": {"type": "integer", "nullable": true}}},
                "MigrationList": {"type": "array", "items": {"$ref": "#/components/schemas/Migration"}},
                "Rebalance": {"type": "object", "properties": {
                    "dry_run": {"type": "boolean"},
                    "target": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "moves": {"type": "array", "items": {"type": "object", "properties": {
                        "slots": {"type": "string"}, "from": {"type": "integer"}, "to": {"type": "integer"}, "count": {"type": "integer"}}}},
                    "migrations": {"type": "array", "items": {"type": "integer"}}}},
                "CreateGroup": {"type": "object", "required": ["id"], "properties": {
                    "id": {"type": "integer", "minimum": 1}}},
                "AddServer": {"type": "object", "required": ["addr"], "properties": {
                    "addr": {"type": "string", "example": "127.0.0.1:7001"},
                    "force": {"type": "boolean", "default": false,
                        "description": "accept a first server (master) that holds keys or replicates another server"}}},
                "Promote": {"type": "object", "required": ["addr"], "properties": {
                    "addr": {"type": "string", "example": "127.0.0.1:7002"}}},
                "AssignSlots": {"type": "object", "required": ["slots", "group"], "properties": {
                    "slots": {"type": "string", "example": "0-99,200,300-310"},
                    "group": {"type": "integer", "minimum": 1}}},
                "Replication": {"type": "object", "description": "the server's INFO replication", "properties": {
                    "role": {"type": "string", "enum": ["master", "slave"]},
                    "master": {"type": "string"}, "master_link_status": {"type": "string"},
                    "master_last_io_seconds_ago": {"type": "integer"},
                    "master_sync_in_progress": {"type": "boolean"},
                    "slave_repl_offset": {"type": "integer"}, "master_repl_offset": {"type": "integer"},
                    "connected_replicas": {"type": "integer"},
                    "replicas": {"type": "array", "items": {"type": "object", "properties": {
                        "addr": {"type": "string"}, "state": {"type": "string"},
                        "offset": {"type": "integer"}, "lag": {"type": "integer"}}}}}},
                "Server": {"type": "object", "properties": {
                    "addr": {"type": "string"}, "role": {"type": "string", "enum": ["master", "replica"]},
                    "replication": {"$ref": "#/components/schemas/Replication"},
                    "lag_bytes": {"type": "integer"}, "keys": {"type": "integer"},
                    "error": {"type": "string"}}},
                "Group": {"type": "object", "properties": {
                    "id": {"type": "integer"},
                    "servers": {"type": "array", "items": {"$ref": "#/components/schemas/Server"}},
                    "slots": {"type": "string", "example": "0-511"}, "slot_count": {"type": "integer"}}},
                "Groups": {"type": "object", "properties": {
                    "version": {"type": "integer"},
                    "groups": {"type": "array", "items": {"$ref": "#/components/schemas/Group"}}}},
                "Slots": {"type": "object", "properties": {
                    "version": {"type": "integer"},
                    "slots": {"type": "array", "items": {"type": "object", "properties": {
                        "slot": {"type": "integer"},
                        "state": {"type": "string", "enum": ["unassigned", "normal", "held", "migrating"]},
                        "group": {"type": "integer", "nullable": true},
                        "target": {"type": "integer"}}}}}},
                "Proxy": {"type": "object", "properties": {
                    "id": {"type": "string"}, "addr": {"type": "string"}, "admin_addr": {"type": "string"},
                    "pid": {"type": "integer"}, "start_time": {"type": "integer"},
                    "uptime_secs": {"type": "integer"}, "applied_version": {"type": "integer"},
                    "lagging": {"type": "boolean"}, "healthy": {"type": "boolean"},
                    "health": {"type": "string"}}},
                "Proxies": {"type": "object", "properties": {
                    "version": {"type": "integer"},
                    "proxies": {"type": "array", "items": {"$ref": "#/components/schemas/Proxy"}}}},
                "Barrier": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "proxies": {"type": "integer"}}},
                "Overview": {"type": "object", "properties": {
                    "cluster": {"type": "string"}, "version": {"type": "integer"},
                    "dashboard": {"type": "object", "properties": {
                        "id": {"type": "string"}, "addr": {"type": "string"},
                        "role": {"type": "string", "enum": ["leader", "standby"]},
                        "leader": {"$ref": "#/components/schemas/Leader"}}},
                    "groups": {"type": "array", "items": {"$ref": "#/components/schemas/Group"}},
                    "unassigned_slots": {"type": "string"}, "busy_slots": {"type": "string"},
                    "proxies": {"type": "array", "items": {"$ref": "#/components/schemas/Proxy"}}}},
                "Change": {"type": "object", "properties": {
                    "version": {"type": "integer", "description": "the topology version the change produced"},
                    "message": {"type": "string"},
                    "warnings": {"type": "array", "items": {"type": "string"}},
                    "replication": {"$ref": "#/components/schemas/Replication"}}},
                "PromoteResult": {"type": "object", "properties": {
                    "group": {"type": "integer"}, "master": {"type": "string"},
                    "old_master": {"type": "string"}, "version": {"type": "integer"},
                    "failover": {"type": "boolean",
                        "description": "the old master was unreachable: writes it had not replicated may be lost"},
                    "steps": {"type": "array", "items": {"type": "string"}},
                    "warnings": {"type": "array", "items": {"type": "string"}},
                    "lagging": {"type": "array", "items": {"$ref": "#/components/schemas/LaggingProxy"}}}}
            }
        },
        "paths": {
            "/healthz": {
                "get": {"summary": "liveness", "responses": {"200": {"description": "the process answers"}}}
            },
            "/api/v1/openapi.json": {
                "get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3"}}}
            },
            "/api/v1/overview": {
                "get": read("everything `shardis status` shows",
                    "Cluster name, topology version, this dashboard's role (leader or standby) and the leader, \
                     groups with their servers, roles and replication state, slot ranges per group, proxies.",
                    ok("200", "the overview", "Overview"), json!([]))
            },
            "/api/v1/groups": {
                "get": read("list groups",
                    "Every group with its servers (master first), their replication state as Redis reports it, \
                     and the group's slot ranges.",
                    ok("200", "the groups", "Groups"), json!([])),
                "post": change("create a group", "Creates an empty group with the given id (1 or more).",
                    Some("CreateGroup"), ok("201", "created", "Change"),
                    &[bad, ("409", "the group exists"), stale], json!([]))
            },
            "/api/v1/groups/{id}": {
                "delete": change("delete a group", "Only a group that owns no slots can be deleted; its servers are left running.",
                    None, ok("200", "deleted", "Change"),
                    &[bad, not_found, ("409", "the group still owns slots"), stale], json!([group_id()]))
            },
            "/api/v1/groups/{id}/servers": {
                "post": change("add a server to a group",
                    "The group's first server becomes its master and must hold no keys (DBSIZE 0) unless \
                     \"force\": true. Every further server is made a replica of the master with REPLICAOF, \
                     which DISCARDS ALL DATA the server held: one that holds keys or has replicas of \
                     its own needs \"force\": true. A server already listed under another name (the \
                     same run_id) is refused. The answer shows its replication state. \
                     The dashboard's backend credentials are set as the replica's masteruser/masterauth.",
                    Some("AddServer"), ok("201", "added", "Change"),
                    &[bad, not_found, ("409", "the server is in a group already (under any name), or it holds keys (or a replica of its own) without force"), stale, server],
                    json!([group_id()]))
            },
            "/api/v1/groups/{id}/servers/{addr}": {
                "delete": change("remove a server from a group",
                    "A replica is detached (REPLICAOF NO ONE; its data is kept). A master can only be removed \
                     when it is the group's last server and the group owns no slots: otherwise promote another \
                     server first.",
                    None, ok("200", "removed", "Change"),
                    &[bad, ("404", "unknown group, or the server is not in it"), ("409", "the server is a master that cannot go now"), stale],
                    json!([group_id(), {"name": "addr", "in": "path", "required": true,
                        "schema": {"type": "string", "example": "127.0.0.1:7002"}}]))
            },
            "/api/v1/groups/{id}/promote": {
                "post": change("promote a replica to master",
                    "Planned switchover that loses nothing: the group's slots are held on every proxy \
                     (barrier), the replica catches up with the master's replication offset, becomes master \
                     (REPLICAOF NO ONE), the proxies switch to it and the slots are released (barrier), and \
                     the old master becomes its replica. If the old master is unreachable it is a failover: \
                     the answer says that writes the old master had not replicated may be lost. A failure \
                     before the switch releases the slots again and changes nothing else.",
                    Some("Promote"), ok("200", "promoted", "PromoteResult"),
                    &[bad, not_found,
                      ("409", "the server is not a replica of the group, a promotion of the group is running, or stale version"),
                      server,
                      ("504", "the proxies did not all hold the slots in time (the error lists them), or the replica did not catch up; slots released, nothing changed")],
                    json!([group_id()]))
            },
            "/api/v1/slots": {
                "get": read("list all 1024 slots", "Each slot's state, owning group and, when migrating, target group.",
                    ok("200", "the slots", "Slots"), json!([]))
            },
            "/api/v1/slots/assign": {
                "post": change("assign unassigned slots to a group",
                    "For bootstrapping: gives unassigned slots to a group that has a master. Owned slots are \
                     never moved here (that is a migration): if any given slot is owned, nothing changes.",
                    Some("AssignSlots"), ok("200", "assigned", "Change"),
                    &[("400", "bad, overlapping or out-of-range slot ranges"), not_found,
                      ("409", "some slots are assigned already, or the group has no servers; or stale version")],
                    json!([]))
            },
            "/api/v1/proxies": {
                "get": read("list proxies",
                    "Every proxy registered under a live etcd lease: addresses, uptime, the topology version \
                     it has applied (and drained), whether it lags the current version, and its /readyz health.",
                    ok("200", "the proxies", "Proxies"), json!([]))
            },
            "/api/v1/barrier": {
                "get": {
                    "summary": "wait until every live proxy applied a topology version",
                    "description": "Answers 200 once every proxy with a live lease reports the version as applied, \
                        or 504 after the timeout with the lagging proxies listed.",
                    "parameters": [
                        {"name": "version", "in": "query", "required": false,
                         "description": "default: the current topology version", "schema": {"type": "integer"}},
                        {"name": "timeout_ms", "in": "query", "required": false,
                         "description": "default: the configured barrier timeout; at most 300000",
                         "schema": {"type": "integer"}}
                    ],
                    "responses": {
                        "200": {"description": "every live proxy applied it",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Barrier"}}}},
                        "400": {"description": "bad query",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        "504": {"description": "some proxies lag (listed in `lagging`)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                    }
                }
            },
            "/api/v1/migrations": {
                "get": read("list migrations", "Every migration, newest first, with its progress and the state of each slot.",
                    ok("200", "the migrations", "MigrationList"), json!([])),
                "post": change("start a migration",
                    "Pre-flight checks first (both groups have a reachable master; the target holds no key of the \
                     moving slots; the target's maxmemory leaves room), then the migration is queued and runs in \
                     waves: hold (every live proxy confirms), fence lost proxies, migrating (proxies move keys on \
                     access, the mover scans the source once per wave), complete (every live proxy confirms).",
                    Some("CreateMigration"), ok("201", "the migration, pending", "Migration"),
                    &[bad, ("404", "unknown group"), ("409", "slots unassigned, busy or already there; the target holds keys of the slots; no room on the target"), server],
                    json!([]))
            },
            "/api/v1/migrations/{id}": {
                "get": read("one migration", "Progress, rate, each slot's state, and why it waits or failed.",
                    ok("200", "the migration", "Migration"), json!([migration_id()]))
            },
            "/api/v1/migrations/{id}/pause": {
                "post": change("pause a migration", "The mover stops between batches; a wave in flight stays migrating (proxies keep moving its keys on access).",
                    None, ok("200", "the migration", "Migration"), &[("404", "unknown migration"), ("409", "it has ended")], json!([migration_id()]))
            },
            "/api/v1/migrations/{id}/resume": {
                "post": change("resume a paused migration", "It continues where it stood.",
                    None, ok("200", "the migration", "Migration"), &[("404", "unknown migration"), ("409", "not paused")], json!([migration_id()]))
            },
            "/api/v1/migrations/{id}/stop": {
                "post": change("stop a migration", "The wave in flight completes, the rest stays where it is: every slot is wholly on one group.",
                    None, ok("200", "the migration", "Migration"), &[("404", "unknown migration"), ("409", "it has ended")], json!([migration_id()]))
            },
            "/api/v1/migrations/{id}/rate": {
                "post": change("change a migration's rate limit", "keys/s and bytes/s; 0 is unlimited; absent fields stay.",
                    Some("SetRate"), ok("200", "the migration", "Migration"), &[bad, ("404", "unknown migration"), ("409", "it has ended")], json!([migration_id()]))
            },
            "/api/v1/rebalance": {
                "post": change("spread the slots evenly",
                    "Plans the fewest moves that leave every group (with a master, or those in `groups`) within one slot \
                     of even, and starts one migration per receiving group; with dry_run=true only answers the plan.",
                    None, ok("200", "the plan and the migrations started", "Rebalance"),
                    &[bad, ("404", "unknown group"), ("409", "slots unassigned, held or migrating, or migrations still running")],
                    json!([
                        {"name": "dry_run", "in": "query", "required": false, "schema": {"type": "boolean"}},
                        {"name": "groups", "in": "query", "required": false, "description": "e.g. 1,2", "schema": {"type": "string"}}
                    ]))
            }
        }
    })
}

/// Schemas of the traffic statistics.
fn stats_schemas() -> Value {
    json!({
        "CommandLoad": {"type": "object", "properties": {
            "cmd": {"type": "string"}, "calls": {"type": "integer"}, "errors": {"type": "integer"},
            "ops_per_sec": {"type": "number"}, "errors_per_sec": {"type": "number"},
            "p50_us": {"type": "number"}, "p99_us": {"type": "number"}}},
        "ProxyLoad": {"type": "object", "properties": {
            "id": {"type": "string"}, "addr": {"type": "string"}, "admin_addr": {"type": "string"},
            "up": {"type": "boolean", "description": "its /api/v1/stats answered the last collection"},
            "error": {"type": "string"},
            "ops_per_sec": {"type": "number"}, "errors_per_sec": {"type": "number"},
            "p50_us": {"type": "number"}, "p99_us": {"type": "number"},
            "ops_total": {"type": "integer"}, "sessions": {"type": "integer"},
            "sessions_total": {"type": "integer"}, "uptime_secs": {"type": "integer"},
            "topology_version": {"type": "integer"}, "fenced": {"type": "boolean"},
            "stats_enabled": {"type": "boolean"}, "slowlog_len": {"type": "integer"},
            "commands": {"type": "array", "items": {"$ref": "#/components/schemas/CommandLoad"}},
            "backends": {"type": "array", "items": {"type": "object", "properties": {
                "addr": {"type": "string"}, "up": {"type": "boolean"},
                "requests_per_sec": {"type": "number"}, "errors_per_sec": {"type": "number"},
                "inflight": {"type": "integer"}, "p50_us": {"type": "number"}, "p99_us": {"type": "number"}}}}}},
        "ServerLoad": {"type": "object", "properties": {
            "group": {"type": "integer"}, "addr": {"type": "string"},
            "role": {"type": "string", "enum": ["master", "replica"]},
            "up": {"type": "boolean"}, "error": {"type": "string"},
            "redis_role": {"type": "string"}, "used_memory": {"type": "integer"},
            "keys": {"type": "integer"}, "ops_per_sec": {"type": "integer"},
            "connected_clients": {"type": "integer"}, "repl_offset": {"type": "integer"},
            "lag_bytes": {"type": "integer"}, "link_status": {"type": "string"}}},
        "ClusterStats": {"type": "object", "properties": {
            "time": {"type": "number", "description": "unix seconds of the collection"},
            "interval_secs": {"type": "number"},
            "ops_per_sec": {"type": "number"}, "errors_per_sec": {"type": "number"},
            "p50_us": {"type": "number"}, "p99_us": {"type": "number"}, "p999_us": {"type": "number"},
            "ops_total": {"type": "integer"}, "sessions": {"type": "integer"},
            "proxies": {"type": "array", "items": {"$ref": "#/components/schemas/ProxyLoad"}},
            "commands": {"type": "array", "items": {"$ref": "#/components/schemas/CommandLoad"}},
            "servers": {"type": "array", "items": {"$ref": "#/components/schemas/ServerLoad"}},
            "slot_ops_per_sec": {"type": "array", "items": {"type": "number"},
                "description": "1024 entries, requests per second per slot"}}},
        "StatsHistory": {"type": "object", "properties": {
            "interval_secs": {"type": "number"},
            "points": {"type": "array", "items": {"type": "object", "properties": {
                "time": {"type": "number"}, "ops_per_sec": {"type": "number"},
                "errors_per_sec": {"type": "number"}, "p50_us": {"type": "number"},
                "p99_us": {"type": "number"},
                "proxies": {"type": "object", "additionalProperties": {"type": "number"}}}}}}},
        "Slowlog": {"type": "object", "properties": {
            "entries": {"type": "array", "items": {"type": "object", "properties": {
                "proxy": {"type": "string"}, "id": {"type": "integer"}, "time": {"type": "integer"},
                "duration_us": {"type": "integer"}, "command": {"type": "string"},
                "key": {"type": "string"}, "client": {"type": "string"},
                "client_name": {"type": "string"}}}},
            "errors": {"type": "array", "items": {"type": "string"}}}}
    })
}

/// Traffic statistics, Prometheus and the web UI.
fn stats_paths() -> Value {
    json!({
        "/metrics": {
            "get": {"summary": "Prometheus metrics",
                "description": "Text exposition format 0.0.4: this dashboard's role, the topology (slots per \
                    group and state), every proxy's counters as of the last collection (label `proxy`; \
                    latency histograms in seconds), every server's INFO figures (labels group, addr, role) \
                    and the cluster's rates.",
                "responses": {"200": {"description": "Prometheus text", "content": {"text/plain": {}}}}}
        },
        "/api/v1/stats": {
            "get": read("cluster traffic now",
                "Collected every stats_interval_ms (1 s) from every proxy's admin /api/v1/stats and every \
                 server's INFO: requests and errors per second, p50/p99/p999 latency over the interval, per \
                 proxy (with commands and backends), per command, per server (role, memory, keys, ops/s, \
                 clients, replication offset and lag) and per slot.",
                ok("200", "the latest collection", "ClusterStats"), json!([]))
        },
        "/api/v1/stats/history": {
            "get": read("recent cluster traffic",
                "The last 300 collections (5 minutes at 1 s), oldest first: requests and errors per \
                 second, p50/p99 latency, requests per second per proxy.",
                ok("200", "the history", "StatsHistory"), json!([]))
        },
        "/api/v1/slowlog": {
            "get": read("the proxies' slowlogs",
                "Every registered proxy's slowlog, merged newest first: command, first key, duration, \
                 client. Proxies that cannot be asked are listed in `errors`.",
                ok("200", "the slowest recent requests", "Slowlog"),
                json!([{"name": "n", "in": "query", "required": false,
                    "description": "entries (default 50, at most 1000)", "schema": {"type": "integer"}}]))
        },
        "/": {
            "get": {"summary": "the web UI",
                "description": "Overview, slot map, migrations, groups; embedded in the binary, loads nothing \
                    from elsewhere.",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}
        },
        "/ui/app.js": {
            "get": {"summary": "the web UI's script",
                "responses": {"200": {"description": "JavaScript", "content": {"text/javascript": {}}}}}
        },
        "/ui/app.css": {
            "get": {"summary": "the web UI's style sheet",
                "responses": {"200": {"description": "CSS", "content": {"text/css": {}}}}}
        }
    })
}

fn migration_id() -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": "migration id",
           "schema": {"type": "integer", "minimum": 1}})
}
