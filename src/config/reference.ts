/**
 * The config reference (docs/CONFIG.md), generated from the zod schemas: every option with its
 * type, default and meaning (the schema's `.describe()`). An option without a description is an
 * error, so a new option cannot go undocumented; a test compares the committed file with this.
 */
import type { z } from 'zod';

type Schema = z.ZodType;

export interface OptionRow {
  path: string;
  type: string;
  default: string;
  meaning: string;
}

interface Def {
  type: string;
  innerType?: Schema;
  defaultValue?: unknown;
  shape?: Record<string, Schema>;
  options?: Schema[];
  element?: Schema;
  entries?: Record<string, string | number>;
  values?: unknown[];
  valueType?: Schema;
  in?: Schema;
  out?: Schema;
}

const defOf = (s: Schema): Def => (s as unknown as { _zod: { def: Def } })._zod.def;
const descOf = (s: Schema): string | undefined => (s as unknown as { description?: string }).description;

interface Unwrapped {
  core: Schema;
  description?: string;
  default?: unknown;
  hasDefault: boolean;
  optional: boolean;
  nullable: boolean;
}

/** Peels default/prefault/optional/nullable/pipe layers, keeping the outermost description. */
function unwrap(s: Schema): Unwrapped {
  const u: Unwrapped = { core: s, hasDefault: false, optional: false, nullable: false };
  for (;;) {
    u.description ??= descOf(u.core);
    const d = defOf(u.core);
    if (d.type === 'default' || d.type === 'prefault') {
      if (!u.hasDefault) {
        u.hasDefault = true;
        u.default = typeof d.defaultValue === 'function' ? (d.defaultValue as () => unknown)() : d.defaultValue;
      }
      u.core = d.innerType!;
    } else if (d.type === 'optional') {
      u.optional = true;
      u.core = d.innerType!;
    } else if (d.type === 'nullable') {
      u.nullable = true;
      u.core = d.innerType!;
    } else if (d.type === 'pipe') {
      u.core = d.in!;
    } else return u;
  }
}

/** A type as a short human string: `integer 1-1024`, `"onnx" | "sim"`, `object`, `string[]`. */
export function typeName(s: Schema): string {
  const d = defOf(s);
  const n = s as unknown as { minValue?: number | null; maxValue?: number | null; isInt?: boolean; minLength?: number | null };
  switch (d.type) {
    case 'string':
      return 'string';
    case 'number': {
      const base = n.isInt ? 'integer' : 'number';
      const lo = n.minValue !== null && n.minValue !== undefined && Number.isFinite(n.minValue) && Math.abs(n.minValue) < Number.MAX_SAFE_INTEGER ? n.minValue : null;
      const hi = n.maxValue !== null && n.maxValue !== undefined && Number.isFinite(n.maxValue) && Math.abs(n.maxValue) < Number.MAX_SAFE_INTEGER ? n.maxValue : null;
      if (lo !== null && hi !== null) return `${base} ${lo}-${hi}`;
      if (lo !== null) return `${base} >= ${lo}`;
      if (hi !== null) return `${base} <= ${hi}`;
      return base;
    }
    case 'boolean':
      return 'boolean';
    case 'enum':
      return Object.values(d.entries!).map((v) => JSON.stringify(v)).join(' \\| ');
    case 'literal':
      return d.values!.map((v) => JSON.stringify(v)).join(' \\| ');
    case 'object':
      return 'object';
    case 'record':
      return 'object';
    case 'array': {
      const inner = unwrap(d.element!).core;
      const t = typeName(inner);
      return t.includes(' ') ? `(${t})[]` : `${t}[]`;
    }
    case 'union':
      return d.options!.map((o) => typeName(unwrap(o).core)).join(' \\| ');
    case 'unknown':
    case 'any':
      return 'any';
    default:
      return d.type;
  }
}

function defaultText(u: Unwrapped): string {
  if (u.hasDefault) {
    const v = u.default;
    if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0) return '(its fields\' defaults)';
    return `\`${JSON.stringify(v)}\``;
  }
  if (u.optional) return '(none)';
  return '**required**';
}

/** Every option of an object schema, depth first; nested objects and arrays of objects list their fields too. */
export function optionRows(schema: Schema, prefix = '', missing: string[] = [], seen = new Map<Schema, string>()): OptionRow[] {
  const rows: OptionRow[] = [];
  const shape = defOf(unwrap(schema).core).shape!;
  for (const [key, field] of Object.entries(shape)) {
    const path = `${prefix}${key}`;
    const u = unwrap(field);
    if (!u.description) missing.push(path);
    let type = typeName(u.core);
    if (u.nullable) type += ' \\| null';
    const row = { path, type, default: defaultText(u), meaning: u.description ?? '' };
    rows.push(row);
    for (const [sub, at] of objectsIn(u.core, path)) {
      // An object listed already (the same schema under another key): point there.
      const first = seen.get(sub);
      if (first !== undefined) {
        row.meaning += ` Same keys as \`${first}\`.`;
        continue;
      }
      seen.set(sub, at);
      rows.push(...optionRows(sub, `${at}.`, missing, seen));
    }
  }
  return rows;
}

/** The object schemas an option's value can be (itself, array elements, union members), with their path. */
function objectsIn(s: Schema, path: string): [Schema, string][] {
  const d = defOf(s);
  if (d.type === 'object') return [[s, path]];
  if (d.type === 'array') return objectsIn(unwrap(d.element!).core, `${path}[]`);
  if (d.type === 'union') return d.options!.flatMap((o) => objectsIn(unwrap(o).core, path));
  return [];
}

export interface ReferenceSection {
  title: string;
  intro: string;
  schema: Schema;
}

const cell = (s: string) => s.replace(/\|(?<!\\\|)/g, '\\|').replace(/\n/g, ' ');

/** The whole document; throws naming every option without a description. */
export function renderReference(sections: ReferenceSection[], header: string): string {
  const missing: string[] = [];
  const parts = [header.trimEnd(), ''];
  for (const s of sections) {
    const before = missing.length;
    const rows = optionRows(s.schema, '', missing);
    for (const m of missing.slice(before)) missing[missing.indexOf(m)] = `${s.title}: ${m}`;
    parts.push(`## ${s.title}`, '', s.intro.trimEnd(), '', '| option | type | default | meaning |', '|---|---|---|---|');
    for (const r of rows) parts.push(`| \`${r.path}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.meaning)} |`);
    parts.push('');
  }
  if (missing.length) throw new Error(`options without a description (add .describe() to the schema): ${missing.join(', ')}`);
  return parts.join('\n');
}
