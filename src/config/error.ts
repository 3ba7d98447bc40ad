/**
 * The one error type for bad configuration (files, flags, admin API bodies), shared by router,
 * worker and the event library. Entry points print its message as one line and exit with code 2;
 * the router's admin API answers it with 400. Its message is one line, naming the offending key.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Exit code of an entry point that stops on a ConfigError (as argparse and most CLIs do for usage errors). */
export const CONFIG_ERROR_EXIT = 2;

interface IssueLike {
  code?: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
}

/**
 * zod issues as one line: `invalid <where>: a.b: message; c: message`. An unknown key is named
 * by its full path (`workers.0.kv_events.replay: unknown key`), so a typo is found at once.
 */
export function formatIssues(issues: readonly IssueLike[], where = 'config'): string {
  const parts: string[] = [];
  for (const i of issues) {
    const base = i.path.map(String);
    if (i.code === 'unrecognized_keys' && i.keys?.length) {
      for (const k of i.keys) parts.push(`${[...base, k].join('.')}: unknown key`);
    } else {
      parts.push(`${base.length ? base.join('.') : '(root)'}: ${i.message.replace(/\s*\n\s*/g, ' ')}`);
    }
  }
  return `invalid ${where}: ${parts.join('; ')}`;
}

/** Prints a ConfigError as `<program>: <message>` on one line and exits 2; anything else is rethrown. */
export function exitOnConfigError(program: string, err: unknown): never {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${program}: ${oneLine(err.message)}\n`);
  process.exit(CONFIG_ERROR_EXIT);
}

export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, '; ');
}
