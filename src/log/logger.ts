/**
 * The one logger of every process (router, worker stages, scripts/start.ts): levels, a timestamp
 * on every line, text or JSON lines, to stderr. Level and format come from flags (--log-level,
 * --log-format) or the environment (KV_ROUTER_LOG_LEVEL, KV_ROUTER_LOG_FORMAT), which child
 * processes inherit.
 */
import { ConfigError } from '../config/error.js';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** `off`: no lines at all (--quiet). */
export type LogThreshold = LogLevel | 'off';
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export const LOG_LEVEL_ENV = 'KV_ROUTER_LOG_LEVEL';
export const LOG_FORMAT_ENV = 'KV_ROUTER_LOG_FORMAT';

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  enabled(level: LogLevel): boolean;
  /** The same sink and settings under another component name. */
  child(component: string): Logger;
  readonly level: LogThreshold;
  readonly format: LogFormat;
}

export interface LoggerOptions {
  /** Who writes: `kv-router`, `kv-worker scheduler`, `start`, … */
  component: string;
  level?: LogThreshold;
  format?: LogFormat;
  /** Where lines go (default: stderr). */
  write?: (line: string) => void;
  now?: () => Date;
}

const RANK: Record<LogThreshold, number> = { off: -1, error: 0, warn: 1, info: 2, debug: 3 };

export function createLogger(o: LoggerOptions): Logger {
  const level = o.level ?? 'info';
  const format = o.format ?? 'text';
  const write = o.write ?? ((line: string) => void process.stderr.write(line));
  const now = o.now ?? (() => new Date());
  const enabled = (l: LogLevel) => RANK[l] <= RANK[level];
  const emit = (l: LogLevel) => (msg: string, fields?: LogFields) => {
    if (!enabled(l)) return;
    write(formatLine({ ts: now().toISOString(), level: l, component: o.component, msg, fields }, format));
  };
  return {
    error: emit('error'),
    warn: emit('warn'),
    info: emit('info'),
    debug: emit('debug'),
    enabled,
    child: (component) => createLogger({ ...o, component }),
    level,
    format,
  };
}

export interface LogRecord {
  ts: string;
  level: LogLevel;
  component: string;
  msg: string;
  fields?: LogFields;
}

/** Text: `2026-01-01T00:00:00.000Z info  [kv-router] msg key=value`; JSON: one object per line. */
export function formatLine(r: LogRecord, format: LogFormat): string {
  const fields = Object.entries(r.fields ?? {}).filter(([, v]) => v !== undefined);
  if (format === 'json') return `${JSON.stringify({ ts: r.ts, level: r.level, component: r.component, msg: r.msg, ...Object.fromEntries(fields) })}\n`;
  const tail = fields.map(([k, v]) => ` ${k}=${textValue(v)}`).join('');
  return `${r.ts} ${r.level.padEnd(5)} [${r.component}] ${r.msg}${tail}\n`;
}

function textValue(v: string | number | boolean | null | undefined): string {
  if (typeof v !== 'string') return String(v);
  return v === '' || /[\s"=]/.test(v) ? JSON.stringify(v) : v;
}

/** A level name, or `off`; throws naming `where` otherwise. */
export function parseLogLevel(s: string, where: string): LogThreshold {
  if (s === 'off' || (LOG_LEVELS as readonly string[]).includes(s)) return s as LogThreshold;
  throw new ConfigError(`${where}: expected one of ${LOG_LEVELS.join(', ')}, off; got ${JSON.stringify(s)}`);
}

export function parseLogFormat(s: string, where: string): LogFormat {
  if ((LOG_FORMATS as readonly string[]).includes(s)) return s as LogFormat;
  throw new ConfigError(`${where}: expected one of ${LOG_FORMATS.join(', ')}; got ${JSON.stringify(s)}`);
}

export interface LogSettings {
  level: LogThreshold;
  format: LogFormat;
}

/** Flags win over the environment; `quiet` wins over both. Throws on a bad value (the caller makes it a config error). */
export function resolveLogSettings(flags: { level?: string | null; format?: string | null; quiet?: boolean }, env: NodeJS.ProcessEnv = process.env): LogSettings {
  const lv = flags.level ?? env[LOG_LEVEL_ENV] ?? null;
  const fm = flags.format ?? env[LOG_FORMAT_ENV] ?? null;
  const level: LogThreshold = flags.quiet ? 'off' : lv ? parseLogLevel(lv, flags.level ? '--log-level' : LOG_LEVEL_ENV) : 'info';
  const format = fm ? parseLogFormat(fm, flags.format ? '--log-format' : LOG_FORMAT_ENV) : 'text';
  return { level, format };
}

/** A logger with this process's environment settings (worker stages, which get no flags of their own). */
export function loggerFromEnv(component: string, env: NodeJS.ProcessEnv = process.env): Logger {
  let s: LogSettings;
  try {
    s = resolveLogSettings({}, env);
  } catch {
    s = { level: 'info', format: 'text' };
  }
  return createLogger({ component, ...s });
}

/** Exports settings to the environment, so processes started after this call log the same way. */
export function exportLogSettings(s: LogSettings, env: NodeJS.ProcessEnv = process.env): void {
  env[LOG_LEVEL_ENV] = s.level;
  env[LOG_FORMAT_ENV] = s.format;
}
