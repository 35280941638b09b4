//! `rookery events …`: publish, subscribe, append, read, consumer groups and stream
//! descriptions from the shell.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rookery_client::{AppendOptions, ConsumeOptions, Event, EventsClient, GroupSettings};
use tokio_stream::StreamExt;

use super::parse_attribute;

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Publish a message (UTF-8 text) to a channel; prints how many replicas received it.
    Publish {
        /// The channel.
        channel: String,
        /// The message.
        message: String,
    },
    /// Print messages from channels and patterns until Ctrl-C (gaps are reported on stderr).
    Subscribe {
        /// Channels.
        channels: Vec<String>,
        /// A pattern (`*`, `?`; repeatable).
        #[arg(long = "pattern")]
        patterns: Vec<String>,
    },
    /// Append an entry to a stream; prints its ID.
    Append {
        /// The stream.
        stream: String,
        /// A field as name=value (repeatable, at least one).
        #[arg(long = "field", required = true, value_parser = parse_attribute)]
        fields: Vec<(String, String)>,
        /// Keep about this many entries.
        #[arg(long, default_value_t = 0)]
        max_len: u64,
        /// Makes a retried append safe.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print a stream's entries (from the start, or after an ID; `$` for only new ones).
    Read {
        /// The stream.
        stream: String,
        /// Start after this entry ID (or `$`).
        #[arg(long, default_value = "")]
        after: String,
        /// Keep printing new entries until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Read the stream's dead letters instead.
        #[arg(long)]
        dead_letters: bool,
    },
    /// Create a consumer group (at the first entry; `--start '$'` for new entries only).
    CreateGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
        /// Where the group starts: empty (the first entry), `$`, or after an entry ID.
        #[arg(long, default_value = "")]
        start: String,
        #[command(flatten)]
        settings: GroupSettingsArgs,
    },
    /// Delete a consumer group.
    DeleteGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// Consume as one consumer of a group: print each entry, then acknowledge it.
    Consume {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
        /// This consumer's name (keep it across restarts to get pending entries back).
        consumer: String,
        /// Create the group if it does not exist.
        #[arg(long)]
        create: bool,
        #[command(flatten)]
        settings: GroupSettingsArgs,
        /// Stop after this many entries (default: run until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Describe a stream: length, dead letters, and each group's pending entries, lag and consumers.
    Describe {
        /// The stream.
        stream: String,
    },
}

/// Settings of a group the command creates.
#[derive(Debug, clap::Args)]
pub(crate) struct GroupSettingsArgs {
    /// How long a delivered entry may stay unacknowledged (default: the server's).
    #[arg(long, value_parser = humantime::parse_duration)]
    ack_timeout: Option<Duration>,
    /// Deliveries after which an entry moves to the dead letters (0: never; default: the server's).
    #[arg(long)]
    max_deliveries: Option<u32>,
}

impl GroupSettingsArgs {
    fn settings(&self) -> GroupSettings {
        GroupSettings { ack_timeout: self.ack_timeout, max_deliveries: self.max_deliveries }
    }
}

/// One entry as a line: its ID, then its fields as sorted `name=value` pairs.
fn entry_line(id: &str, fields: &std::collections::HashMap<String, Vec<u8>>) -> String {
    let mut fields: Vec<_> = fields.iter().collect();
    fields.sort();
    let fields: Vec<String> =
        fields.into_iter().map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v))).collect();
    format!("{id} {}", fields.join(" "))
}

/// Runs one `rookery events …` command.
pub(crate) async fn events_command(
    events: &EventsClient,
    command: EventsCommand,
) -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        EventsCommand::Publish { channel, message } => {
            println!("receivers {}", events.publish(channel, message.into_bytes()).await?);
        }
        EventsCommand::Subscribe { channels, patterns } => {
            let mut stream = events.subscribe(channels, patterns).await?;
            eprintln!("subscribed");
            loop {
                tokio::select! {
                    event = stream.next() => match event {
                        Some(Ok(Event::Message { channel, payload, .. })) => {
                            println!("{channel} {}", String::from_utf8_lossy(&payload));
                        }
                        Some(Ok(Event::Gap { reason, missed })) => eprintln!("gap: {reason:?}, {missed} missed"),
                        Some(Err(status)) => return Err(status.into()),
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        EventsCommand::Append { stream, fields, max_len, idempotency_key } => {
            let fields = fields.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            let options = AppendOptions { max_len, max_age: None, idempotency_key };
            let (id, duplicate) = events.append(stream, fields, &options).await?;
            println!("{id}{}", if duplicate { " (duplicate)" } else { "" });
        }
        EventsCommand::Read { stream, after, follow, dead_letters } => {
            let mut entries = if dead_letters {
                events.read_dead_letters(stream, after, follow).await?
            } else {
                events.read(stream, after, follow).await?
            };
            loop {
                tokio::select! {
                    batch = entries.next() => match batch {
                        Some(Ok(batch)) => {
                            for entry in batch {
                                println!("{}", entry_line(&entry.id, &entry.fields));
                            }
                        }
                        Some(Err(status)) => return Err(status.into()),
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        EventsCommand::CreateGroup { stream, group, start, settings } => {
            events.create_group(stream, group, start, settings.settings()).await?;
            println!("created");
        }
        EventsCommand::DeleteGroup { stream, group } => {
            let deleted = events.delete_group(stream, group).await?;
            println!("{}", if deleted { "deleted" } else { "no such group" });
        }
        EventsCommand::Consume { stream, group, consumer, create, settings, count } => {
            // Take no more than will be printed: the rest stays with the group for others.
            let max_in_flight = count.map_or(0, |count| count.min(100) as u32);
            let options = ConsumeOptions {
                create_group: create,
                settings: settings.settings(),
                max_in_flight,
                ..Default::default()
            };
            let mut consumer = events.consume(stream, group, consumer, &options).await?;
            let mut left = count.unwrap_or(u64::MAX);
            while left > 0 {
                tokio::select! {
                    batch = consumer.next() => match batch {
                        Some(Ok(batch)) => {
                            if batch.trimmed > 0 {
                                eprintln!("{} pending entries were trimmed from the stream", batch.trimmed);
                            }
                            let take = batch.entries.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                            for delivery in &batch.entries[..take] {
                                println!("{} (delivery {})", entry_line(&delivery.id, &delivery.fields), delivery.deliveries);
                            }
                            if take > 0 {
                                consumer.ack(batch.entries[..take].iter().map(|d| d.id.clone())).await?;
                            }
                            left -= take as u64;
                        }
                        Some(Err(status)) => return Err(status.into()),
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        EventsCommand::Describe { stream } => {
            let info = events.describe(&stream).await?;
            println!(
                "stream {stream}: {} entries ({} .. {}), {} dead letters",
                info.length, info.first_id, info.last_id, info.dead_letters
            );
            for group in info.groups {
                let age = group.oldest_pending_age.and_then(|d| Duration::try_from(d).ok());
                println!(
                    "group {}: pending {} (delayed {}), lag {}, last delivered {}, oldest pending {}",
                    group.name,
                    group.pending,
                    group.delayed,
                    group.lag.map_or_else(|| "unknown".to_owned(), |lag| lag.to_string()),
                    group.last_delivered_id,
                    age.map_or_else(|| "-".to_owned(), |age| humantime::format_duration(age).to_string()),
                );
                for consumer in group.consumers {
                    let idle = consumer.idle.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default();
                    println!(
                        "  consumer {}: pending {}, idle {}",
                        consumer.name,
                        consumer.pending,
                        humantime::format_duration(idle)
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
