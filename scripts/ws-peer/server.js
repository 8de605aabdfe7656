// The WebSocket peer for the fan-out benchmark: a plain Node `ws` broadcast server.
// Every 1000/RATE ms it builds one message shaped like a ringwatch transition event (same
// fields, same `at` format) and sends it to every connected client, the idiomatic way
// (`client.send(data)` per client). Usage: node server.js PORT RATE [START_AFTER_CLIENTS]
// With START_AFTER_CLIENTS the broadcasts begin once that many clients are connected (at 10k
// clients and 10 broadcasts/s the event loop is saturated and would never finish accepting).
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2] || 18090);
const rate = Number(process.argv[3] || 1);
const startAfter = Number(process.argv[4] || 0);
const wss = new WebSocketServer({ host: "127.0.0.1", port, backlog: 4096, clientTracking: true });
let seq = 0;

wss.on("connection", (ws) => {
  ws.on("message", () => {}); // the subscribe message; the peer broadcasts to everyone
  ws.on("error", () => {});
});

function tick() {
  seq += 1;
  const data = JSON.stringify({
    type: "transition",
    seq,
    service: "svc-000001",
    service_id: 123456789,
    from: seq % 2 ? "up" : "down",
    to: seq % 2 ? "down" : "up",
    at: new Date().toISOString(),
    latency_ms: 1.234,
    status_code: 500,
    error: "status 500 not in expected 200-299",
  });
  for (const c of wss.clients) {
    if (c.readyState === WebSocket.OPEN) c.send(data);
  }
}

let started = false;
function maybeStart() {
  if (started || rate <= 0 || wss.clients.size < startAfter) return;
  started = true;
  setInterval(tick, 1000 / rate);
}
wss.on("connection", maybeStart);
maybeStart();
wss.on("listening", () => console.log(`ws-peer: listening on 127.0.0.1:${port}, ${rate} broadcasts/s`));
