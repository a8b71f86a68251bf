//! Async datagram handlers on the async UDP server over loopback: one routine per peer,
//! its receives get the peer's next datagrams in order, timeouts, errors, send errors.

#![cfg(feature = "tokio")]

use std::time::Duration;

use easynet::aio::{
    AsyncDatagramHandler, AsyncUdpClient, AsyncUdpServer, DatagramPeer, DatagramSendError,
    RecvError, ServerError,
};
use easynet::handler::{ConnInfo, HandlerError};
use easynet::protocol::{Datagram, Utf8};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

/// "sum N": adds the next N numbers of this peer; "wait": next datagram within 100 ms or
/// "timeout"; "boom": error; "panic"; "big": a datagram too large to send; "ignore":
/// returns without receiving; else echo.
#[derive(Default)]
struct Handler {
    calls: usize,
}

impl AsyncDatagramHandler for Handler {
    type Request = String;
    type Response = String;

    async fn handle(
        &mut self,
        client: &mut DatagramPeer<String, String>,
    ) -> Result<(), HandlerError> {
        self.calls += 1;
        let first = match client.recv().await {
            Ok(t) => t,
            Err(RecvError::Parse(_)) => {
                client.send(&"error".to_owned()).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(n) = first.strip_prefix("sum ") {
            let mut total: i64 = 0;
            for _ in 0..n.parse::<usize>()? {
                total += client.recv().await?.parse::<i64>()?;
            }
            client.send(&total.to_string()).await?;
            return Ok(());
        }
        match first.as_str() {
            "wait" => match client.recv_timeout(Duration::from_millis(100)).await {
                Ok(t) => client.send(&format!("got {t}")).await?,
                Err(RecvError::Timeout) => client.send(&"timeout".to_owned()).await?,
                Err(e) => return Err(e.into()),
            },
            "hold" => {
                // Busy: the peer's next datagrams wait in its queue, in order.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut got = Vec::new();
                for _ in 0..5 {
                    got.push(client.recv().await?);
                }
                client.send(&got.join(",")).await?;
            }
            "boom" => return Err("boom".into()),
            "panic" => panic!("requested panic"),
            "calls" => client.send(&self.calls.to_string()).await?,
            "big" => match client.send(&"x".repeat(70_000)).await {
                Err(DatagramSendError::Serialize(_)) => {
                    client.send(&"too large".to_owned()).await?
                }
                other => client.send(&format!("unexpected {other:?}")).await?,
            },
            other => client.send(&other.to_owned()).await?,
        }
        Ok(())
    }
}

type Server = AsyncUdpServer<fn(&ConnInfo) -> Handler, Datagram<Utf8, String, String>>;
type Client = AsyncUdpClient<Datagram<Utf8, String, String>>;

async fn start() -> (Server, tokio::task::JoinHandle<Result<(), ServerError>>) {
    let make: fn(&ConnInfo) -> Handler = |_| Handler::default();
    let server = AsyncUdpServer::builder(Datagram::lines(), make)
        .host("127.0.0.1")
        .build_async()
        .unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let s = server.clone();
    let task = tokio::spawn(async move { s.serve_notify(tx).await });
    timeout(LIMIT, rx.wait_for(|u| *u)).await.unwrap().unwrap();
    (server, task)
}

async fn client(server: &Server) -> Client {
    AsyncUdpClient::connect(server.addresses()[0], Datagram::lines())
        .await
        .unwrap()
}

async fn ask(c: &mut Client, text: &str) -> String {
    c.send(&text.to_owned()).await.unwrap();
    c.recv_timeout(LIMIT).await.unwrap()
}

#[tokio::test]
async fn a_routine_receives_its_peers_next_datagrams_in_order() {
    let (server, task) = start().await;
    let mut a = client(&server).await;
    let mut b = client(&server).await;
    a.send(&"sum 3".to_owned()).await.unwrap();
    for n in ["1", "20", "300"] {
        a.send(&n.to_owned()).await.unwrap();
    }
    assert_eq!(ask(&mut b, "independent").await, "independent");
    assert_eq!(a.recv_timeout(LIMIT).await.unwrap(), "321");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn timeouts_parse_errors_and_send_errors_reach_the_handler() {
    let (server, task) = start().await;
    let mut c = client(&server).await;
    assert_eq!(ask(&mut c, "wait").await, "timeout");
    c.send(&"wait".to_owned()).await.unwrap();
    c.send(&"now".to_owned()).await.unwrap();
    assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "got now");
    assert_eq!(ask(&mut c, "big").await, "too large");
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    raw.connect(server.addresses()[0]).await.unwrap();
    raw.send(b"\xff").await.unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(LIMIT, raw.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"error");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn errors_and_panics_end_the_routine_and_the_peer_gets_a_fresh_handler() {
    let (server, task) = start().await;
    let mut c = client(&server).await;
    assert_eq!(ask(&mut c, "calls").await, "1");
    assert_eq!(
        ask(&mut c, "calls").await,
        "2",
        "the handler lives across routines"
    );
    c.send(&"boom".to_owned()).await.unwrap();
    assert_eq!(
        ask(&mut c, "calls").await,
        "1",
        "a failed handler is replaced"
    );
    c.send(&"panic".to_owned()).await.unwrap();
    assert_eq!(
        ask(&mut c, "calls").await,
        "1",
        "a panicked handler is replaced"
    );
    server.shutdown().await;
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn datagrams_that_arrive_while_the_routine_is_busy_are_queued_in_order() {
    let (server, task) = start().await;
    let mut c = client(&server).await;
    c.send(&"hold".to_owned()).await.unwrap();
    for i in 0..5 {
        c.send(&format!("q{i}")).await.unwrap();
    }
    assert_eq!(c.recv_timeout(LIMIT).await.unwrap(), "q0,q1,q2,q3,q4");
    server.shutdown().await;
    task.await.unwrap().unwrap();
}
