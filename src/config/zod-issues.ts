/**
 * zod issues as messages that name the field and what was expected: "`messages.0.role`: expected
 * one of "system", "user", got "bot"" (zod's own `Invalid input` says neither).
 */
import type { z } from 'zod';

type Issue = z.core.$ZodIssue;

const ZOD_DEFAULT = /^(Invalid|Too (small|big)|Unrecognized key)/;

/** "`a.b`: expected …" for the first issue (or every issue, joined by "; "). */
export function formatIssues(issues: readonly Issue[], input?: unknown, opts: { all?: boolean } = {}): string {
  const list = opts.all ? issues : issues.slice(0, 1);
  return list.map((i) => `\`${pathOf(i.path) || 'body'}\`: ${describeIssue(i, input)}`).join('; ');
}

export function pathOf(path: readonly PropertyKey[]): string {
  return path.map(String).join('.');
}

/** What was expected, and what came, for one issue (no field name). */
export function describeIssue(i: Issue, input?: unknown): string {
  // A schema's own message (e.g. vLLM's cache_salt wording) already says what is expected.
  if (!ZOD_DEFAULT.test(i.message)) return i.message;
  const got = input === undefined ? '' : gotOf(valueAt(input, i.path));
  switch (i.code) {
    case 'invalid_type':
      return `expected ${article(i.expected)}${got}`;
    case 'invalid_value':
      return `expected ${i.values.length === 1 ? JSON.stringify(i.values[0]) : `one of ${i.values.map((v) => JSON.stringify(v)).join(', ')}`}${got}`;
    case 'invalid_union': {
      const alts = [...new Set(i.errors.map((e) => (e[0] ? describeIssue(e[0]).replace(/, got .*$/, '').replace(/^expected /, '') : '?')))];
      return `expected ${alts.join(' or ')}${got}`;
    }
    case 'too_small':
      return `expected ${bound(i.origin, i.inclusive ? 'at least' : 'more than', i.minimum)}${got}`;
    case 'too_big':
      return `expected ${bound(i.origin, i.inclusive ? 'at most' : 'less than', i.maximum)}${got}`;
    case 'unrecognized_keys':
      return `unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    case 'invalid_format':
      return `expected a ${i.format} string${got}`;
    case 'not_multiple_of':
      return `expected a multiple of ${String(i.divisor)}${got}`;
    default:
      return i.message;
  }
}

function bound(origin: string, rel: string, n: number | bigint): string {
  if (origin === 'string') return `a string of ${rel} ${n} character${Number(n) === 1 ? '' : 's'}`;
  if (origin === 'array' || origin === 'set') return `${rel} ${n} item${Number(n) === 1 ? '' : 's'}`;
  return `a number ${rel} ${n}`;
}

function article(t: string): string {
  if (t === 'int') return 'an integer';
  if (t === 'null' || t === 'undefined' || t === 'never') return t;
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

function gotOf(v: unknown): string {
  if (v === undefined) return ', got nothing';
  if (v === null) return ', got null';
  if (Array.isArray(v)) return ', got an array';
  if (typeof v === 'object') return ', got an object';
  if (typeof v === 'string') return `, got ${v.length > 40 ? `a string of ${v.length} characters` : JSON.stringify(v)}`;
  return `, got ${String(v)}`;
}
