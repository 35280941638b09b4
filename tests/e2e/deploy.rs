//! The deployment manifests against the code: the config file in the ConfigMap is loaded by the
//! server's real config loader (with the environment each overlay sets), and ports, probe
//! service names, metrics paths and grace periods in the manifests match the server. A manifest
//! that drifts from the code fails here. (Schemas, yamllint and checkov run in
//! `scripts/validate-deploy.sh`.)

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use rookery_server::config::{Cli, Config};
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn documents(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&std::fs::read_to_string(repo(path)).unwrap()).unwrap()
}

fn find<'a>(documents: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    documents
        .iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Loads the base ConfigMap's config file with the real loader, plus `flags` (what an overlay
/// sets through the environment).
fn load_config(flags: &[&str]) -> Config {
    let mut args = vec!["rookery-server", "--config"];
    let file = repo("deploy/k8s/base/rookery.toml");
    args.push(file.to_str().unwrap());
    args.extend_from_slice(flags);
    Config::load(Cli::try_parse_from(args).unwrap()).expect("the ConfigMap's config file loads")
}

fn port(value: &Yaml, container: &Yaml) -> i64 {
    match value {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("not a port: {other:?}"),
    }
}

#[test]
fn manifests_match_the_server() {
    let config = load_config(&[]);
    let (grpc, admin) = (i64::from(config.listen.port()), i64::from(config.admin_listen.port()));
    let deployment = &documents("deploy/k8s/base/deployment.yaml")[0];
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let ports: Vec<(&str, i64)> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, vec![("grpc", grpc), ("metrics", admin)]);

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
        assert_eq!(port(&grpc_probe["port"], container), grpc, "{probe} port");
        assert!(served.contains(&grpc_probe["service"].as_str().unwrap()), "{probe} service");
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

    // The config file is where the server looks for it.
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    let env = container["env"].as_vec().unwrap();
    let config_env = env.iter().find(|e| e["name"].as_str() == Some("ROOKERY_CONFIG")).unwrap();
    assert_eq!(config_env["value"].as_str(), Some(format!("{mount}/rookery.toml").as_str()));

    // The grace period outlasts the drain, so locks are released before the kill.
    let grace = pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    let drain = config.shutdown.pre_drain_delay + config.shutdown.drain_timeout;
    assert!(grace > drain.as_secs() + 5, "terminationGracePeriodSeconds {grace} vs drain {drain:?}");

    // Services target the container's named ports, on the same numbers.
    for file in ["deploy/k8s/base/service.yaml", "deploy/k8s/base/service-headless.yaml"] {
        for service_port in documents(file)[0]["spec"]["ports"].as_vec().unwrap() {
            assert_eq!(
                port(&service_port["targetPort"], container),
                service_port["port"].as_i64().unwrap(),
                "{file}"
            );
        }
    }

    // The image exposes the same ports and reads the same config path.
    let dockerfile = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("EXPOSE {grpc} {admin}")));
    assert!(dockerfile.contains(&format!("ENV ROOKERY_CONFIG={mount}/rookery.toml")));
}

#[test]
fn every_environment_variable_in_the_manifests_is_one_the_server_reads() {
    let known: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for file in ["deploy/k8s/base/deployment.yaml", "deploy/k8s/overlays/production/rookery-patch.yaml"] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        for name in text.split_whitespace().filter_map(|w| w.strip_prefix("ROOKERY_")) {
            let name = format!(
                "ROOKERY_{}",
                name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            );
            assert!(known.contains(&name), "{file} sets {name}, which the server does not read");
        }
    }
}

#[test]
fn the_production_overlay_configures_tls_to_redis() {
    // What the production overlay sets: the URL from the Secret (rediss://) and the CA file.
    let ca = std::env::temp_dir().join(format!("rookery-deploy-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, "placeholder CA").unwrap();
    let config = load_config(&[
        "--redis-url",
        "rediss://:secret@redis.example.internal:6380",
        "--redis-tls-ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(config.redis.url.starts_with("rediss://"));
    assert_eq!(config.redis.tls_ca_file.as_deref(), Some(ca.as_path()));
    let patch = documents("deploy/k8s/overlays/production/rookery-patch.yaml");
    let deployment = find(&patch, "Deployment", "rookery");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(3));
    let _ = std::fs::remove_file(ca);
}
