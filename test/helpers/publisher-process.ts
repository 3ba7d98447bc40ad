/**
 * A KV-event publisher in its own process, driven over stdin/stdout, so a test can
 * stall its own event loop while the publisher keeps going.
 *   argv[2]: kv-events config JSON. stdout: "ready <endpoint> <replay endpoint|->".
 *   stdin "publish <n> <events per batch> [marker file]" → publishes n batches as fast as it can,
 *   writes the marker file (if given) → "published <total>".
 *   stdin "exit" → closes and exits.
 */
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseKVEventsConfig } from '../../src/events/config.js';
import { KVEventPublisher, QueueFullError } from '../../src/events/publisher.js';
import { batchOf } from './events.js';

const pub = await KVEventPublisher.create({ config: parseKVEventsConfig(process.argv[2] ?? '{}') });
process.stdout.write(`ready ${pub.endpoint} ${pub.replayEndpoint ?? '-'}\n`);
let n = 0;
for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, a, b, marker] = line.trim().split(/\s+/);
  if (cmd === 'publish') {
    for (let i = 0; i < Number(a); i++) {
      try {
        pub.publish(batchOf(n, Number(b ?? 1)));
        n++;
      } catch (err) {
        if (!(err instanceof QueueFullError)) throw err;
        await pub.flush();
        i--;
      }
    }
    await pub.flush();
    if (marker) writeFileSync(marker, String(n));
    process.stdout.write(`published ${n}\n`);
  } else if (cmd === 'exit') break;
}
await pub.close(500);
process.exit(0);
