//! Wrapped keys carried by grants: a `grant/v1` that widens the audience of a sealed
//! record may bring its new members the record's content key, wrapped to each of them
//! exactly as in the record itself (`docs/FORMATS.md` §6.6), as JSON objects of four
//! lower-case hex strings in its optional `keys` array.

use coalition_proto::v1 as pb;

use super::{check_unique, SealError, WrappedKey, MAX_WRAPS};

impl WrappedKey {
    /// The JSON object of a grant's `keys` array: the four fields as lower-case hex.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "recipient": self.recipient.to_hex(),
            "encryption_key": self.encryption_key.to_hex(),
            "enc": hex::encode(self.enc),
            "wrapped": hex::encode(self.wrapped),
        })
    }

    /// Reads one object of a grant's `keys` array.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, SealError> {
        let field = |name: &str| -> Result<Vec<u8>, SealError> {
            let s = v[name].as_str().ok_or_else(|| {
                SealError::Malformed(format!("grant key: `{name}` is missing or not a string"))
            })?;
            if s.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(SealError::Malformed(format!(
                    "grant key: `{name}` is not lower-case hex"
                )));
            }
            hex::decode(s)
                .map_err(|_| SealError::Malformed(format!("grant key: `{name}` is not hex")))
        };
        let proto = pb::WrappedKey {
            recipient: field("recipient")?.into(),
            encryption_key: field("encryption_key")?.into(),
            enc: field("enc")?.into(),
            wrapped: field("wrapped")?.into(),
        };
        Self::from_proto(&proto).map_err(|m| SealError::Malformed(format!("grant key: {m}")))
    }
}

/// The wraps a `grant/v1` payload carries in its optional `keys` array (empty when it has
/// none), checked: well-formed, no recipient twice, at most [`MAX_WRAPS`].
pub fn grant_keys(grant: &serde_json::Value) -> Result<Vec<WrappedKey>, SealError> {
    let Some(keys) = grant.get("keys") else {
        return Ok(Vec::new());
    };
    let keys = keys
        .as_array()
        .ok_or_else(|| SealError::Malformed("grant `keys` is not an array".into()))?;
    if keys.len() > MAX_WRAPS {
        return Err(SealError::WrapCount {
            count: keys.len(),
            max: MAX_WRAPS,
        });
    }
    let keys = keys
        .iter()
        .map(WrappedKey::from_json)
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(keys.iter().map(|k| &k.recipient))?;
    Ok(keys)
}
