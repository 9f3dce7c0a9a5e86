//! oslo.messaging's RPC over AMQP 0-9-1 (its rabbit driver, envelope 2.0), as
//! neutron-server speaks it to its DHCP agents: calls with a reply queue and a
//! timeout, casts received on the agent's topic queues and the fanout.
//!
//! Wire facts (../shared/NEUTRON.md, captured from a real neutron-server): the
//! body is `{"oslo.version": "2.0", "oslo.message": "<JSON string>"}`; a call
//! carries `_msg_id`, `_reply_q`, `_unique_id` and `_context_*`; replies come
//! through the default exchange as `{result, failure, ending, _msg_id}`,
//! `ending: false` with no result being a keep-alive.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// How the queues and exchanges are declared (oslo's options that change them).
#[derive(Debug, Clone)]
pub struct Declarations {
    /// `control_exchange`: the topic exchange of calls and per-host casts.
    pub exchange: String,
    /// `amqp_durable_queues`.
    pub durable: bool,
    /// `amqp_auto_delete`.
    pub auto_delete: bool,
    /// `rabbit_quorum_queue`.
    pub quorum: bool,
}

/// A message neutron-server sent the agent without waiting for an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Cast {
    pub method: String,
    pub args: Value,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Value>>>>>;

/// A connection to the broker: calls out, casts in.
pub struct Rpc {
    conn: Connection,
    channel: Channel,
    reply_queue: String,
    exchange: String,
    pending: Pending,
}

/// A fresh oslo-style id (a UUID4 as hex).
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// oslo's x-expires for reply and fanout queues: 30 minutes.
const QUEUE_EXPIRES_MS: i64 = 1_800_000;

impl Rpc {
    /// Connects to the first broker of `uris` that answers, declares the
    /// agent's queues (`TOPIC`, `TOPIC.HOST`, `TOPIC_fanout_<id>`) and a reply
    /// queue, and returns the casts as they arrive. The receiver closes when the
    /// connection is lost.
    pub async fn connect(
        uris: &[String],
        heartbeat: u64,
        decl: &Declarations,
        topic: &str,
        host: &str,
    ) -> Result<(Rpc, mpsc::UnboundedReceiver<Cast>)> {
        let mut last_error = anyhow!("transport_url names no broker");
        let mut conn = None;
        for uri in uris {
            let with_heartbeat = if uri.contains('?') {
                format!("{uri}&heartbeat={heartbeat}")
            } else {
                format!("{uri}?heartbeat={heartbeat}")
            };
            let props = ConnectionProperties::default()
                .with_connection_name(format!("xdhcp-agent:{host}").into());
            match Connection::connect(&with_heartbeat, props).await {
                Ok(c) => {
                    conn = Some(c);
                    break;
                }
                Err(e) => last_error = anyhow!("connecting to {}: {e}", redact(uri)),
            }
        }
        let conn = conn.ok_or(last_error)?;
        let channel = conn.create_channel().await.context("opening a channel")?;
        channel
            .exchange_declare(
                decl.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: decl.durable,
                    auto_delete: decl.auto_delete,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {}", decl.exchange))?;
        let fanout = format!("{topic}_fanout");
        channel
            .exchange_declare(
                fanout.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {fanout}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let server_args = if decl.quorum {
            table(&[("x-queue-type", AMQPValue::LongString("quorum".into()))])
        } else {
            FieldTable::default()
        };
        for key in [topic.to_string(), format!("{topic}.{host}")] {
            channel
                .queue_declare(
                    key.as_str().into(),
                    QueueDeclareOptions {
                        durable: decl.durable || decl.quorum,
                        auto_delete: decl.auto_delete && !decl.quorum,
                        ..Default::default()
                    },
                    server_args.clone(),
                )
                .await
                .with_context(|| format!("declaring queue {key}"))?;
            channel
                .queue_bind(
                    key.as_str().into(),
                    decl.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding queue {key}"))?;
            consume_casts(&channel, &key, tx.clone()).await?;
        }
        let fanout_queue = format!("{fanout}_{}", unique_id());
        channel
            .queue_declare(
                fanout_queue.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                table(&[("x-expires", AMQPValue::LongLongInt(QUEUE_EXPIRES_MS))]),
            )
            .await
            .with_context(|| format!("declaring queue {fanout_queue}"))?;
        channel
            .queue_bind(
                fanout_queue.as_str().into(),
                fanout.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding queue {fanout_queue}"))?;
        consume_casts(&channel, &fanout_queue, tx).await?;

        let reply_queue = format!("reply_{}", unique_id());
        channel
            .queue_declare(
                reply_queue.as_str().into(),
                QueueDeclareOptions::default(),
                table(&[("x-expires", AMQPValue::LongLongInt(QUEUE_EXPIRES_MS))]),
            )
            .await
            .with_context(|| format!("declaring queue {reply_queue}"))?;
        let pending: Pending = Arc::default();
        let mut replies = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .context("consuming the reply queue")?;
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = replies.next().await {
                match parse_reply(&delivery.data) {
                    Ok(Some((msg_id, result))) => {
                        if let Some(done) = waiting.lock().expect("pending calls").remove(&msg_id) {
                            let _ = done.send(result);
                        }
                    }
                    Ok(None) => {} // a keep-alive
                    Err(e) => tracing::warn!("a reply that does not parse: {e:#}"),
                }
            }
            // The connection is gone: fail every call still waiting.
            waiting.lock().expect("pending calls").clear();
        });
        Ok((
            Rpc {
                conn,
                channel,
                reply_queue,
                exchange: decl.exchange.clone(),
                pending,
            },
            rx,
        ))
    }

    /// Calls `method` on the servers listening on `topic` and waits up to
    /// `timeout` for the result. A reply carrying a failure is an error naming
    /// the method and the server's exception.
    pub async fn call(
        &self,
        topic: &str,
        method: &str,
        version: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let msg_id = unique_id();
        let (done, result) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending calls")
            .insert(msg_id.clone(), done);
        let mut msg = envelope_fields(method, version, args);
        msg["_msg_id"] = json!(msg_id);
        msg["_reply_q"] = json!(self.reply_queue);
        msg["_timeout"] = Value::Null;
        let body = json!({"oslo.version": "2.0", "oslo.message": msg.to_string()});
        let props = properties().with_expiration(timeout.as_millis().to_string().into());
        let sent = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                topic.into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                props,
            )
            .await;
        if let Err(e) = sent {
            self.pending.lock().expect("pending calls").remove(&msg_id);
            bail!("{method}: publishing the call: {e}");
        }
        match tokio::time::timeout(timeout, result).await {
            Ok(Ok(result)) => result.with_context(|| format!("{method} failed on the server")),
            Ok(Err(_)) => bail!("{method}: the connection to the broker was lost"),
            Err(_) => {
                self.pending.lock().expect("pending calls").remove(&msg_id);
                bail!("{method}: no reply within {timeout:?}")
            }
        }
    }

    /// Whether the connection to the broker is still up.
    pub fn connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, "xdhcp agent stopping".into()).await;
    }
}

/// The broker URI without its password, for messages.
pub fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &uri[s + 3..at];
            let user = cred.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &uri[..s + 3], &uri[at..])
        }
        _ => uri.to_string(),
    }
}

fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_priority(0)
}

/// The inner message of a call or cast, with the admin context neutron's
/// own agents send.
fn envelope_fields(method: &str, version: &str, args: Value) -> Value {
    let now = chrono_like_now();
    json!({
        "method": method,
        "args": args,
        "version": version,
        "_unique_id": unique_id(),
        "_context_user": null,
        "_context_project_id": null,
        "_context_project": null,
        "_context_is_admin": true,
        "_context_read_only": false,
        "_context_show_deleted": false,
        "_context_auth_token": null,
        "_context_request_id": format!("req-{}", uuid::Uuid::new_v4()),
        "_context_global_request_id": null,
        "_context_resource_uuid": null,
        "_context_roles": [],
        "_context_user_identity": "- - - - -",
        "_context_is_admin_project": true,
        "_context_user_id": null,
        "_context_tenant_id": null,
        "_context_timestamp": now,
        "_context_tenant_name": null,
        "_context_project_name": null,
        "_context_user_name": null,
    })
}

/// UTC now as oslo writes timestamps: `2026-12-01 18:14:15.198119`.
pub fn chrono_like_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// The inner message of an oslo envelope (a JSON string in `oslo.message`,
/// or an object in older senders).
fn inner_message(data: &[u8]) -> Result<Value> {
    let outer: Value = serde_json::from_slice(data).context("not JSON")?;
    match outer.get("oslo.message") {
        Some(Value::String(s)) => serde_json::from_str(s).context("oslo.message is not JSON"),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        _ => Ok(outer),
    }
}

/// A reply: `Some((msg_id, result or failure))`, `None` for a keep-alive.
fn parse_reply(data: &[u8]) -> Result<Option<(String, Result<Value>)>> {
    let msg = inner_message(data)?;
    let msg_id = msg["_msg_id"]
        .as_str()
        .ok_or_else(|| anyhow!("a reply without _msg_id"))?
        .to_string();
    if let Some(failure) = msg.get("failure").filter(|f| !f.is_null()) {
        let failure: Value = match failure {
            Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!({"message": s})),
            other => other.clone(),
        };
        let class = failure["class"].as_str().unwrap_or("?");
        let message = failure["message"].as_str().unwrap_or("");
        return Ok(Some((msg_id, Err(anyhow!("{class}: {message}")))));
    }
    if msg["ending"] == json!(false) && msg.get("result").is_none_or(Value::is_null) {
        return Ok(None);
    }
    Ok(Some((msg_id, Ok(msg["result"].clone()))))
}

async fn consume_casts(
    channel: &Channel,
    queue: &str,
    tx: mpsc::UnboundedSender<Cast>,
) -> Result<()> {
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))?;
    let queue = queue.to_string();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            match inner_message(&delivery.data) {
                Ok(msg) => {
                    let method = msg["method"].as_str().unwrap_or_default().to_string();
                    let cast = Cast {
                        method,
                        args: msg["args"].clone(),
                    };
                    if tx.send(cast).is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!(queue, "a message that does not parse: {e:#}"),
            }
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
        // Dropping `tx` tells the agent the connection is gone.
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_as_oslo_sends_them() {
        let wrap = |inner: Value| {
            json!({"oslo.version": "2.0", "oslo.message": inner.to_string()}).to_string()
        };
        /// None: a keep-alive; Some(Ok): a result; Some(Err): the failure's text.
        type Want = Option<std::result::Result<Value, &'static str>>;
        let cases: Vec<(&str, String, Want)> = vec![
            (
                "a result",
                wrap(json!({"result": "alive", "failure": null, "ending": true, "_msg_id": "m1"})),
                Some(Ok(json!("alive"))),
            ),
            (
                "a keep-alive",
                wrap(json!({"result": null, "failure": null, "ending": false, "_msg_id": "m1"})),
                None,
            ),
            (
                "a failure (a JSON string) names the exception",
                wrap(json!({"result": null, "ending": true, "_msg_id": "m1",
                            "failure": json!({"class": "RemoteError", "module": "x", "message": "no such network", "tb": []}).to_string()})),
                Some(Err("RemoteError: no such network")),
            ),
        ];
        for (what, data, want) in cases {
            let got = parse_reply(data.as_bytes()).unwrap();
            match (got, want) {
                (None, None) => {}
                (Some((id, Ok(v))), Some(Ok(w))) => {
                    assert_eq!((id.as_str(), v), ("m1", w), "{what}")
                }
                (Some((_, Err(e))), Some(Err(w))) => assert_eq!(format!("{e}"), w, "{what}"),
                (got, _) => panic!("{what}: got {got:?}"),
            }
        }
    }

    #[test]
    fn casts_and_timestamps() {
        let cast = json!({"oslo.version": "2.0", "oslo.message":
            json!({"method": "port_delete_end", "args": {"payload": {"port_id": "p"}}, "version": "1.0"}).to_string()});
        let msg = inner_message(cast.to_string().as_bytes()).unwrap();
        assert_eq!(msg["method"], "port_delete_end");
        assert_eq!(msg["args"]["payload"]["port_id"], "p");
        let t = chrono_like_now();
        assert_eq!(t.len(), "2026-12-01 18:14:15.198119".len(), "{t}");
        assert!(t.starts_with("20"), "{t}");
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
