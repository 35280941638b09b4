//! Who may do what where: grants of access classes on namespaces to identities.
//!
//! A grant names identities (exact names, or patterns where `*` stands for any run of
//! characters: `system:serviceaccount:team-a:*`), namespaces (exact, or a prefix ending in
//! `*`: `team-a-*`), the services it covers (`*` for all) and one access class, which includes
//! the lower ones. A call is allowed when some grant covers its identity, namespace, service and
//! class; nothing else allows anything (deny by default). An identity's default namespace, used
//! when a call names none, is the first `default_namespace` among the grants naming it.

use serde::{Deserialize, Serialize};

use super::access::{Access, Service};
use crate::namespace::Namespace;

/// One grant (an `[[auth.grants]]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Identities (principal names) or patterns with `*`.
    pub identities: Vec<String>,
    /// Namespaces, or prefixes ending in `*`.
    pub namespaces: Vec<String>,
    /// The class granted; `admin` includes `write`, which includes `read`.
    pub access: Access,
    /// The services covered; empty or `["*"]` means all.
    #[serde(default)]
    pub services: Vec<ServiceSelector>,
    /// The namespace of this grant's identities' calls that name none.
    #[serde(default)]
    pub default_namespace: Option<String>,
}

/// A service a grant covers, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServiceSelector {
    /// One service.
    One(Service),
    /// `"*"`: every service.
    All(AllServices),
}

/// The `"*"` of [`ServiceSelector::All`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllServices {
    /// Every service.
    #[serde(rename = "*")]
    All,
}

impl Grant {
    /// Whether this grant names `identity`.
    pub fn names(&self, identity: &str) -> bool {
        self.identities.iter().any(|pattern| glob(pattern, identity))
    }

    /// Whether this grant allows `identity` `access` to `service` in `namespace`.
    pub fn allows(&self, identity: &str, namespace: &str, service: Service, access: Access) -> bool {
        self.access >= access
            && (self.services.is_empty()
                || self
                    .services
                    .iter()
                    .any(|s| matches!(s, ServiceSelector::All(_)) || *s == ServiceSelector::One(service)))
            && self.namespaces.iter().any(|pattern| namespace_matches(pattern, namespace))
            && self.names(identity)
    }

    /// Checks the grant's syntax; `Err` says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.identities.is_empty() || self.identities.iter().any(String::is_empty) {
            return Err("identities must name at least one non-empty identity or pattern".into());
        }
        if self.namespaces.is_empty() {
            return Err("namespaces must name at least one namespace or prefix".into());
        }
        for pattern in &self.namespaces {
            let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
            if pattern != "*" && (prefix.contains('*') || Namespace::new(prefix).is_err()) {
                return Err(format!(
                    "namespace {pattern:?} must be a namespace, or a prefix of one followed by a final '*'"
                ));
            }
        }
        if let Some(default) = &self.default_namespace {
            Namespace::new(default).map_err(|e| format!("default_namespace: {e}"))?;
        }
        Ok(())
    }
}

/// The grants in force, in config order.
#[derive(Debug, Clone, Default)]
pub struct Grants(Vec<Grant>);

impl Grants {
    /// The grants of the config.
    pub fn new(grants: Vec<Grant>) -> Self {
        Self(grants)
    }

    /// Whether some grant allows the call.
    pub fn allows(&self, identity: &str, namespace: &str, service: Service, access: Access) -> bool {
        self.0.iter().any(|grant| grant.allows(identity, namespace, service, access))
    }

    /// Whether any grant gives `identity` anything at all in `namespace`: tells a namespace not
    /// granted from a class not granted, for the log.
    pub fn any_in(&self, identity: &str, namespace: &str) -> bool {
        self.0
            .iter()
            .any(|g| g.names(identity) && g.namespaces.iter().any(|p| namespace_matches(p, namespace)))
    }

    /// The namespace of `identity`'s calls that name none.
    pub fn default_namespace(&self, identity: &str) -> Option<&str> {
        self.0.iter().filter(|g| g.names(identity)).find_map(|g| g.default_namespace.as_deref())
    }
}

/// `pattern` is the namespace itself, `*`, or a prefix followed by `*`.
fn namespace_matches(pattern: &str, namespace: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => namespace.starts_with(prefix),
        None => pattern == namespace,
    }
}

/// Glob match where `*` stands for any run of characters (possibly empty) and everything else
/// for itself. Linear in practice: the classic greedy match with one backtrack point.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn glob_matches_stars_and_nothing_else() {
        assert!(glob("system:serviceaccount:team-a:*", "system:serviceaccount:team-a:api"));
        assert!(!glob("system:serviceaccount:team-a:*", "system:serviceaccount:team-b:api"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
        assert!(!glob("exact?", "exactX"), "? is not a wildcard");
    }

    #[test]
    fn namespaces_are_exact_or_prefix() {
        assert!(namespace_matches("team-a", "team-a"));
        assert!(!namespace_matches("team-a", "team-ab"));
        assert!(namespace_matches("team-a-*", "team-a-jobs"));
        assert!(!namespace_matches("team-a-*", "team-b-jobs"));
        assert!(namespace_matches("*", "anything"));
    }

    #[test]
    fn validation_names_the_problem() {
        let grant = |ns: &str| Grant {
            identities: vec!["a".into()],
            namespaces: vec![ns.into()],
            access: Access::Read,
            services: vec![],
            default_namespace: None,
        };
        assert!(grant("team-a").validate().is_ok());
        assert!(grant("team-*").validate().is_ok());
        assert!(grant("*").validate().is_ok());
        assert!(grant("te*am").validate().is_err());
        assert!(grant("a:b").validate().is_err());
    }

    /// A reference model of one grant: a plain restatement of the rules, written without the
    /// matching helpers above.
    fn model_allows(
        grant: &Grant,
        identity: &str,
        namespace: &str,
        service: Service,
        access: Access,
    ) -> bool {
        let rank = |a: Access| match a {
            Access::Read => 0,
            Access::Write => 1,
            Access::Admin => 2,
        };
        let identity_ok = grant.identities.iter().any(|p| match p.split_once('*') {
            None => p == identity,
            // The generated patterns have at most one star.
            Some((head, tail)) => {
                identity.len() >= head.len() + tail.len()
                    && identity.starts_with(head)
                    && identity.ends_with(tail)
            }
        });
        let namespace_ok = grant.namespaces.iter().any(|p| {
            if p == "*" {
                true
            } else if let Some(prefix) = p.strip_suffix('*') {
                namespace.len() >= prefix.len() && &namespace[..prefix.len()] == prefix
            } else {
                p == namespace
            }
        });
        let service_ok = grant.services.is_empty()
            || grant.services.iter().any(|s| match s {
                ServiceSelector::All(_) => true,
                ServiceSelector::One(one) => *one == service,
            });
        identity_ok && namespace_ok && service_ok && rank(grant.access) >= rank(access)
    }

    const SERVICES: [Service; 5] =
        [Service::Cache, Service::Lock, Service::RateLimiter, Service::Session, Service::Events];
    const ACCESS: [Access; 3] = [Access::Read, Access::Write, Access::Admin];

    fn identity() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["sa:team-a:api", "sa:team-a:worker", "sa:team-b:api", "spiffe://x/y", "ci"])
            .prop_map(str::to_owned)
    }

    fn namespace() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["team-a", "team-a-jobs", "team-b", "team-ab", "default", "shared"])
            .prop_map(str::to_owned)
    }

    fn grant() -> impl Strategy<Value = Grant> {
        let identity_pattern = prop::sample::select(vec![
            "sa:team-a:*",
            "sa:team-a:api",
            "sa:*",
            "*:api",
            "ci",
            "spiffe://x/*",
            "nobody",
        ]);
        let namespace_pattern =
            prop::sample::select(vec!["team-a", "team-a-*", "team-*", "team-b", "default", "*", "shared"]);
        (
            prop::collection::vec(identity_pattern, 1..3),
            prop::collection::vec(namespace_pattern, 1..3),
            prop::sample::select(ACCESS.to_vec()),
            prop::collection::vec(prop::option::of(prop::sample::select(SERVICES.to_vec())), 0..3),
        )
            .prop_map(|(identities, namespaces, access, services)| Grant {
                identities: identities.into_iter().map(str::to_owned).collect(),
                namespaces: namespaces.into_iter().map(str::to_owned).collect(),
                access,
                services: services
                    .into_iter()
                    .map(|s| s.map_or(ServiceSelector::All(AllServices::All), ServiceSelector::One))
                    .collect(),
                default_namespace: None,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random grant tables × identities × namespaces × RPCs (each with its service and class
        /// from the one table): every decision equals the model's, and no call is allowed in a
        /// namespace that no grant naming the caller covers.
        #[test]
        fn decisions_equal_the_reference_model(
            table in prop::collection::vec(grant(), 0..5),
            calls in prop::collection::vec(
                (identity(), namespace(), prop::sample::select(super::super::access::TABLE.to_vec())),
                1..20,
            ),
        ) {
            let grants = Grants::new(table.clone());
            for (identity, namespace, (_path, service, access)) in calls {
                let expected = table.iter().any(|g| model_allows(g, &identity, &namespace, service, access));
                let allowed = grants.allows(&identity, &namespace, service, access);
                prop_assert_eq!(allowed, expected, "{} in {} {:?} {:?}", identity, namespace, service, access);
                if allowed {
                    prop_assert!(grants.any_in(&identity, &namespace), "allowed outside every grant's namespaces");
                }
            }
        }
    }
}
