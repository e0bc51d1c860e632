//! Leadership and barriers against real processes: a standby dashboard takes
//! over within the lease TTL + 2 s after the leader is SIGKILLed, and a
//! stopped (SIGSTOP) proxy holds a barrier up, is named as lagging, and makes
//! a promotion abort cleanly, until it runs again.

use std::thread;
use std::time::{Duration, Instant};

use crate::control_common::{api_error, assert_api_error, setup};
use shardis_dashboard::api::Role;
use shardis_dashboard::client::ClientError;
use shardis_tests::dashboard::DashboardProcess;

const TTL: u64 = 2;

#[test]
fn a_standby_takes_over_within_the_lease_ttl_when_the_leader_is_killed() {
    let s = setup(&[1], 0, |b| b.lease_ttl(TTL).id("dash-a"));
    let standby = DashboardProcess::builder(&s.etcd.endpoint(), &s.cluster)
        .lease_ttl(TTL)
        .id("dash-b")
        .start();
    thread::sleep(Duration::from_millis(600));
    assert_eq!(standby.role(), Some(Role::Standby));

    // The standby reads, refuses changes and names the leader.
    let overview = standby.client().overview().unwrap();
    assert_eq!(overview.dashboard.leader.as_ref().unwrap().id, "dash-a");
    assert_eq!(overview.groups.len(), 1);
    match standby.client().create_group(2) {
        Err(ClientError::Api { status: 503, body }) => {
            assert!(body.error.contains("standby"), "{}", body.error);
            let leader = body.leader.expect("the leader is named");
            assert_eq!(
                (leader.id.as_str(), leader.addr.as_str()),
                ("dash-a", s.dash.addr().as_str())
            );
        }
        other => panic!("expected 503 from the standby, got {other:?}"),
    }
    let before = s.stored();

    s.dash.kill();
    let killed = Instant::now();
    let limit = Duration::from_secs(TTL + 2);
    while standby.role() != Some(Role::Leader) {
        assert!(
            killed.elapsed() < limit,
            "the standby did not take over within {limit:?}:\n{}",
            standby.stderr_tail(20)
        );
        thread::sleep(Duration::from_millis(25));
    }
    let took = killed.elapsed();
    eprintln!("standby took over {took:?} after the leader was killed");
    assert_eq!(s.stored(), before, "the takeover itself changes nothing");
    let r = standby.client().create_group(2).unwrap();
    assert_eq!(r.version, before.version + 1);
}

#[test]
fn a_stopped_proxy_holds_the_barrier_and_promotion_aborts_cleanly() {
    let s = setup(&[2], 2, |b| b.barrier_timeout(2));
    let c = s.client();
    let (running, stopped) = (&s.proxies[0], &s.proxies[1]);
    assert!(c.barrier(None, Some(Duration::from_secs(5))).is_ok());

    stopped.pause();
    // Any change; the stopped proxy cannot apply it.
    let version = c.create_group(2).unwrap().version;
    let started = Instant::now();
    match c.barrier(Some(version), Some(Duration::from_millis(1500))) {
        Err(ClientError::Api { status: 504, body }) => {
            assert!(started.elapsed() >= Duration::from_millis(1400));
            assert_eq!(body.lagging.len(), 1, "{body:?}");
            assert_eq!(body.lagging[0].id, stopped.id());
            assert_eq!(body.lagging[0].addr, stopped.addr());
            assert!(body.lagging[0].applied_version < version);
            assert!(body.error.contains(stopped.id()), "{}", body.error);
        }
        other => panic!("expected 504 naming the stopped proxy, got {other:?}"),
    }
    let listed = c.proxies().unwrap().proxies;
    let p = listed.iter().find(|p| p.id == stopped.id()).unwrap();
    assert!(p.lagging && !p.healthy, "{p:?}");
    let p = listed.iter().find(|p| p.id == running.id()).unwrap();
    assert!(!p.lagging && p.healthy, "{p:?}");

    // A promotion cannot hold the slots on every proxy: it gives up after
    // the barrier timeout and releases them. A second one meanwhile is refused.
    let before = s.stored();
    let replica = s.servers(1)[1].addr();
    let promoting = {
        let c = c.clone();
        let replica = replica.clone();
        thread::spawn(move || c.promote(1, &replica))
    };
    thread::sleep(Duration::from_millis(500));
    assert_api_error(c.promote(1, &replica), 409, "group 1 is busy");
    let (status, text) = api_error(promoting.join().unwrap());
    assert_eq!(status, 504, "{text}");
    assert!(
        text.contains("slots released again") && text.contains(stopped.id()),
        "{text}"
    );
    let after = s.stored();
    assert_eq!(after.groups, before.groups, "the master did not change");
    assert_eq!(after.slots, before.slots, "the slots are served as before");
    assert_eq!(after.version, before.version + 2, "held, then released");
    let info = s.servers(1)[1]
        .conn()
        .reply(&["INFO", "replication"])
        .text()
        .unwrap();
    assert!(
        info.contains("role:slave"),
        "the replica was not touched: {info}"
    );
    // The running proxy serves group 1 again.
    running.conn().expect(&["SET", "k", "v"], b"+OK\r\n");

    // Once it runs again, the proxy catches up and the barrier passes.
    stopped.resume();
    let passed = c
        .barrier(Some(after.version), Some(Duration::from_secs(10)))
        .expect("the barrier passes after SIGCONT");
    assert_eq!(passed.proxies, 2);
    let r = c
        .promote(1, &replica)
        .expect("promote with every proxy running");
    assert!(!r.failover && r.lagging.is_empty(), "{r:?}");
}
