//! The `rookery` command line against a real server: what an operator types in a shell, with
//! the exit codes scripts rely on (0 done or allowed, 1 not found or denied, 2 an error).

use std::process::{Command, Output};

use crate::harness::{TestServer, namespace, shared_redis, test_config};

/// The `rookery` binary, next to this test's in Cargo's target directory: `make test` builds
/// it before the tests (`cargo test` builds another package's binaries only for its own tests).
fn rookery() -> Command {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("rookery");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --all-features --bins` (make test does)",
        bin.display()
    );
    Command::new(bin)
}

/// Runs `rookery` with `args` against `server` in namespace `ns`, off the async runtime.
async fn run(server: &TestServer, ns: &str, args: &[&str]) -> Output {
    let mut command = rookery();
    command.args(["--url", &server.url(), "--namespace", ns]).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn ratelimit_check_and_reset_from_the_shell() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let ns = namespace("cli-ratelimit");
    let check = ["ratelimit", "check", "login:alice", "--limit", "2", "--period", "1m", "--headers"];

    // Two allowed, then denied: exit codes 0, 0, 1, with the IETF headers of each decision.
    let first = run(&server, &ns, &check).await;
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert!(stdout(&first).starts_with("allowed remaining=1 limit=2 period=1m"), "{}", stdout(&first));
    assert!(stdout(&first).contains("RateLimit-Policy: \"inline\";q=2;w=60"), "{}", stdout(&first));
    assert_eq!(run(&server, &ns, &check).await.status.code(), Some(0));
    let denied = run(&server, &ns, &check).await;
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(stdout(&denied).starts_with("denied remaining=0"), "{}", stdout(&denied));
    assert!(stdout(&denied).contains("retry_after="), "{}", stdout(&denied));
    assert!(stdout(&denied).contains("\nRetry-After: "), "{}", stdout(&denied));

    // A reset gives the key its whole limit back.
    let reset = run(&server, &ns, &["ratelimit", "reset", "login:alice"]).await;
    assert_eq!((reset.status.code(), stdout(&reset).trim()), (Some(0), "reset"), "{reset:?}");
    let again = run(&server, &ns, &check).await;
    assert!(stdout(&again).starts_with("allowed remaining=1"), "{}", stdout(&again));

    // A peek (cost 0) consumes nothing.
    let peek = ["ratelimit", "check", "login:alice", "--limit", "2", "--period", "1m", "--cost", "0"];
    for _ in 0..2 {
        let peeked = run(&server, &ns, &peek).await;
        assert!(stdout(&peeked).starts_with("allowed remaining=1"), "{}", stdout(&peeked));
    }

    // An unknown policy is the server's error, exit code 2; a check without a limit is refused
    // by the command line itself, also 2.
    let unknown = run(&server, &ns, &["ratelimit", "check", "k", "--policy", "no-such-policy"]).await;
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-policy"), "{unknown:?}");
    let no_limit = run(&server, &ns, &["ratelimit", "check", "k"]).await;
    assert_eq!(no_limit.status.code(), Some(2), "{no_limit:?}");
}
