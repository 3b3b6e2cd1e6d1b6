"""Inter-region latency for the WAN benchmark. This kernel has no netem, so latency is added in user space: one
proxy per region listens on the region's address in front of each service (which listens on loopback) and
holds every chunk of data `--delay-ms` before passing it on, both ways, for connections from another region
only. One proxy on the path delays each direction once: the round trip between regions is twice the delay.

Data is read as it arrives and written once due, so a connection's throughput is still set by the links (tbf),
not by the delay; at most QUEUE_CHUNKS chunks wait per direction (4 MiB, well above 50 Mbit/s x 80 ms), after
which the proxy stops reading and TCP's flow control pushes back.

    python bench/wan_proxy.py serve --listen 10.77.2.2 --own-network 10.77.2.0/24 --ports 8786,9000 [--echo-port 9999]
    python bench/wan_proxy.py rtt --host 10.77.2.2 --port 9999 --count 20     # prints JSON, in milliseconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import ipaddress
import json
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
CHUNK = 64 * 1024
QUEUE_CHUNKS = 64


class Turns:
    """How often a connection's data changed direction: each request answered across the WAN is two turns, so
    half of them counts the round trips (a batched stream that talks both ways at once counts fewer)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: str | None = None

    def passed(self, direction: str) -> None:
        if direction != self.last:
            self.count += 1
            self.last = direction


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
                   counted: list[int], turns: Turns, direction: str) -> None:
    """Pass one direction on; `counted[0]` adds up the bytes passed, `turns` the changes of direction."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=QUEUE_CHUNKS)

    async def receive() -> None:
        try:
            while data := await reader.read(CHUNK):
                await queue.put((loop.time() + delay, data))
        except OSError:
            pass
        await queue.put((loop.time() + delay, b""))  # end of stream, delayed like the data before it

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            counted[0] += len(data)
            turns.passed(direction)
            await writer.drain()

    receiving = asyncio.create_task(receive())
    try:
        await send()
    except OSError:
        pass
    finally:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await receiving


def is_foreign(peer: str, own_network: IPNetwork) -> bool:
    """A connection from another region. Connections keep their source address across the router (no NAT), and
    the region's own processes reach the proxy from the region's address."""
    return ipaddress.ip_address(peer) not in own_network


async def _handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target: str, port: int,
                  delay: float, own_network: IPNetwork, account: Path | None) -> None:
    peer = client_writer.get_extra_info("peername")[0]
    foreign = is_foreign(peer, own_network)
    wait = delay if foreign else 0.0
    received, sent, turns = [0], [0], Turns()
    try:
        server_reader, server_writer = await asyncio.open_connection(target, port)
    except OSError:
        client_writer.close()
        return
    for writer in (client_writer, server_writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(_forward(client_reader, server_writer, wait, received, turns, "in"),
                             _forward(server_reader, client_writer, wait, sent, turns, "out"))
    except asyncio.CancelledError:
        pass  # the proxy is stopping: drop the connection quietly
    finally:
        for writer in (client_writer, server_writer):
            writer.close()
        if account is not None:  # one line per connection, so a benchmark can say which service moved what
            with account.open("a") as lines:
                lines.write(json.dumps({"time": time.time(), "port": port, "peer": peer, "foreign": foreign,
                                        "received": received[0], "sent": sent[0],
                                        "round_trips": turns.count // 2}) + "\n")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    writer.close()


async def serve(listen: str, ports: list[int], target: str, delay: float, own_network: IPNetwork,
                echo_port: int | None = None, account: Path | None = None) -> None:
    servers = []
    if echo_port is not None:
        servers.append(await asyncio.start_server(_echo, target, echo_port))
        ports = [*ports, echo_port]
    for port in ports:
        servers.append(await asyncio.start_server(functools.partial(
            _handle, target=target, port=port, delay=delay, own_network=own_network, account=account), listen, port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"proxy on {listen}: ports {ports}, {delay * 1000:.0f} ms for other regions", flush=True)
    await stop.wait()
    for server in servers:
        server.close()


def measure_rtt(host: str, port: int, count: int) -> dict[str, float]:
    """Round trips of one small message over one connection (after the handshake), in milliseconds."""
    samples = []
    with socket.create_connection((host, port), timeout=10) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter()
            connection.sendall(b"x")
            if connection.recv(1) != b"x":
                raise RuntimeError(f"the echo service at {host}:{port} answered wrongly")
            samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples),
            "count": count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="delay other regions' connections to this region's services")
    run.add_argument("--listen", required=True, help="the region's address")
    run.add_argument("--ports", required=True, help="comma-separated ports of the services on --target")
    run.add_argument("--target", default="127.0.0.1")
    run.add_argument("--delay-ms", type=float, default=40.0)
    run.add_argument("--own-network", required=True, help="the region's network (its connections are not delayed)")
    run.add_argument("--echo-port", type=int, help="also serve an echo service there, to measure the round trip")
    run.add_argument("--account", type=Path, help="append a JSON line per finished connection: port, peer, bytes")
    rtt = commands.add_parser("rtt", help="measure the round trip to an echo service")
    rtt.add_argument("--host", required=True)
    rtt.add_argument("--port", type=int, required=True)
    rtt.add_argument("--count", type=int, default=20)
    arguments = parser.parse_args(argv)
    if arguments.command == "rtt":
        print(json.dumps(measure_rtt(arguments.host, arguments.port, arguments.count)))
        return 0
    try:
        ports = [int(port) for port in arguments.ports.split(",") if port]
        network = ipaddress.ip_network(arguments.own_network, strict=False)
    except ValueError as error:
        parser.error(f"--ports/--own-network: {error}")
    if arguments.delay_ms < 0:
        parser.error(f"--delay-ms {arguments.delay_ms:g}: use 0 or more")
    asyncio.run(serve(arguments.listen, ports, arguments.target, arguments.delay_ms / 1000, network,
                      arguments.echo_port, arguments.account))
    return 0


if __name__ == "__main__":
    sys.exit(main())
