/**
 * Finds stop strings in streamed text. Text that might be the beginning of a stop string
 * is held back until it is known not to be one.
 */
export class StopStringMatcher {
  private held = '';
  private readonly stops: string[];

  constructor(stops: string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** Adds text; returns what is now safe to emit and, if a stop string appeared, which one (text from it on is dropped). */
  push(text: string): { text: string; stop: string | null } {
    const buf = this.held + text;
    let cut = -1;
    let which: string | null = null;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) {
        cut = i;
        which = s;
      }
    }
    if (which !== null) {
      this.held = '';
      return { text: buf.slice(0, cut), stop: which };
    }
    const keep = this.longestStopPrefixSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stop: null };
  }

  /** Releases held text at the end of generation. */
  flush(): string {
    const t = this.held;
    this.held = '';
    return t;
  }

  private longestStopPrefixSuffix(buf: string): number {
    let best = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > best; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
