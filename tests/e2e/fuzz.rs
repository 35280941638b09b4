//! Fuzzing every RPC over real gRPC against a real server: hostile but valid protobuf built
//! from the API's own descriptors, mutations of it, and raw garbage. Whatever arrives, the
//! answer is a status from the README's table — never INTERNAL, UNKNOWN or a broken call —
//! no code of the server panics, the server stays healthy, and every call and stream gives
//! its namespace's share back (the namespace's gauges return to zero).
//!
//! The cases are seeded (`ROOKERY_FUZZ_SEED`, default fixed) and bounded
//! (`ROOKERY_FUZZ_CASES` per RPC and kind; `make test` runs a few, `make fuzz` many).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Buf, BufMut};
use futures::StreamExt;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rookery_server::fair_share::ShareOverride;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::{TestServer, eventually, namespace, shared_redis, test_config};

/// Sends and receives messages as raw bytes, so a test can send what no stub would.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Calls `path` with `body` as the raw request message; for a server stream, returns its first
/// message (or how it ended).
pub async fn raw_call(channel: &Channel, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    raw_call_in(channel, path, body, None).await
}

/// [`raw_call`] in namespace `ns` (the header as given, valid or not).
pub async fn raw_call_in(
    channel: &Channel,
    path: &str,
    body: Vec<u8>,
    ns: Option<&str>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(3));
    if let Some(ns) = ns {
        request.metadata_mut().insert("x-rookery-namespace", ns.parse().unwrap());
    }
    let path: http::uri::PathAndQuery = path.parse().unwrap();
    if schema().streaming.contains(&path.to_string()) {
        let mut stream = grpc.server_streaming(request, path, RawCodec).await?.into_inner();
        match stream.next().await {
            Some(message) => message,
            None => Ok(Vec::new()),
        }
    } else {
        Ok(grpc.unary(request, path, RawCodec).await?.into_inner())
    }
}

/// The API as its descriptors describe it.
struct Schema {
    /// Message descriptors by full name (`.rookery.v1.CacheGetRequest`).
    messages: HashMap<String, DescriptorProto>,
    /// (path, input type) of every RPC.
    methods: Vec<(String, String)>,
    /// Paths of the server-streaming RPCs.
    streaming: Vec<String>,
}

fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let set: FileDescriptorSet = prost::Message::decode(rookery::FILE_DESCRIPTOR_SET).unwrap();
        let mut schema = Schema { messages: HashMap::new(), methods: Vec::new(), streaming: Vec::new() };
        fn add(messages: &mut HashMap<String, DescriptorProto>, scope: &str, message: &DescriptorProto) {
            let name = format!("{scope}.{}", message.name());
            for nested in &message.nested_type {
                add(messages, &name, nested);
            }
            messages.insert(name, message.clone());
        }
        for file in &set.file {
            for message in &file.message_type {
                add(&mut schema.messages, &format!(".{}", file.package()), message);
            }
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    if method.server_streaming() {
                        schema.streaming.push(path.clone());
                    }
                    schema.methods.push((path, method.input_type().to_owned()));
                }
            }
        }
        schema
    })
}

/// Largest request a case builds: just over the default `limits.max_message_bytes`.
const MAX_CASE_BYTES: usize = 4 * 1024 * 1024 + 1024;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_len(out: &mut Vec<u8>, field: i32, bytes: &[u8]) {
    put_varint(out, (u64::from(field as u32) << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A number a careless or hostile client might send.
fn hostile_number(rng: &mut StdRng) -> u64 {
    *[0, 1, 2, u64::MAX, i64::MIN as u64, 1 << 53, (1 << 53) + 1, u64::from(u32::MAX), 1 << 31, rng.random()]
        .choose(rng)
        .unwrap()
}

/// A string a careless or hostile client might send: empty, globs, hash-tag syntax, long,
/// non-ASCII, control characters.
fn hostile_string(rng: &mut StdRng) -> Vec<u8> {
    let long = |n: usize| "k".repeat(n);
    let choices = [
        String::new(),
        "*".into(),
        "a[1]?\\".into(),
        "{x}:y".into(),
        "$".into(),
        "0-0".into(),
        "rookery.id".into(),
        "é😀".into(),
        "\0\n\t".into(),
        long(255),
        long(257),
        long(513),
        long(70_000),
        (0..rng.random_range(1..40)).map(|_| rng.random_range(b' '..=b'~') as char).collect(),
    ];
    choices.choose(rng).unwrap().clone().into_bytes()
}

fn hostile_bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = *[0usize, 1, 100, 4096, 65_536, 1_048_577].choose(rng).unwrap();
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes[..]);
    bytes
}

/// A valid encoding of the message `name` whose fields hold hostile values.
fn hostile_message(rng: &mut StdRng, name: &str, depth: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(message) = schema().messages.get(name) else {
        return out;
    };
    for field in &message.field {
        if !rng.random_bool(0.7) {
            continue;
        }
        let repeated = field.label() == prost_types::field_descriptor_proto::Label::Repeated;
        let count = if repeated { *[1, 2, 5, 1001].choose(rng).unwrap() } else { 1 };
        let number = field.number();
        for _ in 0..count {
            // Past the server's message limit every case looks alike; stop growing.
            if out.len() > MAX_CASE_BYTES {
                return out;
            }
            match field.r#type() {
                Type::String => put_len(&mut out, number, &hostile_string(rng)),
                Type::Bytes => put_len(&mut out, number, &hostile_bytes(rng)),
                Type::Message if depth < 4 => {
                    let nested = hostile_message(rng, field.type_name(), depth + 1);
                    put_len(&mut out, number, &nested);
                }
                Type::Message | Type::Group => {}
                Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                    put_varint(&mut out, (u64::from(number as u32) << 3) | 1);
                    out.extend_from_slice(&hostile_number(rng).to_le_bytes());
                }
                Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                    put_varint(&mut out, (u64::from(number as u32) << 3) | 5);
                    out.extend_from_slice(&(hostile_number(rng) as u32).to_le_bytes());
                }
                _ => {
                    put_varint(&mut out, u64::from(number as u32) << 3);
                    put_varint(&mut out, hostile_number(rng));
                }
            }
        }
    }
    out
}

/// `valid` with a few bytes flipped, cut short or inserted.
fn mutated(rng: &mut StdRng, mut valid: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..3) {
            0 if !valid.is_empty() => {
                let at = rng.random_range(0..valid.len());
                valid[at] ^= 1 << rng.random_range(0..8);
            }
            1 if !valid.is_empty() => valid.truncate(rng.random_range(0..valid.len())),
            _ => {
                let at = rng.random_range(0..=valid.len());
                valid.insert(at, rng.random());
            }
        }
    }
    valid
}

fn garbage(rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = vec![0; rng.random_range(0..64)];
    rng.fill(&mut bytes[..]);
    bytes
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `cases` hostile, mutated and garbage requests per RPC (plus garbage to Envoy's rate
/// limit service); returns every answer that broke the status-code table, and how many were
/// refused as undecodable (evidence that garbage reached the decoder).
async fn fuzz(server: &TestServer, ns: &str, seed: u64, cases: u64) -> (Vec<String>, usize) {
    let channel = server.client(ns).await.channel();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut calls = Vec::new();
    let mut methods = schema().methods.clone();
    methods.push((
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit".into(),
        ".no.such.Message".into(),
    ));
    for (path, input) in &methods {
        for case in 0..cases * 3 {
            let body = match case % 3 {
                0 => hostile_message(&mut rng, input, 0),
                1 => {
                    let valid = hostile_message(&mut rng, input, 0);
                    mutated(&mut rng, valid)
                }
                _ => garbage(&mut rng),
            };
            calls.push((path.clone(), body));
        }
    }
    futures::stream::iter(calls)
        .map(|(path, body)| {
            let channel = channel.clone();
            async move {
                let size = body.len();
                raw_call_in(&channel, &path, body, Some(ns)).await.map_err(|status| (path, size, status))
            }
        })
        .buffer_unordered(16)
        .fold((Vec::new(), 0), |(mut broken, mut undecodable), outcome| async move {
            match outcome {
                // INTERNAL is for bugs, UNKNOWN and UNAVAILABLE here mean a handler panicked or
                // the connection broke (Redis is up and the server is not draining).
                Err((path, size, status))
                    if matches!(status.code(), Code::Internal | Code::Unknown | Code::Unavailable) =>
                {
                    broken.push(format!("{path} ({size} bytes): {status:?}"));
                }
                Err((_, _, status)) if status.message().starts_with("the request could not be decoded") => {
                    undecodable += 1;
                }
                _ => {}
            }
            (broken, undecodable)
        })
        .await
}

/// The gauges of `ns`'s share on `/metrics`, summed.
async fn share_in_use(server: &TestServer, ns: &str) -> f64 {
    let (_, body) = server.admin_get("/metrics").await;
    let label = format!("{{namespace=\"{ns}\"}} ");
    body.lines()
        .filter(|line| line.starts_with("rookery_namespace_") && line.contains(&label))
        .filter(|line| !line.starts_with("rookery_namespace_refused_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Counts panics raised in the server's code (by source location), in any thread of this
/// process, from the first call on; other panics (tests' failed assertions) are only passed on.
fn server_panics() -> &'static std::sync::atomic::AtomicUsize {
    static COUNT: std::sync::OnceLock<&'static std::sync::atomic::AtomicUsize> = std::sync::OnceLock::new();
    COUNT.get_or_init(|| {
        let count: &'static std::sync::atomic::AtomicUsize = Box::leak(Box::default());
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("server/src")) {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            previous(info);
        }));
        count
    })
}

#[tokio::test]
async fn every_rpc_answers_hostile_and_garbage_requests_from_the_status_table() {
    let panics_before = server_panics().load(std::sync::atomic::Ordering::SeqCst);
    let ns = namespace("fuzz");
    let mut config = test_config(&shared_redis().url());
    config.fair_share.namespaces.insert(ns.clone(), ShareOverride::default());
    let server = TestServer::start(config).await;
    let seed = env_number("ROOKERY_FUZZ_SEED", 12);
    let cases = env_number("ROOKERY_FUZZ_CASES", 4);
    let (broken, undecodable) = fuzz(&server, &ns, seed, cases).await;
    assert!(broken.is_empty(), "seed {seed}: answers outside the status table:\n{}", broken.join("\n"));
    assert!(undecodable > 0, "no case reached the decoder as garbage");
    let panics = server_panics().load(std::sync::atomic::Ordering::SeqCst) - panics_before;
    assert_eq!(panics, 0, "seed {seed}: the server panicked {panics} times (see the output above)");

    // Still serving, and every call and stream gave the namespace's share back.
    let cache = server.client(&ns).await.cache();
    cache.set("after", b"ok".to_vec(), Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get("after").await.unwrap().unwrap().value, &b"ok"[..]);
    assert!(
        eventually(Duration::from_secs(20), || async { share_in_use(&server, &ns).await == 0.0 }).await,
        "calls or streams still counted after fuzzing: {}",
        share_in_use(&server, &ns).await
    );
}
