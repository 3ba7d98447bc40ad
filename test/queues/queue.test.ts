import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, it } from 'node:test';
import { ipcEndpoint, ipcPath, PullQueue, PushQueue } from '../../src/queues/index.js';

interface Msg {
  n: number;
  text: string;
  ids: number[];
  big?: bigint;
}

describe('PUSH/PULL queues over ipc://', () => {
  it('names are unique, under the temp dir', () => {
    const a = ipcEndpoint('x');
    const b = ipcEndpoint('x');
    assert.notEqual(a, b);
    assert.ok(ipcPath(a)!.startsWith(tmpdir()));
    assert.equal(ipcPath('tcp://127.0.0.1:1'), null);
  });

  it('delivers typed messages in order, sender started first, and removes the socket file on close', async () => {
    const ep = ipcEndpoint('test');
    const push = PushQueue.connect<Msg>(ep);
    const sends = Array.from({ length: 500 }, (_, n) => push.send({ n, text: `é世界 ${n}`, ids: [n, n + 1], big: 2n ** 63n + BigInt(n) }));
    const pull = await PullQueue.bind<Msg>(ep);
    assert.ok(existsSync(ipcPath(ep)!));
    await Promise.all(sends);
    const got: Msg[] = [];
    for await (const m of pull) {
      got.push(m);
      if (got.length === 500) break;
    }
    assert.deepEqual(got.map((m) => m.n), Array.from({ length: 500 }, (_, n) => n));
    assert.equal(got[7]!.text, 'é世界 7');
    assert.deepEqual(got[7]!.ids, [7, 8]);
    assert.equal(got[7]!.big, 2n ** 63n + 7n);
    push.close();
    pull.close();
    assert.ok(!existsSync(ipcPath(ep)!));
    await push.send({ n: -1, text: '', ids: [] }); // dropped quietly after close
  });

  it('iteration ends when the receiver is closed', async () => {
    const pull = await PullQueue.bind<Msg>(ipcEndpoint('end'));
    const done = (async () => {
      for await (const _ of pull) assert.fail('no message was sent');
      return 'ended';
    })();
    setTimeout(() => pull.close(), 50);
    assert.equal(await done, 'ended');
  });
});
