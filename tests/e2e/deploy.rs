//! The deployment manifests against the code. Each kustomization is rendered with `kubectl
//! kustomize`, as `kubectl apply -k` renders it, and the pod's config file (from its ConfigMap) is
//! loaded by the server's real config loader with the environment the pod sets, so every
//! overlay is checked to hold a config the server would start with. Ports, probe service names,
//! metrics paths, grace periods, and the Secrets and ConfigMaps behind every file the config
//! names are checked against the pod spec. A manifest that drifts from the code fails here.
//! (Schemas, yamllint and checkov run in `scripts/validate-deploy.sh`.)
//!
//! One room on purpose: every check renders the same manifests with the same helpers, and each
//! overlay's checks read best next to the others'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{CommandFactory, Parser};
use rookery_server::auth::access::{Access, Service};
use rookery_server::auth::grants::Grants;
use rookery_server::config::{Cli, Config, ConfigError};
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load_yaml(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn list(value: &Yaml) -> &[Yaml] {
    value.as_vec().map_or(&[], Vec::as_slice)
}

fn str_of<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// A kustomization's output: its objects, and its ConfigMaps (name, with kustomize's hash
/// suffix → file name → contents).
struct Rendered {
    name: String,
    documents: Vec<Yaml>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Renders `dir` with `kubectl kustomize`: what `kubectl apply -k` would apply.
fn render(dir: &Path) -> Rendered {
    let output = std::process::Command::new("kubectl").arg("kustomize").arg(dir).output().unwrap_or_else(|e| {
        panic!(
            "kubectl kustomize {}: {e}; the deploy checks render with kubectl (which contains kustomize): \
             install it (https://kubernetes.io/docs/tasks/tools/) or run `scripts/ensure-tools.sh --deploy`",
            dir.display()
        )
    });
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let documents: Vec<Yaml> = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("kubectl kustomize {}: {e}", dir.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let config_maps = documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        .map(|d| {
            let data = d["data"]
                .as_hash()
                .map(|data| {
                    data.iter()
                        .map(|(k, v)| {
                            (
                                str_of(k, "a ConfigMap key").to_owned(),
                                str_of(v, "a ConfigMap value").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (str_of(&d["metadata"]["name"], "a ConfigMap's name").to_owned(), data)
        })
        .collect();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    Rendered { name, documents, config_maps }
}

/// The base and every overlay, rendered.
fn overlays() -> Vec<Rendered> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo("deploy/k8s/overlays"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "expected the dev and production overlays, found {dirs:?}");
    dirs.iter().map(|dir| render(dir)).collect()
}

fn overlay(name: &str) -> Rendered {
    render(&repo(&format!("deploy/k8s/overlays/{name}")))
}

/// Where a file in the container comes from.
#[derive(Debug, PartialEq)]
struct Source {
    /// `secret`, `configMap` or `projected`.
    kind: &'static str,
    /// The Secret's or ConfigMap's name (empty for a projected volume).
    name: String,
    /// The key that becomes the file (for a projected token, its path).
    key: String,
    /// Mounted as one file (subPath), which never sees an update.
    sub_path: bool,
}

impl Rendered {
    fn find(&self, kind: &str, name: &str) -> &Yaml {
        self.documents
            .iter()
            .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name))
    }

    fn pod(&self) -> &Yaml {
        &self.find("Deployment", "rookery")["spec"]["template"]
    }

    fn container(&self) -> &Yaml {
        pod_container(&self.pod()["spec"], "rookery")
    }

    /// The Secret or ConfigMap key behind `path` in the rookery container; panics when no
    /// volume provides it.
    fn source_of(&self, path: &Path) -> Source {
        source_of(&self.pod()["spec"], self.container(), path)
            .unwrap_or_else(|e| panic!("{}: {}: {e}", self.name, path.display()))
    }

    /// The contents of the ConfigMap file mounted at `path` in the rookery container.
    fn config_file(&self, path: &Path) -> &str {
        let source = self.source_of(path);
        assert_eq!(source.kind, "configMap", "{}: {} comes from a ConfigMap", self.name, path.display());
        self.config_maps
            .get(&source.name)
            .and_then(|data| data.get(&source.key))
            .unwrap_or_else(|| panic!("{}: ConfigMap {} has no {}", self.name, source.name, source.key))
    }

    /// The server's config file as the pod mounts it (where `ROOKERY_CONFIG` points).
    fn config_text(&self) -> &str {
        let env = list(&self.container()["env"]);
        let path = env
            .iter()
            .find(|e| e["name"].as_str() == Some("ROOKERY_CONFIG"))
            .map(|e| str_of(&e["value"], "ROOKERY_CONFIG"))
            .unwrap_or_else(|| panic!("{}: the pod does not set ROOKERY_CONFIG", self.name));
        self.config_file(Path::new(path))
    }

    /// The config the rookery container would start with: its ConfigMap's file, under the
    /// environment the pod sets.
    fn config(&self, scratch: &Scratch) -> Result<Config, ConfigError> {
        let container = self.container();
        let env = list(&container["env"]);
        let config_path = env
            .iter()
            .find(|e| e["name"].as_str() == Some("ROOKERY_CONFIG"))
            .map(|e| PathBuf::from(str_of(&e["value"], "ROOKERY_CONFIG")))
            .unwrap_or_else(|| panic!("{}: the pod does not set ROOKERY_CONFIG", self.name));
        let text = self.config_file(&config_path);
        let mut flags = Vec::new();
        for variable in env.iter().filter(|e| e["name"].as_str() != Some("ROOKERY_CONFIG")) {
            let name = str_of(&variable["name"], "an environment variable's name");
            let value = if let Some(value) = variable["value"].as_str() {
                if value.starts_with('/') {
                    // A file the server reads: it must be mounted; a stand-in takes its place.
                    self.source_of(Path::new(value));
                    scratch.file(name, "stand-in").to_string_lossy().into_owned()
                } else {
                    value.to_owned()
                }
            } else {
                secret_stand_in(name).to_owned()
            };
            flags.push((name.to_owned(), value));
        }
        load(scratch, text, &flags)
    }
}

fn pod_container<'a>(pod_spec: &'a Yaml, name: &str) -> &'a Yaml {
    list(&pod_spec["containers"])
        .iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The Secret or ConfigMap key (or projected token) behind `path` in `container`.
fn source_of(pod_spec: &Yaml, container: &Yaml, path: &Path) -> Result<Source, String> {
    // The deepest mount holding the path, as in the container.
    let (mount, inside, sub_path) = list(&container["volumeMounts"])
        .iter()
        .filter_map(|mount| {
            let mount_path = Path::new(str_of(&mount["mountPath"], "mountPath"));
            match mount["subPath"].as_str() {
                Some(sub_path) => (path == mount_path).then(|| (mount, PathBuf::from(sub_path), true)),
                None => path.strip_prefix(mount_path).ok().map(|rest| (mount, rest.to_owned(), false)),
            }
        })
        .min_by_key(|(_, inside, _)| inside.components().count())
        .ok_or("no volume is mounted there")?;
    let inside = inside.to_string_lossy().into_owned();
    let volume = list(&pod_spec["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .ok_or_else(|| format!("no volume {:?}", mount["name"]))?;
    let key_of = |items: &Yaml| -> Result<String, String> {
        match items.as_vec() {
            None => Ok(inside.clone()),
            Some(items) => items
                .iter()
                .find(|item| item["path"].as_str() == Some(&inside))
                .map(|item| str_of(&item["key"], "an item's key").to_owned())
                .ok_or_else(|| format!("the volume's items do not include {inside}")),
        }
    };
    if let Yaml::Hash(_) = &volume["secret"] {
        let secret = &volume["secret"];
        let name = str_of(&secret["secretName"], "secretName").to_owned();
        return Ok(Source { kind: "secret", name, key: key_of(&secret["items"])?, sub_path });
    }
    if let Yaml::Hash(_) = &volume["configMap"] {
        let config_map = &volume["configMap"];
        let name = str_of(&config_map["name"], "a configMap's name").to_owned();
        return Ok(Source { kind: "configMap", name, key: key_of(&config_map["items"])?, sub_path });
    }
    for source in list(&volume["projected"]["sources"]) {
        if source["serviceAccountToken"]["path"].as_str() == Some(&inside) {
            return Ok(Source { kind: "projected", name: String::new(), key: inside, sub_path });
        }
    }
    Err(format!("volume {:?} provides no {inside}", mount["name"]))
}

/// What a Secret holds in a real cluster, for the variables a pod takes from one.
fn secret_stand_in(variable: &str) -> &'static str {
    match variable {
        "ROOKERY_REDIS_URL" => "rediss://:stand-in@redis.example.internal:6380",
        other => panic!("{other} comes from a Secret: give it a stand-in value here"),
    }
}

/// Files for one test, removed when it ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rookery-deploy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `text` as the config file with the real loader (which validates), with each
/// `ROOKERY_*` variable given as the flag it stands for.
fn load(scratch: &Scratch, text: &str, variables: &[(String, String)]) -> Result<Config, ConfigError> {
    let command = Cli::command();
    let file = scratch.file("rookery.toml", text);
    let mut args =
        vec!["rookery-server".to_owned(), "--config".to_owned(), file.to_string_lossy().into_owned()];
    for (name, value) in variables {
        let flag = command
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .and_then(|a| a.get_long())
            .unwrap_or_else(|| panic!("the server reads no {name}"));
        args.extend([format!("--{flag}"), value.clone()]);
    }
    Config::load(Cli::try_parse_from(args).expect("the flags parse"))
}

fn port(value: &Yaml, container: &Yaml) -> i64 {
    match value {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => list(&container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("not a port: {other:?}"),
    }
}

#[test]
fn every_overlay_holds_a_config_the_server_starts_with() {
    let scratch = Scratch::new();
    for rendered in overlays() {
        let config = rendered
            .config(&scratch)
            .unwrap_or_else(|e| panic!("{}: the server would not start: {e}", rendered.name));
        // Reachable through the Services, and so either authenticating or saying it does not.
        assert!(!config.listen.ip().is_loopback(), "{}: listen = {}", rendered.name, config.listen);
        assert!(
            config.auth.enabled || config.auth.allow_unauthenticated,
            "{}: the config says nothing about auth",
            rendered.name
        );
        // Every file the config names is mounted, from a key its volume has.
        let files = [
            config.tls.as_ref().map(|tls| tls.cert_file.clone()),
            config.tls.as_ref().map(|tls| tls.key_file.clone()),
            config.tls.as_ref().and_then(|tls| tls.client_ca_file.clone()),
            config.auth.tokens_file.clone(),
            config.auth.jwt.as_ref().map(|jwt| jwt.jwks_file.clone()),
        ];
        for file in files.into_iter().flatten() {
            let source = rendered.source_of(&file);
            // These are re-read as they change; a subPath mount would never show a change.
            assert!(!source.sub_path, "{}: {} is mounted with subPath", rendered.name, file.display());
            if let Some(data) = rendered.config_maps.get(&source.name) {
                assert!(data.contains_key(&source.key), "{}: {source:?} has no such key", rendered.name);
            }
        }
    }
}

#[test]
fn the_base_alone_refuses_to_serve_unauthenticated() {
    // Secure by default: an overlay that forgets to say how callers authenticate fails to
    // start, rather than serving every namespace to anyone.
    let scratch = Scratch::new();
    let base = render(&repo("deploy/k8s/base"));
    let err = base.config(&scratch).expect_err("the base serves 0.0.0.0 with auth off").to_string();
    assert!(err.contains("auth.enabled"), "{err}");
    let text = base.config_text();
    let file = Config::from_toml(text, Path::new("base/rookery.toml")).unwrap();
    assert!(!file.auth.enabled && !file.auth.allow_unauthenticated && file.tls.is_none());
}

#[test]
fn manifests_match_the_server() {
    let scratch = Scratch::new();
    for rendered in overlays() {
        let name = &rendered.name;
        let config = rendered.config(&scratch).unwrap();
        let (grpc, admin) = (i64::from(config.listen.port()), i64::from(config.admin_listen.port()));
        let pod = rendered.pod();
        let container = rendered.container();
        let ports: Vec<(&str, i64)> = list(&container["ports"])
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
            .collect();
        assert_eq!(ports, vec![("grpc", grpc), ("metrics", admin)], "{name}");

        // gRPC probes ask the server's health service for names it serves.
        let served = [
            "",
            rookery_server::LIVENESS_SERVICE_NAME,
            rookery_server::CACHE_SERVICE_NAME,
            rookery_server::LOCK_SERVICE_NAME,
            rookery_server::SESSION_SERVICE_NAME,
            rookery_server::RATE_LIMITER_SERVICE_NAME,
            rookery_server::ENVOY_RATE_LIMIT_SERVICE_NAME,
            rookery_server::EVENTS_SERVICE_NAME,
        ];
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let grpc_probe = &container[probe]["grpc"];
            assert_eq!(port(&grpc_probe["port"], container), grpc, "{name}: {probe} port");
            assert!(served.contains(&grpc_probe["service"].as_str().unwrap()), "{name}: {probe} service");
        }
        // Readiness follows Redis; liveness must not.
        assert_eq!(container["readinessProbe"]["grpc"]["service"].as_str(), Some(""));
        assert_eq!(
            container["livenessProbe"]["grpc"]["service"].as_str(),
            Some(rookery_server::LIVENESS_SERVICE_NAME)
        );

        // Metrics scraping.
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/path"].as_str(), Some(rookery_server::telemetry::METRICS_PATH));
        assert_eq!(annotations["prometheus.io/port"].as_str(), Some(admin.to_string().as_str()));

        // The grace period outlasts the drain, so locks are released before the kill.
        let grace = pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
        let drain = config.shutdown.pre_drain_delay + config.shutdown.drain_timeout;
        assert!(
            grace > drain.as_secs() + 5,
            "{name}: terminationGracePeriodSeconds {grace} vs drain {drain:?}"
        );

        // Services target the container's named ports, on the same numbers.
        for service in ["rookery", "rookery-headless"] {
            for service_port in list(&rendered.find("Service", service)["spec"]["ports"]) {
                assert_eq!(
                    port(&service_port["targetPort"], container),
                    service_port["port"].as_i64().unwrap(),
                    "{name}: Service {service}"
                );
            }
        }
    }

    // The image exposes the same ports and reads the same config path as the pods.
    let rendered = overlay("production");
    let config = rendered.config(&scratch).unwrap();
    let config_path = list(&rendered.container()["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some("ROOKERY_CONFIG"))
        .and_then(|e| e["value"].as_str())
        .unwrap()
        .to_owned();
    let dockerfile = read(&repo("deploy/Dockerfile"));
    assert!(dockerfile.contains(&format!("EXPOSE {} {}", config.listen.port(), config.admin_listen.port())));
    assert!(dockerfile.contains(&format!("ENV ROOKERY_CONFIG={config_path}")));
    // The image sets no listen address: one in its environment would override every config.
    assert!(!dockerfile.contains("ROOKERY_LISTEN") && !dockerfile.contains("ROOKERY_ALLOW_UNAUTHENTICATED"));
}

#[test]
fn every_environment_variable_in_the_manifests_is_one_the_server_reads() {
    let known: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                yaml_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    yaml_files(&repo("deploy"), &mut files);
    assert!(files.len() > 10, "{files:?}");
    for file in files {
        let text = read(&file);
        for name in text.split_whitespace().filter_map(|w| w.strip_prefix("ROOKERY_")) {
            let name = format!(
                "ROOKERY_{}",
                name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            );
            assert!(known.contains(&name), "{} sets {name}, which the server does not read", file.display());
        }
    }
}

#[test]
fn the_production_overlay_serves_tls_and_authenticates_service_account_tokens() {
    let scratch = Scratch::new();
    let production = overlay("production");
    let config = production.config(&scratch).unwrap();
    assert_eq!(production.find("Deployment", "rookery")["spec"]["replicas"].as_i64(), Some(3));

    // TLS from a kubernetes.io/tls Secret (cert-manager's keys), mounted whole so that a
    // renewed certificate is seen.
    let tls = config.tls.as_ref().expect("production serves TLS");
    let cert = production.source_of(&tls.cert_file);
    let key = production.source_of(&tls.key_file);
    assert_eq!((cert.kind, cert.name.as_str(), cert.key.as_str()), ("secret", "rookery-tls", "tls.crt"));
    assert_eq!((key.kind, key.name.as_str(), key.key.as_str()), ("secret", "rookery-tls", "tls.key"));
    assert!(!cert.sub_path && !key.sub_path);
    assert_eq!(tls.cert_file.parent(), Some(Path::new("/etc/rookery/tls")));

    // Auth on, by JWTs: projected ServiceAccount tokens for the audience "rookery", checked
    // against the cluster's keys in the rookery-jwks ConfigMap.
    assert!(config.auth.enabled && !config.auth.allow_unauthenticated);
    let jwt = config.auth.jwt.as_ref().expect("production verifies JWTs");
    assert!(jwt.audiences.iter().any(|a| a == "rookery"), "{:?}", jwt.audiences);
    assert!(jwt.issuer.starts_with("https://"), "{}", jwt.issuer);
    assert_eq!(jwt.identity_claim, "sub");
    let jwks = production.source_of(&jwt.jwks_file);
    assert_eq!(
        (jwks.kind, jwks.name.as_str(), jwks.key.as_str()),
        ("configMap", "rookery-jwks", "jwks.json")
    );
    assert_eq!(jwt.jwks_file.parent(), Some(Path::new("/etc/rookery/jwks")));

    // The operator's objects (the certificate, the cluster's keys, the Redis password) are read,
    // never shipped: `kubectl apply -k` must not overwrite them with placeholders.
    for (kind, name) in
        [("Secret", "rookery-tls"), ("ConfigMap", "rookery-jwks"), ("Secret", "rookery-redis")]
    {
        assert!(
            !production
                .documents
                .iter()
                .any(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)),
            "the overlay ships {kind} {name}"
        );
        let generated =
            |map: &String| map == name || map.strip_prefix(name).is_some_and(|s| s.starts_with('-'));
        assert!(!production.config_maps.keys().any(generated), "the overlay generates ConfigMap {name}");
    }

    // The example grants: a team's ServiceAccounts write in their namespaces, landing in their
    // own by default, and nothing elsewhere.
    let grants = Grants::new(config.auth.grants.clone());
    let worker = "system:serviceaccount:team-a:worker";
    assert!(grants.allows(worker, "team-a", Service::Lock, Access::Write));
    assert!(grants.allows(worker, "team-a-staging", Service::Cache, Access::Write));
    assert!(!grants.allows(worker, "team-a", Service::Session, Access::Admin));
    assert!(!grants.allows(worker, "team-b", Service::Cache, Access::Read));
    assert!(!grants.allows("system:serviceaccount:team-b:worker", "team-a", Service::Cache, Access::Read));
    assert_eq!(grants.default_namespace(worker), Some("team-a"));
}

#[test]
fn the_production_config_is_the_base_config_plus_tls_and_auth() {
    // The server reads one file, so production repeats the base's settings: they must agree.
    let base = render(&repo("deploy/k8s/base"));
    let production = overlay("production");
    let parse = |rendered: &Rendered| {
        let text = rendered.config_text();
        Config::from_toml(text, Path::new(&rendered.name)).unwrap()
    };
    let mut config = parse(&production);
    assert!(config.tls.is_some() && config.auth.enabled);
    config.tls = None;
    config.auth = Default::default();
    assert_eq!(
        config,
        parse(&base),
        "production's rookery.toml differs from the base's beyond [tls] and [auth]"
    );
}

#[test]
fn the_production_overlay_configures_tls_to_redis() {
    // The URL comes from the Secret (rediss://), the CA from the same Secret, mounted.
    let scratch = Scratch::new();
    let production = overlay("production");
    let config = production.config(&scratch).unwrap();
    assert!(config.redis.url.starts_with("rediss://"));
    let env = list(&production.container()["env"]);
    let url = env.iter().find(|e| e["name"].as_str() == Some("ROOKERY_REDIS_URL")).unwrap();
    assert_eq!(url["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("rookery-redis"));
    let ca = env.iter().find(|e| e["name"].as_str() == Some("ROOKERY_REDIS_TLS_CA_FILE")).unwrap();
    let source = production.source_of(Path::new(ca["value"].as_str().unwrap()));
    assert_eq!(
        (source.kind, source.name.as_str(), source.key.as_str()),
        ("secret", "rookery-redis", "ca.crt")
    );
    assert!(config.redis.tls_ca_file.is_some());
}

#[test]
fn the_development_stacks_say_they_are_unauthenticated() {
    let scratch = Scratch::new();
    let dev = overlay("dev");
    let config = dev.config(&scratch).unwrap();
    assert!(!config.auth.enabled && config.auth.allow_unauthenticated && config.tls.is_none());

    // docker compose: the image's config path, mounted from the file beside it, on the host's
    // loopback only.
    let compose = &load_yaml(&repo("deploy/docker-compose.yml"))[0];
    let rookery = &compose["services"]["rookery"];
    let dockerfile = read(&repo("deploy/Dockerfile"));
    let config_path = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ENV ROOKERY_CONFIG="))
        .expect("the image names its config file");
    let host_file = list(&rookery["volumes"])
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|v| {
            let mut parts = v.split(':');
            let (host, container) = (parts.next()?, parts.next()?);
            (container == config_path).then_some(host)
        })
        .expect("docker-compose.yml mounts the image's config file");
    let variables: Vec<(String, String)> = rookery["environment"]
        .as_hash()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = match v {
                Yaml::Boolean(b) => b.to_string(),
                Yaml::Integer(n) => n.to_string(),
                other => str_of(other, "a compose variable").to_owned(),
            };
            (str_of(k, "a compose variable").to_owned(), value)
        })
        .collect();
    let text = read(&repo("deploy").join(host_file));
    let config = load(&scratch, &text, &variables).expect("the compose stack's config loads");
    assert!(!config.listen.ip().is_loopback(), "the published port must reach the server");
    assert!(!config.auth.enabled && config.auth.allow_unauthenticated && config.tls.is_none());
    for published in list(&rookery["ports"]) {
        let published = str_of(published, "a published port");
        assert!(published.starts_with("127.0.0.1:"), "{published} is published beyond this host");
    }
}

#[test]
fn the_client_pod_in_the_readme_can_call_the_production_overlay() {
    // deploy/README.md's client Deployment: a projected ServiceAccount token for the audience
    // the server accepts, the CA, and the client's variables pointing at both.
    let readme = read(&repo("deploy/README.md"));
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .find(|block| block.contains("serviceAccountToken"))
        .expect("deploy/README.md shows a client pod with a projected token");
    let documents = YamlLoader::load_from_str(block).unwrap();
    let deployment = documents.iter().find(|d| d["kind"].as_str() == Some("Deployment")).unwrap();
    let namespace = str_of(&deployment["metadata"]["namespace"], "the client's namespace");
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let account = str_of(&pod_spec["serviceAccountName"], "serviceAccountName");
    let container = &list(&pod_spec["containers"])[0];
    let env = |name: &str| {
        list(&container["env"])
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("the client pod sets no {name}"))
    };

    let scratch = Scratch::new();
    let config = overlay("production").config(&scratch).unwrap();
    let jwt = config.auth.jwt.as_ref().unwrap();
    let token = source_of(pod_spec, container, Path::new(env("ROOKERY_TOKEN_FILE"))).unwrap();
    assert_eq!(token.kind, "projected");
    let projected = list(&pod_spec["volumes"])
        .iter()
        .flat_map(|v| list(&v["projected"]["sources"]))
        .find(|s| s["serviceAccountToken"]["path"].as_str() == Some(&token.key))
        .map(|s| &s["serviceAccountToken"])
        .unwrap();
    let audience = str_of(&projected["audience"], "the token's audience");
    assert!(jwt.audiences.iter().any(|a| a == audience), "audience {audience} vs {:?}", jwt.audiences);
    assert_eq!(projected["expirationSeconds"].as_i64(), Some(3600));
    let ca = source_of(pod_spec, container, Path::new(env("ROOKERY_CA_FILE"))).unwrap();
    assert_eq!(ca.key, "ca.crt");
    let url = env("ROOKERY_URL");
    assert!(url.starts_with("https://") && url.ends_with(&format!(":{}", config.listen.port())), "{url}");

    // Its identity is granted in the namespace it calls.
    let identity = format!("system:serviceaccount:{namespace}:{account}");
    let grants = Grants::new(config.auth.grants.clone());
    let calls_in = env("ROOKERY_NAMESPACE");
    assert!(grants.allows(&identity, calls_in, Service::Lock, Access::Write), "{identity} in {calls_in}");

    // The client reads the variables the README uses.
    let cli = read(&repo("client/src/bin/rookery/main.rs"));
    for variable in ["ROOKERY_URL", "ROOKERY_CA_FILE", "ROOKERY_TOKEN_FILE", "ROOKERY_NAMESPACE"] {
        assert!(cli.contains(&format!("env = \"{variable}\"")), "the rookery CLI reads no {variable}");
    }
}

#[test]
fn the_production_overlays_sentinel_example_is_a_config_the_server_starts_with() {
    // The production config shows [redis.sentinel] commented out, and its patch the Secret
    // with the passwords: uncommented, they must give a config the server starts with.
    let scratch = Scratch::new();
    let production = overlay("production");
    let text = production.config_text();
    let start = text.find("# [redis.sentinel]").expect("production's rookery.toml shows [redis.sentinel]");
    let end = start + text[start..].find("\n\n").expect("the example ends with a blank line");
    let example: String = text[start..end]
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or(line)))
        .collect();
    let text = format!("{}{example}{}", &text[..start], &text[end..]);
    let patch = read(&repo("deploy/k8s/overlays/production/rookery-patch.yaml"));
    assert!(patch.contains("# - name: ROOKERY_REDIS_SENTINEL_MASTER_PASSWORD"));
    let ca = scratch.file("ca.crt", "stand-in");
    let variables = [
        ("ROOKERY_REDIS_SENTINEL_MASTER_PASSWORD".to_owned(), "stand-in".to_owned()),
        ("ROOKERY_REDIS_SENTINEL_PASSWORD".to_owned(), "stand-in".to_owned()),
        ("ROOKERY_REDIS_TLS_CA_FILE".to_owned(), ca.to_string_lossy().into_owned()),
    ];
    let config = load(&scratch, &text, &variables).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let sentinel = config.redis.sentinel.expect("the example configures Sentinel");
    assert_eq!(sentinel.addresses.len(), 3);
    assert!(sentinel.tls && sentinel.master_password.is_some() && sentinel.password.is_some());
}
