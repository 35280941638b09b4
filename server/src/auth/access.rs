//! The one table of what each RPC needs: its service and its access class.
//!
//! Every method the server serves is listed here, Envoy's `ShouldRateLimit` included; a path
//! not in the table is refused (PERMISSION_DENIED) when auth is on, so a method added to a
//! .proto without a line here cannot slip through unguarded. A unit test checks the table
//! against the compiled descriptors in both directions.
//!
//! Classes are ordered: `admin` includes `write`, which includes `read`. `read` observes,
//! `write` changes state a caller owns or shares (including consuming entries and checking a
//! rate, which spends quota), `admin` acts on other callers' state in bulk (a subject's
//! sessions, a rate limit's counters, a consumer group).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// An access class, granted per namespace and service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Observe: Get, Read, Subscribe, Inspect, Observe, DescribeStream…
    Read,
    /// Change: Set, Append, Publish, Acquire, Hold, Consume, Ack, Check…
    Write,
    /// Act on others' state in bulk: ListBySubject, DeleteBySubject, Reset, DeleteGroup.
    Admin,
}

/// A service, as grants name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// `rookery.v1.Cache`.
    Cache,
    /// `rookery.v1.Lock`.
    Lock,
    /// `rookery.v1.RateLimiter` and Envoy's `RateLimitService`.
    RateLimiter,
    /// `rookery.v1.Session`.
    Session,
    /// `rookery.v1.Events`.
    Events,
}

use Access::{Admin, Read, Write};
use Service::{Cache, Events, Lock, RateLimiter, Session};

/// Every RPC: its HTTP/2 path, service and access class.
pub const TABLE: &[(&str, Service, Access)] = &[
    ("/rookery.v1.Cache/Get", Cache, Read),
    ("/rookery.v1.Cache/GetMany", Cache, Read),
    ("/rookery.v1.Cache/Set", Cache, Write),
    ("/rookery.v1.Cache/SetMany", Cache, Write),
    ("/rookery.v1.Cache/Delete", Cache, Write),
    ("/rookery.v1.Cache/Invalidate", Cache, Write),
    // A miss takes the fill lease: a reader that loads is a writer.
    ("/rookery.v1.Cache/Fetch", Cache, Write),
    ("/rookery.v1.Cache/Fill", Cache, Write),
    ("/rookery.v1.Cache/ReleaseLease", Cache, Write),
    ("/rookery.v1.Cache/Track", Cache, Read),
    ("/rookery.v1.Lock/Acquire", Lock, Write),
    ("/rookery.v1.Lock/Release", Lock, Write),
    ("/rookery.v1.Lock/Extend", Lock, Write),
    ("/rookery.v1.Lock/Hold", Lock, Write),
    ("/rookery.v1.Lock/Inspect", Lock, Read),
    ("/rookery.v1.Lock/Campaign", Lock, Write),
    ("/rookery.v1.Lock/Observe", Lock, Read),
    ("/rookery.v1.Lock/Resign", Lock, Write),
    ("/rookery.v1.RateLimiter/Check", RateLimiter, Write),
    ("/rookery.v1.RateLimiter/CheckMany", RateLimiter, Write),
    ("/rookery.v1.RateLimiter/Reset", RateLimiter, Admin),
    ("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", RateLimiter, Write),
    ("/rookery.v1.Session/Create", Session, Write),
    ("/rookery.v1.Session/Get", Session, Read),
    ("/rookery.v1.Session/Update", Session, Write),
    ("/rookery.v1.Session/Rotate", Session, Write),
    ("/rookery.v1.Session/Delete", Session, Write),
    ("/rookery.v1.Session/ListBySubject", Session, Admin),
    ("/rookery.v1.Session/DeleteBySubject", Session, Admin),
    ("/rookery.v1.Events/Publish", Events, Write),
    ("/rookery.v1.Events/PublishStream", Events, Write),
    ("/rookery.v1.Events/Subscribe", Events, Read),
    ("/rookery.v1.Events/Append", Events, Write),
    ("/rookery.v1.Events/AppendMany", Events, Write),
    ("/rookery.v1.Events/AppendStream", Events, Write),
    ("/rookery.v1.Events/Read", Events, Read),
    ("/rookery.v1.Events/CreateGroup", Events, Write),
    ("/rookery.v1.Events/DeleteGroup", Events, Admin),
    // Consuming moves entries into the consumer's pending list: a write, as in Redis's ACLs.
    ("/rookery.v1.Events/Consume", Events, Write),
    ("/rookery.v1.Events/ConsumeWithAcks", Events, Write),
    ("/rookery.v1.Events/Ack", Events, Write),
    ("/rookery.v1.Events/Nack", Events, Write),
    ("/rookery.v1.Events/DescribeStream", Events, Read),
];

/// The service and class of the RPC at `path`, or `None` for a path the table does not know.
pub fn classify(path: &str) -> Option<(Service, Access)> {
    static INDEX: OnceLock<HashMap<&'static str, (Service, Access)>> = OnceLock::new();
    INDEX
        .get_or_init(|| TABLE.iter().map(|&(path, service, access)| (path, (service, access))).collect())
        .get(path)
        .copied()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// Every rookery.v1 method in the compiled descriptors, and Envoy's one method (envoy-types
    /// ships no descriptor set; its path is the one its generated server routes).
    fn served_paths() -> BTreeSet<String> {
        let mut paths =
            BTreeSet::from(["/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit".to_owned()]);
        let set = prost_types::FileDescriptorSet::decode(rookery::FILE_DESCRIPTOR_SET).unwrap();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        paths
    }

    #[test]
    fn every_served_method_has_exactly_one_class() {
        let table: BTreeSet<String> = TABLE.iter().map(|(path, ..)| path.to_string()).collect();
        assert_eq!(table.len(), TABLE.len(), "a path is listed twice");
        assert_eq!(table, served_paths(), "the access table and the protos disagree");
    }

    #[test]
    fn bulk_actions_on_others_state_are_admin() {
        for path in [
            "/rookery.v1.Session/ListBySubject",
            "/rookery.v1.Session/DeleteBySubject",
            "/rookery.v1.RateLimiter/Reset",
            "/rookery.v1.Events/DeleteGroup",
        ] {
            assert_eq!(classify(path).unwrap().1, Access::Admin, "{path}");
        }
        assert!(Access::Admin > Access::Write && Access::Write > Access::Read);
        assert_eq!(classify("/rookery.v1.Cache/Nope"), None);
    }
}
