/** Raw ZeroMQ peers for frame-exact assertions. */
import * as zmq from 'zeromq';
import { sleep } from './net.js';

/** Sends `request` on a fresh DEALER; collects replies until one has an empty last frame and an ff×8 seq, or timeout. */
export async function rawReplay(endpoint: string, request: Array<Buffer | string>, timeoutMs = 2000): Promise<{ replies: Buffer[][]; ended: boolean }> {
  const d = new zmq.Dealer({ linger: 0, receiveTimeout: timeoutMs, sendTimeout: timeoutMs });
  d.connect(endpoint);
  const replies: Buffer[][] = [];
  try {
    await d.send(request);
    for (;;) {
      const msg = await d.receive();
      replies.push(msg);
      const seq = msg[msg.length - 2];
      if (msg[msg.length - 1]!.length === 0 && seq?.equals(Buffer.alloc(8, 0xff))) return { replies, ended: true };
    }
  } catch {
    return { replies, ended: false };
  } finally {
    d.close();
  }
}

/** A raw SUB connected to `endpoint`, given time for its subscription to reach the publisher. */
export async function rawSubscriber(endpoint: string, topic = ''): Promise<{ sub: zmq.Subscriber; next: (timeoutMs?: number) => Promise<Buffer[]> }> {
  const sub = new zmq.Subscriber({ linger: 0 });
  const connected = new Promise<void>((r) => sub.events.on('connect', () => r()));
  sub.subscribe(topic);
  sub.connect(endpoint);
  await connected;
  await sleep(100);
  const next = async (timeoutMs = 2000) => {
    sub.receiveTimeout = timeoutMs;
    return sub.receive();
  };
  return { sub, next };
}
