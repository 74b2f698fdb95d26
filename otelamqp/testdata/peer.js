'use strict';
// A Node.js peer for the cross-language trace test: amqplib instrumented by
// @opentelemetry/instrumentation-amqplib, spans kept in memory and printed
// as JSON lines on exit.
//   node peer.js publish <url> <queue>   sends one message to the queue
//   node peer.js consume <url> <queue>   receives one message and acks it
const { NodeTracerProvider } = require('@opentelemetry/sdk-trace-node');
const { InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { registerInstrumentations } = require('@opentelemetry/instrumentation');
const { AmqplibInstrumentation } = require('@opentelemetry/instrumentation-amqplib');

const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
provider.register(); // W3C trace context and baggage propagators
registerInstrumentations({ instrumentations: [new AmqplibInstrumentation()] });
const amqp = require('amqplib'); // after the instrumentation, so it is patched

async function main() {
  const [mode, url, queue] = process.argv.slice(2);
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  if (mode === 'publish') {
    ch.sendToQueue(queue, Buffer.from('from node'));
  } else {
    await new Promise((resolve, reject) => {
      ch.consume(queue, (msg) => { ch.ack(msg); resolve(); }).catch(reject);
    });
  }
  await ch.close();
  await conn.close();
  for (const s of exporter.getFinishedSpans()) {
    const parent = s.parentSpanContext ? s.parentSpanContext.spanId : (s.parentSpanId || '');
    console.log(JSON.stringify({
      name: s.name, kind: s.kind, traceId: s.spanContext().traceId, spanId: s.spanContext().spanId,
      parentSpanId: parent, links: (s.links || []).map((l) => l.context.spanId),
    }));
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
