import { ConfigError, exitOnConfigError } from '../src/config/error.js';
import { assertPortFree } from '../src/net/port-in-use.js';
import { watchParent } from '../src/proc/parent.js';
import { createLogger, exportLogSettings } from '../src/log/logger.js';
import { parseCli, USAGE } from './cli.js';
import { startRouter, type RunningRouter } from './server.js';

async function main(): Promise<void> {
  let cli;
  try {
    cli = await parseCli(process.argv.slice(2));
    if (cli !== 'help') await assertPortFree(cli.config.host, cli.config.port);
  } catch (e) {
    exitOnConfigError('kv-router', e);
  }
  if (cli === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const config = cli.config;
  // Exported: the libraries' own lines (tokenizer, event streams) and the threads follow it.
  exportLogSettings(cli.log);
  const logger = createLogger({ component: 'kv-router', ...cli.log });
  const log = (m: string) => logger.info(m);
  let router: RunningRouter;
  try {
    router = await startRouter(config, log, { accessLog: logger.child('kv-router access') });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE') exitOnConfigError('kv-router', new ConfigError(`port ${config.port} is in use on ${config.host}; use --port`));
    exitOnConfigError('kv-router', e);
  }
  log(`listening on ${router.url} (policy ${config.policy}, ${config.workers.length} worker(s))`);
  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    log(`${why}: draining (up to ${config.drain_timeout_ms} ms), then shutting down`);
    // Bounded: the drain deadline plus time to close sockets and threads.
    setTimeout(() => process.exit(1), config.drain_timeout_ms + 5000).unref();
    router.close().then(
      () => process.exit(0),
      (e) => {
        logger.error(`shutdown error: ${(e as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  watchParent((why) => stop(why));
  // Only when started with --expose-gc (tests measuring memory): SIGUSR2 prints the heap after a full GC.
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    process.on('SIGUSR2', () => {
      gc();
      gc();
      const m = process.memoryUsage();
      // The JS heap, then the ArrayBuffers (the prefix index's node store lives there, not on the heap).
      process.stderr.write(`heap-after-gc ${m.heapUsed} ${m.arrayBuffers}\n`);
    });
  }
}

await main();
