use super::*;
use crate::identity::Identity;
use crate::net::test_support::peer_id;
use prost::Message;

fn org(n: u8) -> OrgKey {
    Identity::from_seed(&[n; 32]).key()
}

/// A table with `peer` connected over one direct connection at `at`.
fn with_peer(peer: PeerId, at: Instant) -> PeerTable {
    let mut t = PeerTable::default();
    assert!(t.connected(
        peer,
        ConnectionId::new_unchecked(1),
        "/ip4/198.51.100.7/tcp/1".into(),
        false,
        at
    ));
    t
}

#[test]
fn violations_lead_to_a_ban_at_the_limit() {
    let (p, t0) = (peer_id(1), Instant::now());
    let mut t = with_peer(p, t0);
    for _ in 1..MAX_VIOLATIONS {
        assert!(!t.violation(&p), "banned before the limit");
    }
    assert!(t.violation(&p), "not banned at the limit");
    t.block(p);
    t.ban(p);
    assert!(!t.contains(&p) && !t.is_blocked(&p) && !t.may_dial(&p));
    assert!(
        t.unblock_all().is_empty(),
        "a ban outlasts membership changes"
    );
    assert!(!t.may_dial(&p));
    assert!(!t.violation(&peer_id(2)), "unknown peers are not counted");
}

#[test]
fn blocked_peers_get_another_chance_when_membership_changes() {
    let p = peer_id(1);
    let mut t = with_peer(p, Instant::now());
    t.block(p);
    assert!(t.is_blocked(&p) && !t.contains(&p) && !t.may_dial(&p));
    assert_eq!(t.unblock_all(), HashSet::from([p]));
    assert!(t.may_dial(&p));
}

#[test]
fn the_gate_closes_on_unverified_peers_and_expired_certificates() {
    let (a, b, t0) = (peer_id(1), peer_id(2), Instant::now());
    let timeout = Duration::from_secs(10);
    let mut t = with_peer(a, t0);
    t.connected(
        b,
        ConnectionId::new_unchecked(2),
        "/ip4/198.51.100.8/tcp/1".into(),
        false,
        t0,
    );
    assert!(t.verify(b, org(2), 5_000, true), "first verification");
    assert!(
        !t.verify(b, org(2), 6_000, true),
        "a renewal is not a first verification"
    );
    assert!(t
        .late(t0 + Duration::from_secs(5), 1_000, timeout)
        .is_empty());
    // a stays unverified past the hello timeout; b's certificate expires at 6 000 ms.
    assert_eq!(
        t.late(t0 + Duration::from_secs(11), 1_000, timeout),
        vec![a]
    );
    let mut late = t.late(t0 + Duration::from_secs(11), 6_000, timeout);
    late.sort();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(late, both);
    assert!(!t.verify(peer_id(3), org(3), 5_000, true), "not connected");
}

/// A build from before `Leaves` counts the request as malformed: three of them and it
/// bans the asker. Only a peer whose hello offered leaves is asked for them.
#[test]
fn a_sync_asks_for_leaves_only_a_peer_whose_hello_offered_them() {
    let (new, old, t0) = (peer_id(1), peer_id(2), Instant::now());
    let mut t = with_peer(new, t0);
    t.connected(
        old,
        ConnectionId::new_unchecked(2),
        "/ip4/198.51.100.8/tcp/1".into(),
        false,
        t0,
    );
    // An older build's hello has no field 2: it decodes as not answering leaves.
    let old_hello = coalition_proto::v1::Hello::decode(&[0x0a, 0x03, 1, 2, 3][..])
        .expect("a hello with a certificate only");
    assert_eq!(&old_hello.certificate[..], &[1, 2, 3]);
    t.verify(new, org(2), i64::MAX, true);
    t.verify(old, org(3), i64::MAX, old_hello.answers_leaves);
    assert_eq!(
        t.start_sync(&new),
        Some(SyncWith {
            org: org(2),
            answers_leaves: true
        })
    );
    assert_eq!(
        t.start_sync(&old),
        Some(SyncWith {
            org: org(3),
            answers_leaves: false
        })
    );
}

#[test]
fn only_verified_peers_sync_and_one_at_a_time() {
    let (p, t0) = (peer_id(1), Instant::now());
    let mut t = with_peer(p, t0);
    assert_eq!(t.start_sync(&p), None, "not verified");
    assert!(t.verified().is_empty());
    t.verify(p, org(2), i64::MAX, true);
    assert_eq!(t.verified(), vec![p]);
    assert_eq!(t.start_sync(&p).map(|w| w.org), Some(org(2)));
    assert_eq!(t.start_sync(&p), None, "one sync per peer");
    assert!(
        t.sync_done(&p, None, 0),
        "asked again while running: runs again"
    );
    assert_eq!(t.start_sync(&p).map(|w| w.org), Some(org(2)));
    let stats = SyncStats {
        stored: 4,
        ..Default::default()
    };
    assert!(!t.sync_done(&p, Some(stats), 1_234));
    let s = &t.statuses(&HashMap::from([(org(2), "Org B".to_string())]))[0];
    assert_eq!(s.last_sync_ms, Some(1_234));
    assert_eq!(s.last_sync.map(|s| s.stored), Some(4));
    assert_eq!(s.organisation.as_deref(), Some("Org B"));
    assert!(!t.sync_done(&peer_id(9), None, 0), "unknown peer");
}

#[test]
fn a_direct_connection_is_shown_before_a_relayed_one() {
    let (p, t0) = (peer_id(1), Instant::now());
    let mut t = PeerTable::default();
    assert!(t.connected(
        p,
        ConnectionId::new_unchecked(1),
        "/relayed".into(),
        true,
        t0
    ));
    assert!(!t.connected(
        p,
        ConnectionId::new_unchecked(2),
        "/direct".into(),
        false,
        t0
    ));
    let s = &t.statuses(&HashMap::new())[0];
    assert_eq!((s.address.as_str(), s.relayed), ("/direct", false));
    t.connection_closed(&p, &ConnectionId::new_unchecked(2));
    let s = &t.statuses(&HashMap::new())[0];
    assert_eq!((s.address.as_str(), s.relayed), ("/relayed", true));
    assert!(t.needs_hello(&p), "unverified with a connection left");
    t.disconnected(&p);
    assert!(!t.contains(&p) && t.may_dial(&p));
}

#[test]
fn relay_users_without_a_certificate_get_only_a_grace() {
    let (a, b, t0) = (peer_id(1), peer_id(2), Instant::now());
    let grace = Duration::from_secs(2);
    let mut t = with_peer(a, t0);
    t.connected(b, ConnectionId::new_unchecked(2), "/b".into(), false, t0);
    t.relay_used_by(a, t0);
    t.relay_used_by(b, t0);
    t.relay_used_by(peer_id(3), t0); // not connected: ignored
    assert!(t
        .relay_strangers(t0 + Duration::from_secs(1), grace)
        .is_empty());
    t.verify(b, org(2), i64::MAX, true);
    assert_eq!(
        t.relay_strangers(t0 + Duration::from_secs(3), grace),
        vec![a]
    );
    assert!(
        t.relay_strangers(t0 + Duration::from_secs(4), grace)
            .is_empty(),
        "reported once"
    );
}

#[test]
fn removed_members_are_found() {
    let (p, t0) = (peer_id(1), Instant::now());
    let mut t = with_peer(p, t0);
    assert!(
        t.not_members(None).is_empty(),
        "unverified peers are the gate's"
    );
    t.verify(p, org(2), i64::MAX, true);
    assert_eq!(t.not_members(None), vec![p]);
}

#[test]
fn one_peer_gets_its_share_of_answers_and_of_the_request_rate() {
    let limits = RequestLimits {
        in_flight_per_peer: 2,
        per_second: 5,
    };
    let (p, q, t0) = (peer_id(1), peer_id(2), Instant::now());
    let mut t = with_peer(p, t0);
    t.connected(
        q,
        ConnectionId::new_unchecked(2),
        "/ip4/198.51.100.8/tcp/1".into(),
        false,
        t0,
    );
    t.admit_request(&p, t0, &limits).unwrap();
    t.admit_request(&p, t0, &limits).unwrap();
    assert_eq!(
        t.admit_request(&p, t0, &limits),
        Err(RequestRefused::Busy(2)),
        "a third request in flight"
    );
    // Another peer is not affected by the first one's load.
    t.admit_request(&q, t0, &limits).unwrap();
    // Answered requests free their slots, up to the burst (twice the rate).
    let mut admitted = 2;
    loop {
        t.answered(&p);
        t.answered(&p);
        match t.admit_request(&p, t0, &limits) {
            Ok(()) => admitted += 1,
            Err(e) => {
                assert_eq!(e, RequestRefused::TooFast(5));
                break;
            }
        }
    }
    assert_eq!(admitted, 10, "burst of twice the rate");
    assert!(t.admit_request(&p, t0, &limits).is_err());
    // The bucket refills with time.
    let later = t0 + Duration::from_millis(400);
    t.admit_request(&p, later, &limits).unwrap();
    t.answered(&p);
    t.admit_request(&p, later, &limits).unwrap();
    t.answered(&p);
    assert!(t.admit_request(&p, later, &limits).is_err());
    assert_eq!(
        t.admit_request(&peer_id(9), t0, &limits),
        Err(RequestRefused::NotConnected)
    );
}
