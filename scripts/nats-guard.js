// Runs nats-server (argv: its path, then its arguments) so that it dies with the launcher:
// nats-server cannot watch its parent, but this wrapper holds an IPC channel to scripts/start.ts,
// which closes however the launcher dies (SIGKILL included), and then stops nats-server.
import { spawn } from 'node:child_process';

const [bin, ...args] = process.argv.slice(2);
const nats = spawn(bin, args, { stdio: ['ignore', 'inherit', 'inherit'] });
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  nats.kill('SIGTERM');
  setTimeout(() => nats.kill('SIGKILL'), 5000).unref();
};
process.on('disconnect', stop);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
nats.on('error', (e) => {
  process.stderr.write(`cannot run ${bin}: ${e.message}\n`);
  process.exit(1);
});
nats.on('exit', (code, sig) => process.exit(stopping ? 0 : (code ?? (sig ? 128 : 1))));
