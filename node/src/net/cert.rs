//! The certificate gate's checks: this node's own `node-cert/v1` record (issued when it
//! has none that is valid long enough), and the check of a peer's, which binds its
//! libp2p peer id to a current member organisation. The event loop runs the gate; these
//! functions decide.

use libp2p::PeerId;

use crate::charter::{Membership, NODE_CERT_SCHEMA};
use crate::identity::{Identity, OrgKey};
use crate::node::{Node, NodeError};
use crate::now_ms;

use super::error::CertError;

/// Certificates are renewed when less than this remains.
const CERT_RENEW_MS: i64 = 7 * 86_400_000;
/// Validity of automatically issued certificates.
const CERT_VALIDITY_MS: i64 = 90 * 86_400_000;

/// Returns a valid certificate for `peer_id` from the store, issuing one if needed.
pub(super) async fn ensure_certificate(
    node: &Node,
    identity: &Identity,
    peer_id: &PeerId,
) -> Result<Vec<u8>, NodeError> {
    let now = now_ms();
    for r in node
        .store()
        .records_with_schemas(&[NODE_CERT_SCHEMA])
        .await?
        .into_iter()
        .rev()
    {
        if r.author != identity.key() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_default();
        if v["peer_id"] == peer_id.to_string()
            && v["expires_at_ms"].as_i64().unwrap_or(0) > now + CERT_RENEW_MS
            && node.membership().await?.is_none_or(|m| m.judge(&r).is_ok())
        {
            return Ok(r.bytes);
        }
    }
    Ok(node
        .issue_node_cert(identity, &peer_id.to_string(), now + CERT_VALIDITY_MS)
        .await?
        .bytes)
}

/// Checks a peer's certificate: a valid `node-cert/v1` record, for this peer id, not
/// expired, signed by an organisation that is a current member. Returns the
/// organisation and when the certificate expires (ms since the Unix epoch).
pub(super) fn verify_certificate(
    bytes: &[u8],
    peer: &PeerId,
    membership: Option<&Membership>,
) -> Result<(OrgKey, i64), CertError> {
    let p = crate::check::prepare(bytes).map_err(CertError::DoesNotVerify)?;
    if p.record.schema != NODE_CERT_SCHEMA {
        return Err(CertError::WrongSchema(p.record.schema));
    }
    let v: serde_json::Value = serde_json::from_slice(&p.record.payload)?;
    if v["peer_id"] != peer.to_string() {
        return Err(CertError::OtherPeer);
    }
    let expires = v["expires_at_ms"].as_i64().unwrap_or(0);
    if expires <= now_ms() {
        return Err(CertError::Expired);
    }
    let m = membership.ok_or(CertError::NoCharter)?;
    m.judge(&p.record).map_err(|reason| {
        // The judge says why in words; whether the epoch is one this node knows is
        // asked of the membership itself.
        let known = p
            .record
            .epoch
            .as_ref()
            .is_none_or(|e| m.state_at(e).is_some());
        if known {
            CertError::NotMemberThen(reason)
        } else {
            CertError::UnknownEpoch(reason)
        }
    })?;
    if !m.current().is_member(&p.record.author) {
        return Err(CertError::NotCurrentMember(p.record.author.short()));
    }
    Ok((p.record.author, expires))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_support::{peer_id, two_members};
    use crate::record::{self, Audience, Draft};

    fn cert(who: &Identity, peer: &PeerId, expires: i64, epoch: Option<[u8; 32]>) -> Vec<u8> {
        let payload = serde_json::to_vec(&serde_json::json!({
            "peer_id": peer.to_string(),
            "expires_at_ms": expires,
        }))
        .unwrap();
        let draft = Draft {
            schema: NODE_CERT_SCHEMA.into(),
            audience: Audience::Coalition,
            supersedes: None,
            epoch,
            payload,
            created_at_ms: 0,
        };
        record::sign(who, 1, None, draft).bytes
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn certificates_are_refused_for_the_right_reason() {
        let t = two_members().await;
        let m = t.node.membership().await.unwrap().unwrap();
        let (p, other) = (peer_id(1), peer_id(2));
        let later = now_ms() + 3_600_000;
        let good = cert(&t.peer, &p, later, Some(t.epoch));
        let check = |bytes: &[u8]| verify_certificate(bytes, &p, Some(&m));
        let (org, expires) = check(&good).expect("a member's certificate verifies");
        assert_eq!((org, expires), (t.peer.key(), later));

        let other_peer = check(&cert(&t.peer, &other, later, Some(t.epoch))).unwrap_err();
        assert!(matches!(other_peer, CertError::OtherPeer), "{other_peer}");
        let expired = check(&cert(&t.peer, &p, now_ms() - 1, Some(t.epoch))).unwrap_err();
        assert!(matches!(expired, CertError::Expired), "{expired}");
        let stranger = Identity::from_seed(&[9; 32]);
        let not_member = check(&cert(&stranger, &p, later, Some(t.epoch))).unwrap_err();
        assert!(
            matches!(not_member, CertError::NotMemberThen(_)),
            "{not_member}"
        );
        let unseen = check(&cert(&t.peer, &p, later, Some([9; 32]))).unwrap_err();
        assert!(matches!(unseen, CertError::UnknownEpoch(_)), "{unseen}");
        assert!(!unseen.is_violation(), "an unseen epoch may be valid");
        let garbage = check(b"garbage").unwrap_err();
        assert!(matches!(garbage, CertError::DoesNotVerify(_)), "{garbage}");
        assert!(garbage
            .to_string()
            .starts_with("certificate does not verify: "));
        let no_charter = verify_certificate(&good, &p, None).unwrap_err();
        assert!(matches!(no_charter, CertError::NoCharter), "{no_charter}");
        for e in [other_peer, expired, not_member, garbage, no_charter] {
            assert!(e.is_violation(), "{e}");
        }
    }
}
