// Stream sensor: runs as long as the sensor does and prints one JSON line per event.
// See docs/sensor-protocol.md.
const readline = require("readline");

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const input = readline.createInterface({ input: process.stdin });
input.once("line", (line) => {
  input.close();
  const start = JSON.parse(line);
  const interval = Number(start.config.interval_ms) || 15000;
  let beat = (start.state && start.state.beat) || 0;
  emit({ log: `heartbeat every ${interval} ms, starting after beat ${beat}` });
  const timer = setInterval(() => {
    beat += 1;
    emit({ payload: { beat, pid: process.pid }, occurred_at: new Date().toISOString() });
    emit({ state: { beat } });
  }, interval);
  // The service sends SIGTERM on stop and SIGKILL after its grace period.
  process.on("SIGTERM", () => {
    clearInterval(timer);
    process.exit(0);
  });
});
