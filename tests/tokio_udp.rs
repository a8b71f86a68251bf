//! The async UDP server over loopback: per-peer routines, ordering, timeouts, parse errors,
//! lifecycle (reference/behaviour.md §3).

#![cfg(feature = "tokio")]

use std::time::Duration;

use easynet::aio::{AsyncUdpClient, AsyncUdpServer, ClientError, ServerError};
use easynet::datagram::DatagramConfig;
use easynet::handler::{ConnInfo, DatagramContext, DatagramHandler, HandlerResult, Next, Received};
use easynet::protocol::Datagram;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// "collect N": gathers the next N datagrams of this peer into one reply (a routine with
/// several receive points); "slow": waits for a follow-up with a 100 ms timeout; anything
/// else is echoed. Parse errors answer "error".
#[derive(Default)]
struct Handler {
    collect: Option<(usize, Vec<String>)>,
    waiting: bool,
}

impl DatagramHandler for Handler {
    type Request = String;
    type Response = String;

    fn handle(
        &mut self,
        cx: &mut DatagramContext<'_, String>,
        r: Received<String>,
    ) -> HandlerResult {
        let text = match r {
            Received::Request(t) => t,
            Received::ParseError(_) => {
                cx.send("error".to_owned())?;
                return Ok(Next::Close);
            }
            Received::Timeout => {
                self.waiting = false;
                cx.send("timeout".to_owned())?;
                return Ok(Next::Close);
            }
        };
        if let Some((n, got)) = self.collect.as_mut() {
            got.push(text);
            if got.len() == *n {
                let reply = got.join(",");
                self.collect = None;
                cx.send(&reply)?;
                return Ok(Next::Close);
            }
            return Ok(Next::recv());
        }
        if let Some(n) = text.strip_prefix("collect ") {
            self.collect = Some((n.parse()?, Vec::new()));
            return Ok(Next::recv());
        }
        if text == "slow" {
            self.waiting = true;
            return Ok(Next::recv_timeout(Duration::from_millis(100)));
        }
        if self.waiting {
            self.waiting = false;
            cx.send(format!("late {text}"))?;
            return Ok(Next::Close);
        }
        cx.send(&text)?;
        Ok(Next::Close)
    }
}

type Server =
    AsyncUdpServer<fn(&ConnInfo) -> Handler, Datagram<easynet::protocol::Utf8, String, String>>;

fn server() -> Server {
    let make: fn(&ConnInfo) -> Handler = |_| Handler::default();
    AsyncUdpServer::builder(Datagram::lines(), make)
        .host("127.0.0.1")
        .datagram_config(DatagramConfig::default().with_max_pending(64))
        .build()
        .unwrap()
}

async fn start(server: &Server) -> tokio::task::JoinHandle<Result<(), ServerError>> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, rx.wait_for(|u| *u)).await.unwrap().unwrap();
    task
}

async fn client(
    server: &Server,
) -> AsyncUdpClient<Datagram<easynet::protocol::Utf8, String, String>> {
    AsyncUdpClient::connect(server.addresses()[0], Datagram::lines())
        .await
        .unwrap()
}

async fn recv(c: &mut AsyncUdpClient<Datagram<easynet::protocol::Utf8, String, String>>) -> String {
    c.recv_timeout(LIMIT).await.unwrap()
}

#[tokio::test]
async fn echo_and_lifecycle() {
    let server = server();
    assert!(server.addresses().is_empty());
    server.activate().await.unwrap();
    server.activate().await.unwrap();
    assert_eq!(server.addresses().len(), 1);
    let task = start(&server).await;
    assert!(server.is_serving());
    assert!(matches!(
        server.serve().await,
        Err(ServerError::AlreadyRunning)
    ));
    let mut c = client(&server).await;
    c.send(&"hello".to_owned()).await.unwrap();
    assert_eq!(recv(&mut c).await, "hello");
    server.shutdown().await;
    task.await.unwrap().unwrap();
    assert!(server.is_listening());
    let task = start(&server).await;
    c.send(&"again".to_owned()).await.unwrap();
    assert_eq!(recv(&mut c).await, "again");
    server.close();
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    assert!(server.addresses().is_empty());
    assert!(matches!(server.activate().await, Err(ServerError::Closed)));
}

#[tokio::test]
async fn one_routine_collects_a_peers_next_datagrams_in_order() {
    let server = server();
    let task = start(&server).await;
    let mut a = client(&server).await;
    let mut b = client(&server).await;
    a.send(&"collect 3".to_owned()).await.unwrap();
    for i in 0..3 {
        a.send(&format!("a{i}")).await.unwrap();
    }
    b.send(&"solo".to_owned()).await.unwrap();
    assert_eq!(
        recv(&mut b).await,
        "solo",
        "other peers are served independently"
    );
    assert_eq!(recv(&mut a).await, "a0,a1,a2");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn timeout_reaches_the_routine() {
    let server = server();
    let task = start(&server).await;
    let mut c = client(&server).await;
    c.send(&"slow".to_owned()).await.unwrap();
    assert_eq!(recv(&mut c).await, "timeout");
    c.send(&"slow".to_owned()).await.unwrap();
    c.send(&"quick".to_owned()).await.unwrap();
    assert_eq!(recv(&mut c).await, "late quick");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn invalid_utf8_is_a_parse_error_for_that_datagram_only() {
    let server = server();
    let task = start(&server).await;
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    raw.connect(server.addresses()[0]).await.unwrap();
    raw.send(b"\xff\xfe").await.unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(LIMIT, raw.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"error");
    raw.send(b"fine").await.unwrap();
    let n = timeout(LIMIT, raw.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"fine");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn client_timeout_and_close_are_typed() {
    let server = server();
    server.activate().await.unwrap();
    let mut c = client(&server).await;
    // Not serving yet: nothing answers.
    assert!(matches!(
        c.recv_timeout(Duration::from_millis(50)).await,
        Err(ClientError::Timeout)
    ));
    c.close();
    assert!(matches!(
        c.send(&"x".to_owned()).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn udp_client_responses_stop_at_the_deadline() {
    let server = server();
    let task = start(&server).await;
    let mut c = client(&server).await;
    for t in ["a", "b"] {
        c.send(&t.to_owned()).await.unwrap();
    }
    let mut got = Vec::new();
    let mut responses = c.responses(Some(Duration::from_millis(300)));
    while let Some(r) = responses.next().await {
        got.push(r.unwrap());
    }
    got.sort();
    assert_eq!(got, ["a", "b"]);
    server.shutdown().await;
    task.await.unwrap().unwrap();
}
