//! The gRPC adapter of the Session service: converts messages to domain calls and back.
//!
//! Handlers destructure each request message completely, so a field added to the proto is a
//! compile error here until it is handled. Nothing here logs an ID, a subject or a value.

use std::sync::Arc;

use rookery::v1 as pb;
use rookery::v1::session_server;
use tonic::{Request, Response, Status};

use super::{Change, NewSession, SessionData, Sessions, Summary};
use crate::convert::duration_in;
use crate::namespace;

/// `rookery.v1.Session` over the domain [`Sessions`].
#[derive(Debug, Clone)]
pub struct SessionApi {
    sessions: Arc<Sessions>,
}

impl SessionApi {
    /// Serves `sessions` over gRPC.
    pub fn new(sessions: Arc<Sessions>) -> Self {
        Self { sessions }
    }
}

fn session_out(data: SessionData) -> pb::SessionData {
    let SessionData { subject, attributes, version, created_at, idle_expires_at, absolute_expires_at } = data;
    pb::SessionData {
        subject,
        attributes,
        version,
        created_at: created_at.map(Into::into),
        idle_expires_at: idle_expires_at.map(Into::into),
        absolute_expires_at: absolute_expires_at.map(Into::into),
    }
}

#[tonic::async_trait]
impl session_server::Session for SessionApi {
    async fn create(
        &self,
        request: Request<pb::SessionCreateRequest>,
    ) -> Result<Response<pb::SessionCreateResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::SessionCreateRequest { subject, attributes, idle_timeout, absolute_timeout, max_sessions } =
            request.into_inner();
        let new = NewSession {
            subject,
            attributes,
            idle_timeout: duration_in("idle_timeout", idle_timeout)?,
            absolute_timeout: duration_in("absolute_timeout", absolute_timeout)?,
            max_sessions: (max_sessions > 0).then_some(max_sessions),
        };
        let created = self.sessions.create(&ns, new).await?;
        Ok(Response::new(pb::SessionCreateResponse {
            id: created.id,
            idle_expires_at: Some(created.idle_expires_at.into()),
            absolute_expires_at: Some(created.absolute_expires_at.into()),
            evicted: created.evicted,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::SessionGetRequest>,
    ) -> Result<Response<pb::SessionGetResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::SessionGetRequest { id, touch } = request.into_inner();
        let session = self.sessions.get(&ns, &id, touch).await?;
        Ok(Response::new(pb::SessionGetResponse { session: Some(session_out(session)) }))
    }

    async fn update(
        &self,
        request: Request<pb::SessionUpdateRequest>,
    ) -> Result<Response<pb::SessionUpdateResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::SessionUpdateRequest { id, set, remove, expected_version } = request.into_inner();
        let version = self.sessions.update(&ns, &id, Change { set, remove, expected_version }).await?;
        Ok(Response::new(pb::SessionUpdateResponse { version }))
    }

    async fn rotate(
        &self,
        request: Request<pb::SessionRotateRequest>,
    ) -> Result<Response<pb::SessionRotateResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::SessionRotateRequest { id, grace } = request.into_inner();
        let id = self.sessions.rotate(&ns, &id, duration_in("grace", grace)?).await?;
        Ok(Response::new(pb::SessionRotateResponse { id }))
    }

    async fn delete(
        &self,
        request: Request<pb::SessionDeleteRequest>,
    ) -> Result<Response<pb::SessionDeleteResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::SessionDeleteRequest { id } = request.into_inner();
        let deleted = self.sessions.delete(&ns, &id).await?;
        Ok(Response::new(pb::SessionDeleteResponse { deleted }))
    }

    async fn list_by_subject(
        &self,
        request: Request<pb::SessionListBySubjectRequest>,
    ) -> Result<Response<pb::SessionListBySubjectResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::SessionListBySubjectRequest { subject } = request.into_inner();
        let sessions = self
            .sessions
            .list_by_subject(&ns, &subject)
            .await?
            .into_iter()
            .map(|Summary { hint, created_at, idle_expires_at, absolute_expires_at }| pb::SessionSummary {
                hint,
                created_at: created_at.map(Into::into),
                idle_expires_at: Some(idle_expires_at.into()),
                absolute_expires_at: absolute_expires_at.map(Into::into),
            })
            .collect();
        Ok(Response::new(pb::SessionListBySubjectResponse { sessions }))
    }

    async fn delete_by_subject(
        &self,
        request: Request<pb::SessionDeleteBySubjectRequest>,
    ) -> Result<Response<pb::SessionDeleteBySubjectResponse>, Status> {
        let ns = namespace::of(&request)?;
        let pb::SessionDeleteBySubjectRequest { subject } = request.into_inner();
        let deleted = self.sessions.delete_by_subject(&ns, &subject).await?;
        Ok(Response::new(pb::SessionDeleteBySubjectResponse { deleted }))
    }
}
