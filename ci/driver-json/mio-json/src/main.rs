//! A JSON-lines echo server and client with only `easynet-mio` (feature `json`): the
//! driver forwards the core's `json` feature, so `Stream::json_lines()` is there.

use std::time::Duration;

use easynet_mio::core::handler::{
    ConnInfo, HandlerResult, Next, Received, StreamContext, StreamHandler,
};
use easynet_mio::core::protocol::Stream;
use easynet_mio::{ServerThread, TcpServer, TcpClient};

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TcpServer::builder(Stream::json_lines(), |_: &ConnInfo| Echo)
        .host("127.0.0.1")
        .port(0)
        .build()?;
    let mut thread = ServerThread::start(server)?;
    let addr = thread.addresses()[0];

    let mut client = TcpClient::connect(addr, Stream::<_, _, Msg, Msg>::json_lines())?;
    let msg: Msg = vec!["hello".into(), "json".into()];
    client.send(&msg)?;
    let reply = client.recv_timeout(Duration::from_secs(10))?;
    client.close();
    assert_eq!(reply, msg);

    thread.join(None)?;
    println!("mio-json: echoed {reply:?}");
    Ok(())
}
