//! A JSON-lines echo server and client with only `easynet-tokio` (feature `json`): the
//! driver forwards the core's `json` feature, so `Stream::json_lines()` is there.

use easynet_tokio::core::handler::{
    ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler,
};
use easynet_tokio::core::protocol::Stream;
use easynet_tokio::{AsyncTcpClient, AsyncTcpServer};

type Msg = Vec<String>;

struct Echo;

impl StreamHandler for Echo {
    type Request = Msg;
    type Response = Msg;

    fn handle(&mut self, cx: &mut StreamContext<'_, Msg>, r: Received<Msg>) -> HandlerResult {
        if let Received::Request(msg) = r {
            cx.send(&msg)?;
        }
        Ok(Next::recv())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = AsyncTcpServer::builder(Stream::json_lines(), |_: &ConnInfo| Echo)
        .host("127.0.0.1")
        .port(0)
        .build()?;
    server.activate().await?;
    let addr = server.addresses()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .serve_with_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        }
    });

    let mut client = AsyncTcpClient::connect(addr, Stream::<_, _, Msg, Msg>::json_lines()).await?;
    let msg: Msg = vec!["hello".into(), "json".into()];
    client.send(&msg).await?;
    let reply = client.recv().await?;
    client.close().await;
    assert_eq!(reply, msg);

    let _ = stop.send(());
    run.await??;
    println!("tokio-json: echoed {reply:?}");
    Ok(())
}
