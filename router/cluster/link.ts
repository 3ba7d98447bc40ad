import { connect, type NatsConnection, type Subscription } from 'nats';
import type { RouterConfig } from '../config.js';
import type { MatchIndex } from '../policies/match-index.js';
import type { SharedLoad } from './shared-load.js';
import { parseLoadMessage, parseProvisionalMessage, type LoadMessage } from './messages.js';
import { applyProvisional, loadMessage, provisionalMessage } from './wire.js';

export type ClusterConfig = NonNullable<RouterConfig['cluster']>;
export type ClusterState = 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface ClusterStatus {
  replica_id: string;
  nats_url: string;
  state: ClusterState;
  /** 'ok' when connected; 'degraded' otherwise (routing goes on with this replica's own view). */
  status: 'ok' | 'degraded';
  peers: string[];
  since: number;
  last_error: string | null;
}

export interface ClusterCounters {
  published_messages: number;
  published_bytes: number;
  received_messages: number;
  received_bytes: number;
  dropped_unconnected: number;
  malformed: number;
  /** Published bytes (payload + subject) by message kind. */
  bytes_by_kind: { delta: number; heartbeat: number; provisional: number; goodbye: number };
}

/**
 * The NATS shell around SharedLoad: publishes this replica's load changes and provisional prefixes,
 * applies the others'. Connects in the background and keeps reconnecting; nothing here is awaited
 * by a request: publish is fire-and-forget, and while NATS is away the remote shares are dropped
 * (the replica routes on its own view) and this replica's changes are not queued (the heartbeat
 * after the reconnect restates them).
 */
export class ClusterLink {
  private nc: NatsConnection | null = null;
  private state: ClusterState = 'connecting';
  private since = Date.now();
  private lastError: string | null = null;
  private seq = 0;
  private readonly dirty = new Set<string>();
  private flushScheduled = false;
  private heartbeat: NodeJS.Timeout | null = null;
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly enc = new TextEncoder();
  private readonly dec = new TextDecoder();
  readonly counters: ClusterCounters = { published_messages: 0, published_bytes: 0, received_messages: 0, received_bytes: 0, dropped_unconnected: 0, malformed: 0, bytes_by_kind: { delta: 0, heartbeat: 0, provisional: 0, goodbye: 0 } };

  constructor(
    private readonly cfg: ClusterConfig & { replica_id: string },
    private readonly load: SharedLoad,
    private readonly index: MatchIndex,
    private readonly log: (msg: string) => void,
  ) {
    load.onChange = (s) => this.changed(s);
  }

  get replicaId(): string {
    return this.cfg.replica_id;
  }

  start(): void {
    this.heartbeat = setInterval(() => this.tick(), this.cfg.heartbeat_ms);
    this.heartbeat.unref();
    this.log(`cluster: replica ${this.replicaId} connecting to NATS at ${this.cfg.nats_url}`);
    void this.tryConnect();
  }

  status(): ClusterStatus {
    return {
      replica_id: this.replicaId,
      nats_url: this.cfg.nats_url,
      state: this.state,
      status: this.state === 'connected' ? 'ok' : 'degraded',
      peers: this.load.remote.peers(Date.now()).sort(),
      since: this.since,
      last_error: this.lastError,
    };
  }

  /** A request was routed to `source` (right after its load.start): the others mark its prompt provisional there too. */
  routed(source: string, tokens: number[], blockSize: number, lora: string | null, salt: string | null): void {
    if (!this.cfg.share_provisional) return;
    const m = provisionalMessage(this.replicaId, this.load, source, tokens, blockSize, lora, salt);
    if (m) this.publish(`${this.cfg.subject_prefix}.prov.${this.replicaId}`, m, 'provisional');
  }

  async close(goodbye = true): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.retry) clearTimeout(this.retry);
    const nc = this.nc;
    this.nc = null;
    this.setState('closed', null);
    if (!nc) return;
    try {
      if (goodbye && !nc.isClosed()) {
        this.publishOn(nc, `${this.cfg.subject_prefix}.load.${this.replicaId}`, { r: this.replicaId, q: ++this.seq, ttl: this.cfg.share_ttl_ms, k: 'b' } satisfies LoadMessage, 'goodbye');
        await nc.flush().catch(() => {});
      }
    } finally {
      await nc.close().catch(() => {});
    }
  }

  private async tryConnect(): Promise<void> {
    if (this.closed) return;
    try {
      const nc = await connect({
        servers: this.cfg.nats_url,
        name: `kv-router ${this.replicaId}`,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: this.cfg.reconnect_ms,
        timeout: this.cfg.connect_timeout_ms,
        // A dead server closes the socket (seen at once); pings only catch a half-open link.
        pingInterval: Math.max(2000, this.cfg.share_ttl_ms),
        maxPingOut: 3,
      });
      if (this.closed) {
        await nc.close().catch(() => {});
        return;
      }
      this.nc = nc;
      this.subscribe(nc);
      void this.watch(nc);
      this.connected();
    } catch (e) {
      this.setState('disconnected', (e as Error).message);
      this.retry = setTimeout(() => void this.tryConnect(), this.cfg.reconnect_ms);
      this.retry.unref();
    }
  }

  private subscribe(nc: NatsConnection): void {
    const p = this.cfg.subject_prefix;
    const loadSub = nc.subscribe(`${p}.load.*`);
    const provSub = nc.subscribe(`${p}.prov.*`);
    void this.consume(loadSub, (v) => {
      const m = parseLoadMessage(v);
      if (!m) return false;
      const r = this.load.remote.apply(m, Date.now());
      if (r === 'joined') this.log(`cluster: replica ${m.r} joined`);
      if (r === 'left') this.log(`cluster: replica ${m.r} left`);
      // A newcomer learns our share at once instead of at the next heartbeat.
      if (r === 'joined') this.sendHeartbeat();
      return true;
    });
    void this.consume(provSub, (v) => {
      const m = parseProvisionalMessage(v);
      if (!m) return false;
      if (m.r !== this.replicaId) applyProvisional(m, this.index, this.load);
      return true;
    });
  }

  private async consume(sub: Subscription, apply: (v: unknown) => boolean): Promise<void> {
    for await (const msg of sub) {
      this.counters.received_messages++;
      this.counters.received_bytes += msg.data.length;
      let v: unknown;
      try {
        v = JSON.parse(this.dec.decode(msg.data));
      } catch {
        v = null;
      }
      if (!apply(v)) this.counters.malformed++;
    }
  }

  private async watch(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.closed) return;
      if (s.type === 'disconnect' || s.type === 'staleConnection') {
        this.setState('disconnected', `NATS connection lost (${s.type})`);
        this.load.remote.clear();
      } else if (s.type === 'reconnect') {
        this.connected();
      } else if (s.type === 'error') {
        this.lastError = String(s.data);
      }
    }
  }

  private connected(): void {
    this.setState('connected', null);
    this.sendHeartbeat();
  }

  private setState(state: ClusterState, err: string | null): void {
    if (err !== null) this.lastError = err;
    if (this.state === state) return;
    this.state = state;
    this.since = Date.now();
    if (state === 'connected') this.log(`cluster: connected to NATS at ${this.cfg.nats_url} (replica ${this.replicaId})`);
    else if (state === 'disconnected') this.log(`cluster: NATS unreachable (${this.lastError ?? 'no reason'}); routing on this replica's own view, reconnecting in the background`);
  }

  private tick(): void {
    this.load.remote.expire(Date.now());
    this.sendHeartbeat();
  }

  private changed(source: string): void {
    this.dirty.add(source);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // One delta per turn: a burst routed in one turn is one message.
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.dirty.size === 0) return;
    const sources = [...this.dirty];
    this.dirty.clear();
    this.publishLoad('d', sources);
  }

  private sendHeartbeat(): void {
    this.dirty.clear();
    this.publishLoad('h', this.load.local.sources());
  }

  private publishLoad(k: 'd' | 'h', sources: Iterable<string>): void {
    const m = loadMessage(this.replicaId, this.seq + 1, this.cfg.share_ttl_ms, k, this.load, sources);
    if (this.publish(`${this.cfg.subject_prefix}.load.${this.replicaId}`, m, k === 'd' ? 'delta' : 'heartbeat')) this.seq++;
  }

  private publish(subject: string, m: unknown, kind: keyof ClusterCounters['bytes_by_kind']): boolean {
    const nc = this.nc;
    if (!nc || this.state !== 'connected' || nc.isClosed()) {
      this.counters.dropped_unconnected++;
      return false;
    }
    return this.publishOn(nc, subject, m, kind);
  }

  private publishOn(nc: NatsConnection, subject: string, m: unknown, kind: keyof ClusterCounters['bytes_by_kind']): boolean {
    const data = this.enc.encode(JSON.stringify(m));
    try {
      nc.publish(subject, data);
    } catch (e) {
      this.lastError = (e as Error).message;
      return false;
    }
    this.counters.published_messages++;
    this.counters.published_bytes += data.length + subject.length;
    this.counters.bytes_by_kind[kind] += data.length + subject.length;
    return true;
  }
}
