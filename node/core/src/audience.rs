//! Who may receive a record: the one home of the audience and entitlement rules.
//!
//! A record's *effective* audience is the audience it was signed with, widened by the
//! grants its own author signed for it (a grant by anyone else has no effect). Sync,
//! exports, reports and the API all decide with these functions, so a change to what may
//! leave a node is made here once.

use serde_json::Value;

use crate::identity::OrgKey;
use crate::record::{Audience, Record, RecordId};

/// The wider of two audiences.
pub fn union(a: &Audience, b: &Audience) -> Audience {
    match (a, b) {
        (Audience::Coalition, _) | (_, Audience::Coalition) => Audience::Coalition,
        (Audience::Private, x) | (x, Audience::Private) => x.clone(),
        (Audience::Members(x), Audience::Members(y)) => {
            Audience::members(x.iter().chain(y.iter()).copied().collect())
        }
    }
}

/// The record a grant widens and the audience it adds, if the grant is well-formed.
pub fn grant_target(grant: &Record) -> Option<(RecordId, Audience)> {
    let v: Value = serde_json::from_slice(&grant.payload).ok()?;
    let target: RecordId = v["record"].as_str()?.parse().ok()?;
    let a = match v["audience"]["kind"].as_str()? {
        "coalition" => Audience::Coalition,
        "members" => Audience::members(
            v["audience"]["members"]
                .as_array()?
                .iter()
                .filter_map(|k| k.as_str()?.parse().ok())
                .collect(),
        ),
        _ => return None,
    };
    Some((target, a))
}

/// `base` widened by every audience in `grants` (the same-author grants of one record).
pub fn widened<'a>(base: &Audience, grants: impl IntoIterator<Item = &'a Audience>) -> Audience {
    grants.into_iter().fold(base.clone(), |a, g| union(&a, g))
}

/// The effective audience of `record`, given grant records that may concern it: only
/// grants signed by the record's own author and naming it count.
pub fn effective<'a>(record: &Record, grants: impl IntoIterator<Item = &'a Record>) -> Audience {
    let added: Vec<Audience> = grants
        .into_iter()
        .filter(|g| g.author == record.author)
        .filter_map(grant_target)
        .filter(|(target, _)| *target == record.id)
        .map(|(_, a)| a)
        .collect();
    widened(&record.audience, &added)
}

/// Whether an audience names organisation `org` (the coalition names every member; a
/// private audience names nobody, not even its author's other nodes).
pub fn reaches(audience: &Audience, org: &OrgKey) -> bool {
    match audience {
        Audience::Coalition => true,
        Audience::Members(m) => m.contains(org),
        Audience::Private => false,
    }
}

/// The audience a record travels with, between nodes and in bundles: its effective
/// audience, except that a sealed record (`sealed/v1`) goes to the whole coalition. Its
/// content opens only for the organisations it holds a wrapped key for, so every member
/// may hold and serve its ciphertext (store and forward), and an auditor's bundle carries
/// it to be verified without being read.
pub fn carried(schema: &str, audience: &Audience) -> Audience {
    if schema == crate::sealed::SEALED_SCHEMA {
        Audience::Coalition
    } else {
        audience.clone()
    }
}

/// Whether a peer node of organisation `org` may receive, over the network, a record by
/// `author` whose effective audience is `audience`.
///
/// A record shared with anyone may also go to its author's other nodes (a second laptop
/// of the same organisation catches up on what it shared). A PRIVATE record goes to no
/// other node at all, not even one holding the same organisation key: a restored backup or
/// a stolen second laptop with the key must not silently pull every annex.
pub fn entitled(author: &OrgKey, audience: &Audience, org: &OrgKey) -> bool {
    match audience {
        Audience::Private => false,
        _ => *author == *org || reaches(audience, org),
    }
}

/// Whether another node that this node's operator enrolled as a replica may receive a
/// record by `author` with effective audience `audience`. `me` is this node's
/// organisation, `peer_org` the organisation the replica's certificate proves: only a node
/// of the same organisation can be a replica (an enrolled peer id of another organisation
/// gets what [`entitled`] gives it, no more). A replica holds what this node may share
/// with its own organisation, and this organisation's PRIVATE records.
pub fn replica_entitled(
    author: &OrgKey,
    audience: &Audience,
    me: &OrgKey,
    peer_org: &OrgKey,
) -> bool {
    if peer_org != me {
        return entitled(author, audience, peer_org);
    }
    entitled(author, audience, me) || author == me
}

/// Whether a node of organisation `me` accepts a record by `author` that a node of
/// `peer_org` pushed to it for being its own: a replica receives its organisation's
/// records, PRIVATE ones included, from the node that enrolled it.
pub fn from_own_organisation(author: &OrgKey, me: &OrgKey, peer_org: &OrgKey) -> bool {
    author == me && peer_org == me
}

/// Whether a record with effective audience `audience` may be exported for `recipient`
/// (`None`: anyone in the coalition, e.g. a published report or a bundle for an auditor).
pub fn shareable_with(audience: &Audience, recipient: Option<&OrgKey>) -> bool {
    match (audience, recipient) {
        (Audience::Coalition, _) => true,
        (Audience::Members(m), Some(k)) => m.contains(k),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn union_only_widens() {
        let a = Identity::from_seed(&[1; 32]).key();
        let b = Identity::from_seed(&[2; 32]).key();
        assert_eq!(
            union(&Audience::Private, &Audience::members(vec![a])),
            Audience::members(vec![a])
        );
        assert_eq!(
            union(&Audience::members(vec![a]), &Audience::members(vec![b])),
            Audience::members(vec![a, b])
        );
        assert_eq!(
            union(&Audience::members(vec![a]), &Audience::Coalition),
            Audience::Coalition
        );
    }

    #[test]
    fn sealed_records_travel_to_every_member_and_others_to_their_audience() {
        let a = Identity::from_seed(&[1; 32]).key();
        let b = Identity::from_seed(&[2; 32]).key();
        let c = Identity::from_seed(&[3; 32]).key();
        let only_b = Audience::members(vec![b]);
        let sealed = carried(crate::sealed::SEALED_SCHEMA, &only_b);
        assert!(entitled(&a, &sealed, &c), "C relays what it cannot read");
        assert!(
            shareable_with(&sealed, None),
            "an auditor's bundle carries it"
        );
        let clear = carried(crate::finding::FINDING_SCHEMA, &only_b);
        assert!(
            !entitled(&a, &clear, &c),
            "a clear members-only record stays with its audience"
        );
        assert_eq!(
            carried(crate::finding::FINDING_SCHEMA, &Audience::Private),
            Audience::Private
        );
    }

    #[test]
    fn private_records_go_to_no_other_node_not_even_the_authors_own() {
        let a = Identity::from_seed(&[1; 32]).key();
        let b = Identity::from_seed(&[2; 32]).key();
        assert!(!entitled(&a, &Audience::Private, &a));
        assert!(!entitled(&a, &Audience::Private, &b));
        // What the author shared, its other nodes may hold.
        assert!(entitled(&a, &Audience::members(vec![b]), &a));
        assert!(entitled(&a, &Audience::Coalition, &b));
        assert!(!entitled(&a, &Audience::members(vec![a]), &b));
    }

    #[test]
    fn a_replica_of_the_same_organisation_gets_its_private_records_and_nobody_else_does() {
        let a = Identity::from_seed(&[1; 32]).key();
        let b = Identity::from_seed(&[2; 32]).key();
        assert!(replica_entitled(&a, &Audience::Private, &a, &a));
        // A peer of another organisation enrolled as a replica gets nothing more.
        assert!(!replica_entitled(&a, &Audience::Private, &a, &b));
        assert!(!replica_entitled(&a, &Audience::members(vec![a]), &a, &b));
        assert!(replica_entitled(&b, &Audience::Coalition, &a, &a));
        assert!(from_own_organisation(&a, &a, &a));
        assert!(!from_own_organisation(&a, &a, &b));
        assert!(!from_own_organisation(&b, &a, &a));
    }

    #[test]
    fn only_listed_members_are_reached_and_private_reaches_nobody() {
        let a = Identity::from_seed(&[1; 32]).key();
        let b = Identity::from_seed(&[2; 32]).key();
        let members = Audience::members(vec![a]);
        assert!(reaches(&members, &a) && !reaches(&members, &b));
        assert!(!reaches(&Audience::Private, &a));
        assert!(shareable_with(&members, Some(&a)));
        assert!(!shareable_with(&members, None));
        assert!(!shareable_with(&Audience::Private, Some(&a)));
        assert!(shareable_with(&Audience::Coalition, None));
    }
}
