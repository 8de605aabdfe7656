"""A third-party WebSocket client (the `websockets` package) against ringwatch's /ws.

Usage: py_client.py HOST:PORT. Prints every server message as one JSON line; after the
snapshot prints READY (the test then flips a service), stops after the first transition,
sends a ping, closes normally and prints the close code.
"""
import asyncio
import json
import sys

import websockets


async def main(addr: str) -> None:
    async with websockets.connect(f"ws://{addr}/ws", open_timeout=20) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 20))
        print(json.dumps(hello), flush=True)
        await ws.send(json.dumps({"op": "subscribe", "filter": {"services": ["alpha"]}}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            print(json.dumps(msg), flush=True)
            if msg["type"] == "snapshot":
                print("READY", flush=True)
            if msg["type"] == "transition":
                break
        pong = await ws.ping(b"py")
        await asyncio.wait_for(pong, 20)
        print("PONG", flush=True)
    print(f"CLOSED {ws.close_code}", flush=True)


asyncio.run(main(sys.argv[1]))
