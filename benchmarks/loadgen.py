"""A small HTTP/1.1 load generator, run in its own process by the ``api_submit`` benchmark.

``python -m benchmarks.loadgen URL KEY AGENT SECONDS CLIENTS`` keeps CLIENTS keep-alive connections busy
POSTing ``/v1/agents/AGENT/runs`` for SECONDS (asyncio streams: a few microseconds of Python per request,
so the generator is not the bottleneck), then prints one JSON line: requests, errors, req/s, p50, p99 (ms).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlsplit


async def _client(host: str, port: int, request: bytes, until: float, latencies: list[float],
                  errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append((time.perf_counter() - started) * 1000)
            if not status_line.startswith((b"HTTP/1.1 201", b"HTTP/1.1 200")):
                errors.append(int(status_line.split()[1]))
    finally:
        writer.close()


async def _main(url: str, key: str, agent: str, seconds: float, clients: int) -> dict[str, float]:
    parts = urlsplit(url)
    body = json.dumps({"input": {"customer": "ann@example.com", "amount": 42}}).encode()
    request = (f"POST /v1/agents/{agent}/runs HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(_client(parts.hostname or "127.0.0.1", parts.port or 80, request, until, latencies,
                                   errors) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": len(errors), "error_codes": sorted(set(errors)),
            "req_per_s": len(latencies) / elapsed, "p50_ms": statistics.median(latencies) if latencies else 0.0,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0}


if __name__ == "__main__":
    url, key, agent, seconds, clients = sys.argv[1:6]
    print(json.dumps(asyncio.run(_main(url, key, agent, float(seconds), int(clients)))), flush=True)
