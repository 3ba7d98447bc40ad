/**
 * The calling thread's scheduler clock from /proc/thread-self/schedstat (Linux): nanoseconds on a CPU
 * and nanoseconds runnable but waiting for one. A wait that grew across a synchronous step means the
 * OS ran something else meanwhile: the step's wall time is not all its own. (The on-CPU figure is
 * only brought up to date at scheduler ticks, so it cannot time a sub-millisecond step; and
 * process.cpuUsage counts every thread, GC helpers included.) Read with pread on one open file
 * (~10 µs); null off Linux.
 */
import { openSync, readSync } from 'node:fs';

let fd: number | null | undefined;
const buf = Buffer.alloc(96);

export interface ThreadClock {
  runNs: number;
  waitNs: number;
}

export function threadClock(): ThreadClock | null {
  if (fd === undefined) {
    try {
      fd = openSync('/proc/thread-self/schedstat', 'r');
    } catch {
      fd = null;
    }
  }
  if (fd === null) return null;
  const n = readSync(fd, buf, 0, buf.length, 0);
  const [run, wait] = buf.toString('latin1', 0, n).split(' ');
  return { runNs: Number(run), waitNs: Number(wait) };
}
