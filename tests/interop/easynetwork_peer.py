"""The Python side of easynet's interoperability tests (tests/interop_easynetwork.rs).

Runs the real EasyNetwork library (pinned in requirements.txt) as a peer of easynet:

  version
      Prints {"event": "version", "easynetwork": V, "python": V}.

  server --transport tcp|udp --serializer json|line [--encoding E]
         [--certfile PEM --keyfile PEM] [--no-standard-compatible] [--close-on JSON]
      An EasyNetwork echo server (AsyncTCPNetworkServer / AsyncUDPNetworkServer) on
      127.0.0.1, port 0. Runs until its standard input is closed, then shuts down. With
      --close-on (TCP), a request equal to that packet is not echoed: the server closes
      that connection instead.

  client --transport tcp|udp --serializer json|line --port P [--api sync|async|sync,async]
         [--encoding E] [--cafile PEM --server-hostname NAME] [--no-standard-compatible]
         [--ssl-shutdown-timeout S] [--timeout S] [--expect N] --messages JSON_ARRAY
      An EasyNetwork client (TCPNetworkClient / UDPNetworkClient, or their async
      variants) that sends every packet of JSON_ARRAY (strings for the line serializer),
      then receives N replies (N defaults to the number of packets), each within
      --timeout seconds, then closes; once per API named in --api (a new connection each).

Everything the peer observes goes to standard output as one JSON object per line, so the
Rust test reads events instead of sleeping:

  {"event": "listening", "port": P}                       (server, once, first)
  {"event": "session", "api": A}                          (client: a client starts)
  {"event": "connected"} / {"event": "disconnected"}      (server, TCP)
  {"event": "request", "value": V, "repr": R}             (server: a decoded request)
  {"event": "reply", "value": V, "repr": R}               (client: a decoded reply)
  {"event": "parse_error", "message": M}                  (either side)
  {"event": "error", "type": T, "message": M}             (client: recv/send failed)
  {"event": "closed", "seconds": S}                       (client: close() returned)
  {"event": "stopped"}                                    (server: after shutdown)

`value` is the packet as JSON (null with "unrepresentable": true if it has no standard JSON
form, e.g. NaN) and `repr` is Python's repr of it. EasyNetwork's own log records (WARNING
and above) go to standard error, where the test looks for them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import platform
import ssl
import sys
import time
from typing import Any

from easynetwork.clients import AsyncTCPNetworkClient, AsyncUDPNetworkClient, TCPNetworkClient, UDPNetworkClient
from easynetwork.exceptions import BaseProtocolParseError
from easynetwork.protocol import DatagramProtocol, StreamProtocol
from easynetwork.serializers import JSONSerializer, StringLineSerializer
from easynetwork.servers import AsyncTCPNetworkServer, AsyncUDPNetworkServer
from easynetwork.servers.handlers import AsyncDatagramRequestHandler, AsyncStreamRequestHandler


def emit(event: str, **fields: Any) -> None:
    record = {"event": event, **fields}
    sys.stdout.write(json.dumps(record, ensure_ascii=True, allow_nan=False) + "\n")
    sys.stdout.flush()


def packet_fields(packet: Any) -> dict[str, Any]:
    try:
        json.dumps(packet, allow_nan=False)
    except (TypeError, ValueError):
        return {"value": None, "unrepresentable": True, "repr": repr(packet)}
    return {"value": packet, "repr": repr(packet)}


def make_serializer(args: argparse.Namespace) -> Any:
    if args.serializer == "json":
        if args.encoding is None:
            return JSONSerializer()
        return JSONSerializer(encoding=args.encoding)
    if args.encoding is None:
        return StringLineSerializer()  # newline="LF", encoding="ascii": EasyNetwork's defaults
    return StringLineSerializer(encoding=args.encoding)


def decode_messages(args: argparse.Namespace, text: str) -> list[Any]:
    messages = json.loads(text)  # accepts NaN and Infinity, as Python's json does
    if not isinstance(messages, list):
        raise SystemExit(f"--messages takes a JSON array, got {text!r}")
    if args.serializer == "line" and not all(isinstance(m, str) for m in messages):
        raise SystemExit(f"line messages are strings, got {text!r}")
    return messages


# ---------------------------------------------------------------- server


class StreamEcho(AsyncStreamRequestHandler[Any, Any]):
    def __init__(self, close_on: Any) -> None:
        self.close_on = close_on

    async def on_connection(self, client: Any) -> None:
        emit("connected")

    async def handle(self, client: Any) -> Any:
        try:
            request = yield
        except BaseProtocolParseError as exc:
            emit("parse_error", message=str(exc.error))
            return
        emit("request", **packet_fields(request))
        if self.close_on is not None and request == self.close_on:
            await client.aclose()  # a graceful close (TLS: close_notify unless not standard-compatible)
            return
        await client.send_packet(request)

    async def on_disconnection(self, client: Any) -> None:
        emit("disconnected")


class DatagramEcho(AsyncDatagramRequestHandler[Any, Any]):
    async def handle(self, client: Any) -> Any:
        try:
            request = yield
        except BaseProtocolParseError as exc:
            emit("parse_error", message=str(exc.error))
            return
        emit("request", **packet_fields(request))
        await client.send_packet(request)


async def run_server(args: argparse.Namespace) -> None:
    serializer = make_serializer(args)
    server: AsyncTCPNetworkServer[Any, Any] | AsyncUDPNetworkServer[Any, Any]
    if args.transport == "tcp":
        context = None
        if args.certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.certfile, args.keyfile)
        server = AsyncTCPNetworkServer(
            "127.0.0.1",
            0,
            StreamProtocol(serializer),
            StreamEcho(None if args.close_on is None else json.loads(args.close_on)),
            ssl=context,
            ssl_standard_compatible=args.standard_compatible if context else None,
            ssl_shutdown_timeout=args.ssl_shutdown_timeout if context else None,
        )
    else:
        server = AsyncUDPNetworkServer("127.0.0.1", 0, DatagramProtocol(serializer), DatagramEcho())
    async with server:
        is_up = asyncio.Event()
        serving = asyncio.create_task(server.serve_forever(is_up_event=is_up))
        await asyncio.wait_for(is_up.wait(), 30)
        emit("listening", port=server.get_addresses()[0].port)
        # The test closes our standard input to stop us (or dies, which closes it too).
        await asyncio.to_thread(sys.stdin.buffer.read)
        await server.shutdown()
        serving.cancel()
        try:
            await serving
        except asyncio.CancelledError:
            pass
    emit("stopped")


# ---------------------------------------------------------------- client


def client_tls(args: argparse.Namespace) -> dict[str, Any]:
    if not args.cafile:
        return {}
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.cafile)
    return {
        "ssl": context,
        "server_hostname": args.server_hostname,
        "ssl_standard_compatible": args.standard_compatible,
        "ssl_shutdown_timeout": args.ssl_shutdown_timeout,
    }


def report_error(exc: BaseException) -> None:
    if isinstance(exc, BaseProtocolParseError):
        emit("parse_error", message=str(exc.error))
    else:
        emit("error", type=type(exc).__name__, message=str(exc))


def run_sync_client(args: argparse.Namespace, messages: list[Any]) -> None:
    serializer = make_serializer(args)
    address = ("127.0.0.1", args.port)
    client: TCPNetworkClient[Any, Any] | UDPNetworkClient[Any, Any]
    if args.transport == "tcp":
        client = TCPNetworkClient(address, StreamProtocol(serializer), connect_timeout=args.timeout, **client_tls(args))
    else:
        client = UDPNetworkClient(address, DatagramProtocol(serializer))
    try:
        for message in messages:
            client.send_packet(message, timeout=args.timeout)
        for _ in range(args.expect):
            try:
                reply = client.recv_packet(timeout=args.timeout)
            except BaseProtocolParseError as exc:
                report_error(exc)
                continue
            except Exception as exc:  # a timeout, EOF...: reported, then stop receiving
                report_error(exc)
                break
            emit("reply", **packet_fields(reply))
    finally:
        start = time.monotonic()
        client.close()
        emit("closed", seconds=time.monotonic() - start)


async def run_async_client(args: argparse.Namespace, messages: list[Any]) -> None:
    serializer = make_serializer(args)
    address = ("127.0.0.1", args.port)
    client: AsyncTCPNetworkClient[Any, Any] | AsyncUDPNetworkClient[Any, Any]
    if args.transport == "tcp":
        client = AsyncTCPNetworkClient(address, StreamProtocol(serializer), **client_tls(args))
    else:
        client = AsyncUDPNetworkClient(address, DatagramProtocol(serializer))
    try:
        await asyncio.wait_for(client.wait_connected(), args.timeout)
        for message in messages:
            await asyncio.wait_for(client.send_packet(message), args.timeout)
        for _ in range(args.expect):
            try:
                reply = await asyncio.wait_for(client.recv_packet(), args.timeout)
            except BaseProtocolParseError as exc:
                report_error(exc)
                continue
            except Exception as exc:
                report_error(exc)
                break
            emit("reply", **packet_fields(reply))
    finally:
        start = time.monotonic()
        await client.aclose()
        emit("closed", seconds=time.monotonic() - start)


# ---------------------------------------------------------------- main


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["server", "client", "version"])
    parser.add_argument("--transport", choices=["tcp", "udp"], default="tcp")
    parser.add_argument("--serializer", choices=["json", "line"], default="json")
    parser.add_argument("--encoding", default=None, help="the serializer's encoding (its default if absent)")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--cafile")
    parser.add_argument("--server-hostname", default="localhost")
    parser.add_argument("--no-standard-compatible", dest="standard_compatible", action="store_false")
    parser.add_argument("--ssl-shutdown-timeout", type=float, default=None)
    parser.add_argument("--port", type=int)
    parser.add_argument("--close-on", default=None, help="server, TCP: a JSON packet on which it closes the connection")
    parser.add_argument("--api", default="sync", help="sync, async, or both in turn: sync,async")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--expect", type=int, default=None)
    parser.add_argument("--messages", default="[]", help="a JSON array of the packets to send")
    args = parser.parse_args()

    if args.mode == "version":
        emit("version", easynetwork=importlib.metadata.version("easynetwork"), python=platform.python_version())
        return
    if args.mode == "server":
        if bool(args.certfile) != bool(args.keyfile):
            parser.error("--certfile and --keyfile go together")
        asyncio.run(run_server(args))
        return

    if args.port is None:
        parser.error("client mode needs --port")
    messages = decode_messages(args, args.messages)
    if args.expect is None:
        args.expect = len(messages)
    for api in args.api.split(","):
        emit("session", api=api)
        if api == "sync":
            run_sync_client(args, messages)
        elif api == "async":
            asyncio.run(run_async_client(args, messages))
        else:
            parser.error(f"unknown --api {api!r}")


if __name__ == "__main__":
    main()
