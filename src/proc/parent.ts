/**
 * Dying with the parent. Node has no PR_SET_PDEATHSIG, so a process started by a launcher watches
 * for the launcher going away and then stops itself (and, through the same rule, its own children):
 * - started with an IPC channel (fork, or spawn with 'ipc'): the channel closes when the parent
 *   dies, however it dies (SIGKILL included);
 * - started by npm (`npm start`, `npx kv-worker`): npm runs scripts through `sh -c`, which does not
 *   pass SIGTERM on, so the parent pid is polled (it changes when the parent dies and we are
 *   re-parented), and when the parent is that shell, the shell's own parent (npm) too.
 * A process started any other way (a shell, a supervisor) is left alone: `nohup kv-worker &` keeps running.
 */
import { readFileSync } from 'node:fs';

const POLL_MS = 500;

/** The parent pid of `pid` from /proc (Linux), or null where there is no /proc. */
function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : null;
  } catch {
    return null;
  }
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

const SHELLS = new Set(['sh', 'dash', 'bash', 'zsh']);

/** Calls `onGone(why)` once when the process that launched this one goes away (see above). */
export function watchParent(onGone: (why: string) => void): void {
  let fired = false;
  const fire = (why: string) => {
    if (fired) return;
    fired = true;
    clearInterval(timer);
    onGone(why);
  };
  if (process.channel) process.once('disconnect', () => fire('the parent process closed its channel'));
  const byNpm = process.env.npm_lifecycle_event !== undefined && !process.channel;
  let timer: NodeJS.Timeout | undefined;
  if (!byNpm) return;
  const parent = process.ppid;
  const grandparent = SHELLS.has(commOf(parent)) ? parentOf(parent) : null;
  timer = setInterval(() => {
    if (process.ppid !== parent) fire(`the parent process (pid ${parent}) is gone`);
    else if (grandparent !== null && parentOf(parent) !== grandparent) fire(`npm (pid ${grandparent}) is gone`);
  }, POLL_MS);
  timer.unref();
}
