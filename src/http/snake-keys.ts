/** snake_case for the JSON the project writes: `lastSeq` -> `last_seq` (keys only, one level). */
export function snakeKey(k: string): string {
  return k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase();
}

/**
 * The object with its own keys in snake_case (nested objects kept as they are: their keys may be
 * data, such as medium names in `copies`). Keys without a lower-to-upper step are left alone.
 */
export function snakeKeys<T>(o: T): T extends object ? Record<string, unknown> : T {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return o as never;
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [/[a-z0-9][A-Z]/.test(k) ? snakeKey(k) : k, v])) as never;
}
