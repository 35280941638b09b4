//! The Session service's typed client, with helpers that read and write attributes as JSON.
//!
//! Session IDs are secrets: this module never logs them, and neither should callers.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::ClientChannel;
use crate::convert::{duration, from_timestamp};
use crate::pb;
use crate::pb::session_client::SessionClient as RawSessionClient;

/// How a new session expires.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Inactivity after which it ends (server default when `None`: 30 min).
    pub idle_timeout: Option<Duration>,
    /// Age after which it ends however active (server default when `None`: 12 h).
    pub absolute_timeout: Option<Duration>,
    /// Cap on the subject's live sessions for this call (server default when `None`).
    pub max_sessions: Option<u32>,
}

/// A created session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSession {
    /// Its ID: hand it to the end user (e.g. in a Secure, HttpOnly cookie); never log it.
    pub id: String,
    /// When it ends if unused.
    pub idle_expires_at: SystemTime,
    /// When it ends at the latest.
    pub absolute_expires_at: SystemTime,
    /// How many of the subject's sessions were evicted to respect its cap.
    pub evicted: u32,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whom it belongs to.
    pub subject: String,
    /// Its attributes.
    pub attributes: HashMap<String, Vec<u8>>,
    /// Incremented by every update; pass it as `expected_version` for a safe read-modify-write.
    pub version: u64,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it ends if unused from now.
    pub idle_expires_at: SystemTime,
    /// When it ends at the latest.
    pub absolute_expires_at: SystemTime,
}

impl Session {
    /// Attribute `name` decoded from JSON; `Ok(None)` if absent.
    pub fn json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, serde_json::Error> {
        self.attributes.get(name).map(|bytes| serde_json::from_slice(bytes)).transpose()
    }
}

/// Attribute changes, built with JSON or raw values.
#[derive(Debug, Clone, Default)]
pub struct SessionUpdate {
    set: HashMap<String, Vec<u8>>,
    remove: Vec<String>,
    expected_version: Option<u64>,
}

impl SessionUpdate {
    /// No change yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets attribute `name` to raw bytes.
    pub fn set(mut self, name: impl Into<String>, value: Vec<u8>) -> Self {
        self.set.insert(name.into(), value);
        self
    }

    /// Sets attribute `name` to `value` as JSON.
    pub fn set_json<T: Serialize>(
        self,
        name: impl Into<String>,
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        let bytes = serde_json::to_vec(value)?;
        Ok(self.set(name, bytes))
    }

    /// Removes attribute `name`.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.push(name.into());
        self
    }

    /// Applies only if the session is still at `version` (else the call fails with ABORTED).
    pub fn if_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }
}

/// A session as listed for its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Compare with [`session_hint`] of an ID to recognise that session.
    pub hint: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it ends if unused.
    pub idle_expires_at: SystemTime,
    /// When it ends at the latest.
    pub absolute_expires_at: SystemTime,
}

/// The hint `list_by_subject` shows for the session with this ID.
pub fn session_hint(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(id.as_bytes()))[..8].to_owned()
}

/// Encodes attributes as JSON, for [`SessionClient::create`].
pub fn json_attributes<T: Serialize>(
    values: impl IntoIterator<Item = (String, T)>,
) -> Result<HashMap<String, Vec<u8>>, serde_json::Error> {
    values.into_iter().map(|(name, value)| Ok((name, serde_json::to_vec(&value)?))).collect()
}

/// Typed calls to `rookery.v1.Session`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionClient {
    raw: RawSessionClient<ClientChannel>,
}

impl SessionClient {
    pub(crate) fn new(channel: ClientChannel) -> Self {
        Self { raw: RawSessionClient::new(channel) }
    }

    /// The generated stub, for calls with options this API does not expose.
    pub fn raw(&self) -> RawSessionClient<ClientChannel> {
        self.raw.clone()
    }

    /// Creates a session for `subject`.
    pub async fn create(
        &self,
        subject: impl Into<String>,
        attributes: HashMap<String, Vec<u8>>,
        options: &SessionOptions,
    ) -> Result<CreatedSession, Status> {
        let request = pb::SessionCreateRequest {
            subject: subject.into(),
            attributes,
            idle_timeout: options.idle_timeout.map(duration),
            absolute_timeout: options.absolute_timeout.map(duration),
            max_sessions: options.max_sessions.unwrap_or(0),
        };
        let pb::SessionCreateResponse { id, idle_expires_at, absolute_expires_at, evicted } =
            self.raw.clone().create(request).await?.into_inner();
        Ok(CreatedSession {
            id,
            idle_expires_at: from_timestamp(idle_expires_at),
            absolute_expires_at: from_timestamp(absolute_expires_at),
            evicted,
        })
    }

    /// Reads a session (`None` if unknown, expired or revoked); `touch` slides its idle expiry.
    pub async fn get(&self, id: impl Into<String>, touch: bool) -> Result<Option<Session>, Status> {
        match self.raw.clone().get(pb::SessionGetRequest { id: id.into(), touch }).await {
            Ok(response) => {
                let data = response.into_inner().session.unwrap_or_default();
                Ok(Some(Session {
                    subject: data.subject,
                    attributes: data.attributes,
                    version: data.version,
                    created_at: from_timestamp(data.created_at),
                    idle_expires_at: from_timestamp(data.idle_expires_at),
                    absolute_expires_at: from_timestamp(data.absolute_expires_at),
                }))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Applies attribute changes; returns the new version.
    pub async fn update(&self, id: impl Into<String>, update: SessionUpdate) -> Result<u64, Status> {
        let SessionUpdate { set, remove, expected_version } = update;
        let request = pb::SessionUpdateRequest { id: id.into(), set, remove, expected_version };
        Ok(self.raw.clone().update(request).await?.into_inner().version)
    }

    /// Gives the session a new ID; the old one keeps working for `grace` (if given).
    pub async fn rotate(&self, id: impl Into<String>, grace: Option<Duration>) -> Result<String, Status> {
        let request = pb::SessionRotateRequest { id: id.into(), grace: grace.map(duration) };
        Ok(self.raw.clone().rotate(request).await?.into_inner().id)
    }

    /// Ends a session; `false` if there was none.
    pub async fn delete(&self, id: impl Into<String>) -> Result<bool, Status> {
        Ok(self.raw.clone().delete(pb::SessionDeleteRequest { id: id.into() }).await?.into_inner().deleted)
    }

    /// A subject's live sessions, most recently active first.
    pub async fn list_by_subject(&self, subject: impl Into<String>) -> Result<Vec<SessionSummary>, Status> {
        let request = pb::SessionListBySubjectRequest { subject: subject.into() };
        let sessions = self.raw.clone().list_by_subject(request).await?.into_inner().sessions;
        Ok(sessions
            .into_iter()
            .map(|s| SessionSummary {
                hint: s.hint,
                created_at: from_timestamp(s.created_at),
                idle_expires_at: from_timestamp(s.idle_expires_at),
                absolute_expires_at: from_timestamp(s.absolute_expires_at),
            })
            .collect())
    }

    /// Ends every session of a subject ("log out everywhere"); returns how many.
    pub async fn delete_by_subject(&self, subject: impl Into<String>) -> Result<u32, Status> {
        let request = pb::SessionDeleteBySubjectRequest { subject: subject.into() };
        Ok(self.raw.clone().delete_by_subject(request).await?.into_inner().deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_attributes_round_trip() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Cart {
            items: Vec<String>,
        }
        let cart = Cart { items: vec!["book".into()] };
        let update = SessionUpdate::new().set_json("cart", &cart).unwrap();
        let session = Session {
            subject: "u".into(),
            attributes: update.set,
            version: 1,
            created_at: SystemTime::UNIX_EPOCH,
            idle_expires_at: SystemTime::UNIX_EPOCH,
            absolute_expires_at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(session.json::<Cart>("cart").unwrap(), Some(cart));
        assert_eq!(session.json::<Cart>("missing").unwrap(), None);
        assert!(session.json::<u32>("cart").is_err());
    }
}
