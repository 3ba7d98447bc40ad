import { ConfigError } from './config.js';
import { parseCli, USAGE } from './cli.js';
import { startRouter } from './server.js';

async function main(): Promise<void> {
  let cli;
  try {
    cli = await parseCli(process.argv.slice(2));
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`kv-router: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  if (cli === 'help') {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const log = cli.quiet ? () => {} : (m: string) => process.stderr.write(`[kv-router] ${new Date().toISOString()} ${m}\n`);
  let router;
  try {
    router = await startRouter(cli.config, log);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (e instanceof ConfigError || err.code === 'EADDRINUSE' || err.code === 'EACCES') {
      process.stderr.write(`kv-router: ${err.message}\n`);
      process.exit(1);
    }
    throw e;
  }
  log(`listening on ${router.url} (policy ${cli.config.policy}, ${cli.config.workers.length} worker(s))`);
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: shutting down`);
    const force = setTimeout(() => process.exit(1), 5000);
    force.unref();
    router.close().then(
      () => process.exit(0),
      (e) => {
        process.stderr.write(`kv-router: shutdown error: ${(e as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

await main();
