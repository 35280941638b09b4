//! Events.ConsumeWithAcks end to end, spoken raw: acks on the consumer's own call answered in
//! order among the deliveries, the in-flight bound opened by them, a bad first message, and
//! the server-streaming `Consume` with unary `Ack` still served for clients that need it, and
//! a failed ack ending the call so that its entries come back at once.

use std::collections::HashMap;
use std::time::Duration;

use rookery_client::pb::events_consume_response::Event as Out;
use rookery_client::pb::events_consume_with_acks_request::Message;
use rookery_client::{AppendOptions, ConsumeOptions, EventsClient, GroupSettings, pb};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::harness::{RedisProcess, TestServer, namespace, shared_redis, test_config};

fn start(max_in_flight: u32) -> pb::EventsConsumeRequest {
    pb::EventsConsumeRequest {
        stream: "jobs".into(),
        group: "workers".into(),
        consumer: "c1".into(),
        create_group: true,
        settings: None,
        max_in_flight,
    }
}

fn ack(ids: Vec<String>) -> pb::EventsConsumeWithAcksRequest {
    pb::EventsConsumeWithAcksRequest { message: Some(Message::Ack(pb::EventsAckIds { ids })) }
}

async fn append(events: &EventsClient, count: u32) {
    for n in 0..count {
        let fields = HashMap::from([("n".to_owned(), n.to_string().into_bytes())]);
        events.append("jobs", fields, &AppendOptions::default()).await.unwrap();
    }
}

#[tokio::test]
async fn acks_on_the_consumers_own_call_are_answered_in_order_and_open_its_window() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("consume-acks")).await.events();
    append(&events, 10).await;
    let (requests, requests_rx) = mpsc::channel(8);
    requests
        .send(pb::EventsConsumeWithAcksRequest { message: Some(Message::Start(start(4))) })
        .await
        .unwrap();
    let mut responses =
        events.raw().consume_with_acks(ReceiverStream::new(requests_rx)).await.unwrap().into_inner();
    let next = async |responses: &mut tonic::Streaming<pb::EventsConsumeResponse>| {
        responses.message().await.unwrap().unwrap().event.unwrap()
    };
    assert!(matches!(next(&mut responses).await, Out::Started(_)));

    // Four in flight at most: the first four, then nothing until they are acked.
    let mut delivered = Vec::new();
    while delivered.len() < 4 {
        match next(&mut responses).await {
            Out::Deliveries(batch) => delivered.extend(batch.deliveries.into_iter().map(|d| d.id)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered.len(), 4, "the in-flight bound holds");
    // Two acks sent back to back, the second repeating an entry of the first: answered in
    // order, with what each found pending.
    requests.send(ack(delivered[..3].to_vec())).await.unwrap();
    requests.send(ack(delivered[2..4].to_vec())).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 2 || delivered.len() < 10 {
        match next(&mut responses).await {
            Out::Acked(acked) => answers.push(acked.acked),
            Out::Deliveries(batch) => {
                let ids: Vec<String> = batch.deliveries.into_iter().map(|d| d.id).collect();
                delivered.extend(ids.iter().cloned());
                requests.send(ack(ids)).await.unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(answers[..2], [3, 1], "answers in the order of the acks, counting only what was pending");
    assert_eq!(delivered.len(), 10, "the acks opened the window for the rest");
    // Every entry is settled: nothing is pending in the group.
    let mut described = None;
    for _ in 0..100 {
        let info = events.describe("jobs").await.unwrap();
        if info.groups[0].pending == 0 {
            described = Some(info);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(described.is_some(), "every entry acked on the call is settled in Redis");
}

#[tokio::test]
async fn the_first_message_must_start_the_consumer() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("consume-acks-bad")).await.events();
    let first = tokio_stream::iter([ack(vec!["1-0".into()])]);
    let refused = events.raw().consume_with_acks(first).await.expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // A second `start` ends the call with INVALID_ARGUMENT too.
    append(&events, 1).await;
    let twice = [
        pb::EventsConsumeWithAcksRequest { message: Some(Message::Start(start(10))) },
        pb::EventsConsumeWithAcksRequest { message: Some(Message::Start(start(10))) },
    ];
    let mut responses = events.raw().consume_with_acks(tokio_stream::iter(twice)).await.unwrap().into_inner();
    let ended = loop {
        match responses.next().await {
            Some(Ok(_)) => {}
            Some(Err(status)) => break status,
            None => panic!("the call ended without an error"),
        }
    };
    assert_eq!(ended.code(), Code::InvalidArgument, "{ended:?}");
}

#[tokio::test]
async fn the_server_streaming_consume_with_unary_acks_still_serves() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("consume-unary")).await.events();
    append(&events, 3).await;
    let mut responses = events.raw().consume(start(10)).await.unwrap().into_inner();
    let mut ids = Vec::new();
    while ids.len() < 3 {
        match responses.message().await.unwrap().unwrap().event.unwrap() {
            Out::Started(_) => {}
            Out::Deliveries(batch) => ids.extend(batch.deliveries.into_iter().map(|d| d.id)),
            other => panic!("Consume sends no {other:?}"),
        }
    }
    assert_eq!(events.ack("jobs", "workers", ids).await.unwrap(), 3);
}

#[tokio::test]
async fn a_failed_ack_ends_the_call_and_its_entries_come_back_first_to_the_same_consumer() {
    // A Redis of its own, whose ACL can refuse XACK while every other command goes on.
    let redis = RedisProcess::start(&[]);
    let server = TestServer::start(test_config(&redis.url())).await;
    let events = server.client(&namespace("consume-acks-failed")).await.events();
    append(&events, 3).await;
    // An hour's ack timeout: entries seen again within the test come from the consumer's own
    // pending list, not from another consumer's claim after the timeout.
    let options = ConsumeOptions {
        create_group: true,
        settings: GroupSettings { ack_timeout: Some(Duration::from_secs(3600)), max_deliveries: None },
        ..ConsumeOptions::default()
    };
    let mut consumer = events.consume("jobs", "workers", "c1", &options).await.unwrap();
    let first = consumer.next().await.unwrap().unwrap();
    let ids: Vec<String> = first.entries.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 3);

    let acl = async |rule: &str| {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg(rule)
            .query_async::<()>(&mut redis.conn().await)
            .await
            .unwrap();
    };
    acl("-xack").await;
    let failed = consumer.ack(ids.clone()).await.expect_err("Redis refused the ack");
    // The call ends with the ack's status: no `acked` of 0 while the entries stay pending.
    let ended = consumer.next().await.expect("the call ends with a status").expect_err("an error");
    assert_eq!(ended.code(), failed.code(), "{ended:?} / {failed:?}");
    assert_ne!(failed.code(), Code::Ok);
    assert!(consumer.next().await.is_none(), "nothing after the status");
    acl("+xack").await;

    // Consuming again under the same name delivers them at once, as second deliveries.
    let mut again = events.consume("jobs", "workers", "c1", &options).await.unwrap();
    let redelivered = again.next().await.unwrap().unwrap();
    let back: Vec<(String, u64)> = redelivered.entries.iter().map(|d| (d.id.clone(), d.deliveries)).collect();
    assert_eq!(back, ids.iter().map(|id| (id.clone(), 2)).collect::<Vec<_>>());
    assert_eq!(again.ack(ids).await.unwrap(), 3);
}

#[tokio::test]
async fn an_ack_after_the_call_ended_fails_with_the_status_it_ended_with() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("consume-acks-ended")).await.events();
    append(&events, 2).await;
    let options = ConsumeOptions { create_group: true, ..ConsumeOptions::default() };
    let mut consumer = events.consume("jobs", "workers", "c1", &options).await.unwrap();
    let ids: Vec<String> =
        consumer.next().await.unwrap().unwrap().entries.into_iter().map(|d| d.id).collect();
    // A newer Consume takes the name over: the older call ends with ABORTED.
    let _newer = events.consume("jobs", "workers", "c1", &options).await.unwrap();
    let ended = consumer.next().await.unwrap().expect_err("the older call ends");
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    // An ack made afterwards learns that status at once rather than waiting for an answer.
    let late = tokio::time::timeout(Duration::from_secs(30), consumer.ack(ids))
        .await
        .expect("an ack on an ended call is answered");
    assert_eq!(late.expect_err("the call has ended").code(), Code::Aborted);
}

#[tokio::test]
async fn workers_ack_through_an_acker_while_the_consumer_reads_on() {
    let server = TestServer::start(test_config(&shared_redis().url())).await;
    let events = server.client(&namespace("consume-acker")).await.events();
    append(&events, 200).await;
    // Ten in flight at most: the consumer only gets all 200 if the workers' acks land.
    let options = ConsumeOptions { create_group: true, max_in_flight: 10, ..ConsumeOptions::default() };
    let mut consumer = events.consume("jobs", "workers", "c1", &options).await.unwrap();
    let mut workers = tokio::task::JoinSet::new();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 200 {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("acks from the workers open the window")
            .unwrap()
            .unwrap();
        let ids: Vec<String> = batch.entries.into_iter().map(|d| d.id).collect();
        for id in &ids {
            assert!(seen.insert(id.clone()), "{id} delivered twice");
        }
        let acker = consumer.acker();
        workers.spawn(async move { (ids.len() as u64, acker.ack(ids).await) });
    }
    while let Some(worker) = workers.join_next().await {
        let (sent, acked) = worker.unwrap();
        assert_eq!(acked.unwrap(), sent, "every entry acked was pending");
    }
    let info = events.describe("jobs").await.unwrap();
    assert_eq!(info.groups[0].pending, 0, "nothing left pending: {info:?}");
}
