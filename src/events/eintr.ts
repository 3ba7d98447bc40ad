/**
 * libzmq calls that process the socket's commands (connect, subscribe, setsockopt) fail with EINTR
 * when a signal lands meanwhile (a profiler's SIGPROF, a heap-dump SIGUSR2). Nothing happened, so
 * the call is repeated; any other error goes to the caller.
 */
const TRIES = 100;

export function retryEintr<T>(call: () => T): T {
  for (let i = 1; ; i++) {
    try {
      return call();
    } catch (err) {
      if ((err as { code?: string }).code !== 'EINTR' || i >= TRIES) throw err;
    }
  }
}
