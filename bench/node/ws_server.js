// The Node `ws` baseline of `tidings bench`: a broadcaster that sends one message per client with ws.send,
// driven over stdin/stdout JSON lines exactly like the Python servers (see src/tidings/bench/servers.py).
// The load window reads the clients' shared counters file (four little-endian int64 per slot).
"use strict";
const fs = require("fs");
const readline = require("readline");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 0);
const text = fs.readFileSync(process.argv[3], "utf8"); // the message, as the Python servers send it
const clients = new Set();
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, backlog: 4096 });
wss.on("connection", (ws) => {
  clients.add(ws);
  ws.on("close", () => clients.delete(ws));
  ws.on("error", () => clients.delete(ws));
});
wss.on("listening", () => emit("listening", { port: wss.address().port, pid: process.pid }));

function emit(event, fields) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const tick = () => new Promise((resolve) => setImmediate(resolve));

async function drive(cmd) {
  const fd = fs.openSync(cmd.counters, "r");
  const buf = Buffer.alloc(32 * cmd.slots);
  const list = [...clients];
  const n = list.length;
  let rounds = 0;
  let published = 0;
  const started = process.hrtime.bigint();
  while (rounds < cmd.per_conn) {
    fs.readSync(fd, buf, 0, buf.length, 0);
    let received = 0;
    for (let s = 0; s < cmd.slots; s++) received += Number(buf.readBigInt64LE(s * 32));
    const delivered = Math.floor((received * n) / Math.max(1, cmd.connections));
    const allowed = Math.min(cmd.per_conn - rounds, Math.floor((delivered + cmd.window * n - published) / Math.max(1, n)));
    if (allowed <= 0) {
      await pause(1);
      continue;
    }
    for (let r = 0; r < allowed; r++) {
      for (const ws of list) ws.send(text);
      published += n;
      rounds += 1;
    }
    await tick();
  }
  fs.closeSync(fd);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  emit("fanout", { published, seconds, connections: n });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const cmd = JSON.parse(line);
  if (cmd.cmd === "stats") emit("stats", { connected: clients.size });
  else if (cmd.cmd === "fanout") await drive(cmd);
});
rl.on("close", () => process.exit(0));
