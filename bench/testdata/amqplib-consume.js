// The amqplib consume peer of bench's ConsumeBroker: prefetch 1000, ack
// with multiple every 500, as the Go clients do. Takes n deliveries from
// queue and prints its CPU time (user+system, µs) and wall time (ms) from
// the subscribe to the last delivery, as JSON.
//
//   node amqplib-consume.js URL QUEUE N
const amqp = require('amqplib');

async function main() {
  const [url, queue, nArg] = process.argv.slice(2);
  const n = Number(nArg);
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  await ch.prefetch(1000);
  let got = 0;
  let finished;
  const done = new Promise((resolve) => { finished = resolve; });
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await ch.consume(queue, (msg) => {
    got++;
    if (got % 500 === 0 || got === n) ch.ack(msg, true);
    if (got === n) finished();
  });
  await done;
  const cpu = process.cpuUsage(cpu0);
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(JSON.stringify({ cpuMicros: cpu.user + cpu.system, wallMs }) + '\n');
  await conn.close();
}

main().catch((err) => { console.error(err); process.exit(1); });
