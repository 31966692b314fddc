import { EventEmitter } from 'node:events';
import { ConcordError } from '../errors.js';
import type { PeerId } from '../transport/types.js';
import type { PeerHost, PubSubLogger } from './host.js';
import { messageOf } from './host.js';
import { InterestTable } from './interest.js';
import { Outbox } from './outbox.js';

/**
 * Topic-based publish/subscribe across the cluster, over the existing peer connections.
 *
 * Protocol (message types on the peer transport):
 * - `ps.hello` (request, both directions, on every new connection): "here is my full set of
 *   topics"; the answer is the other side's full set. Retried while the connection lasts, so
 *   a peer that was not ready yet still learns it.
 * - `ps.sub` (message): interest changes `{a: added[], r: removed[]}`, sent to every
 *   connected peer. Every interest message carries the then-current truth for its topics and
 *   a connection is FIFO, so the last one received is right.
 * - `ps.pub` (message): a batch `[topic, message, topic, message, …]`, sent only to the
 *   peers whose interest set has the topic.
 *
 * Guarantees: messages from one sender reach a subscriber in the order published (FIFO per
 * sender), for as long as the connection between the two nodes lasts; local subscribers
 * get them asynchronously (never inside `publish`). Delivery is at most once: messages
 * published while a peer is unreachable, or before its interest reached the publisher,
 * are not delivered to it, and nothing is replayed after a reconnect. Once a node's last
 * handler for a topic unsubscribed, nothing more is delivered to that topic on that node.
 */

export type Subscriber<M = unknown> = (message: M, from: string) => void;

export interface PubSubEvents {
  /** Interest sets were exchanged with `node` on a new connection. */
  'node-up': [node: string];
  /** The connection to `node` dropped. */
  'node-down': [node: string];
  /** `node` (possibly this one) now has subscribers for `topic`. */
  join: [topic: string, node: string];
  /** `node` no longer has subscribers for `topic` (or went down). */
  leave: [topic: string, node: string];
}

export interface PubSubStats {
  published: number;
  /** Messages handed to local subscribers (one per handler call). */
  delivered: number;
  /** Messages written to peers. */
  sent: number;
  /** Messages not written because a peer's connection was gone or backlogged. */
  dropped: number;
  /** Messages received from peers. */
  received: number;
}

const HELLO = 'ps.hello';
const SUB = 'ps.sub';
const PUB = 'ps.pub';
const HELLO_TIMEOUT_MS = 2000;
const MAX_TOPIC_LENGTH = 1024;

interface Subscription {
  readonly handler: Subscriber<never>;
}

export class PubSub extends EventEmitter<PubSubEvents> {
  private readonly local = new Map<string, Set<Subscription>>();
  private readonly interest = new InterestTable();
  private readonly outbox: Outbox;
  /** peer → connection session, bumped on every peer-up; stale hello answers are ignored. */
  private readonly sessions = new Map<string, number>();
  private nextSession = 1;
  /** Topics whose local presence changed and still has to be announced. */
  private readonly pendingInterest = new Set<string>();
  private interestScheduled = false;
  private readonly localQueue: unknown[] = [];
  private draining = false;
  private closed = false;
  private readonly counters: PubSubStats = { published: 0, delivered: 0, sent: 0, dropped: 0, received: 0 };

  constructor(
    private readonly host: PeerHost,
    private readonly logger: PubSubLogger,
  ) {
    super();
    this.outbox = new Outbox((peer, batch) => this.sendBatch(peer, batch));
    host.onPeerRequest(HELLO, (from, body) => this.onHello(from, body));
    host.onPeerMessage(SUB, (from, body) => this.onInterest(from, body));
    host.onPeerMessage(PUB, (from, body) => this.onPublish(from, body));
    host.mesh.on('peer-up', this.peerUp);
    host.mesh.on('peer-down', this.peerDown);
    for (const peer of host.mesh.connectedPeers()) this.peerUp(peer);
  }

  /**
   * Call `handler(message, fromNode)` for every message published to `topic` on any reachable
   * node, this one included. Returns the function that ends this subscription.
   */
  subscribe<M = unknown>(topic: string, handler: Subscriber<M>): () => void {
    checkTopic(topic);
    if (typeof handler !== 'function') throw new TypeError('subscribe needs a handler function');
    let set = this.local.get(topic);
    const first = set === undefined;
    if (set === undefined) {
      set = new Set();
      this.local.set(topic, set);
    }
    const subscription: Subscription = { handler: handler as Subscriber<never> };
    set.add(subscription);
    if (first) this.localInterestChanged(topic, true);
    const subscribers = set;
    return () => {
      if (!subscribers.delete(subscription)) return;
      if (subscribers.size === 0 && this.local.get(topic) === subscribers) {
        this.local.delete(topic);
        this.localInterestChanged(topic, false);
      }
    };
  }

  /** Deliver `message` to every subscriber of `topic` on every reachable node (this one included). */
  publish(topic: string, message: unknown): void {
    checkTopic(topic);
    if (this.closed) return;
    this.counters.published++;
    if (this.local.has(topic)) this.enqueueLocal(topic, message);
    this.sendToPeers(topic, message);
  }

  /** Like publish, but only to subscribers on other nodes. */
  broadcast(topic: string, message: unknown): void {
    checkTopic(topic);
    if (this.closed) return;
    this.counters.published++;
    this.sendToPeers(topic, message);
  }

  /** Names of the nodes (this one included) that have subscribers for `topic`, sorted. */
  members(topic: string): string[] {
    const nodes = [...(this.interest.peersOf(topic) ?? [])].filter((peer) => this.host.mesh.isConnected(peer));
    if (this.local.has(topic)) nodes.push(this.host.name);
    return nodes.sort();
  }

  /** Peers that have exchanged interest sets with this node on their current connection. */
  nodes(): string[] {
    return this.interest.peers().sort();
  }

  /** Topics with local subscribers. */
  topics(): string[] {
    return [...this.local.keys()];
  }

  /** Write every batched message to the transport now (normally done at the end of the tick). */
  flush(): void {
    this.flushInterest();
    this.outbox.flush();
  }

  stats(): PubSubStats {
    return { ...this.counters };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.outbox.clear();
    this.host.mesh.off('peer-up', this.peerUp);
    this.host.mesh.off('peer-down', this.peerDown);
    this.sessions.clear();
    this.localQueue.length = 0;
  }

  // ---- sending ------------------------------------------------------------------------------

  private sendToPeers(topic: string, message: unknown): void {
    const peers = this.interest.peersOf(topic);
    if (peers === undefined) return;
    for (const peer of peers) this.outbox.add(peer, topic, message);
  }

  private sendBatch(peer: string, batch: unknown[]): void {
    const count = batch.length / 2;
    try {
      if (this.host.mesh.send(peer, { t: PUB, b: batch })) this.counters.sent += count;
      else this.counters.dropped += count;
    } catch (error) {
      // One message in the batch cannot be encoded or is too large: send the rest one by one.
      if (count === 1) {
        this.counters.dropped++;
        this.logger.warn({ topic: batch[0], err: messageOf(error) }, 'pub/sub message cannot be sent; dropped');
        return;
      }
      for (let i = 0; i < batch.length; i += 2) this.sendBatch(peer, [batch[i], batch[i + 1]]);
    }
  }

  private localInterestChanged(topic: string, present: boolean): void {
    this.emit(present ? 'join' : 'leave', topic, this.host.name);
    this.pendingInterest.add(topic);
    if (!this.interestScheduled) {
      this.interestScheduled = true;
      queueMicrotask(() => this.flushInterest());
    }
  }

  private flushInterest(): void {
    this.interestScheduled = false;
    if (this.pendingInterest.size === 0 || this.closed) return;
    const added: string[] = [];
    const removed: string[] = [];
    for (const topic of this.pendingInterest) (this.local.has(topic) ? added : removed).push(topic);
    this.pendingInterest.clear();
    for (const peer of this.host.mesh.connectedPeers())
      this.host.mesh.send(peer.name, { t: SUB, a: added, r: removed });
  }

  // ---- connections and interest -------------------------------------------------------------

  private readonly peerUp = (peer: PeerId): void => {
    if (this.closed) return;
    const session = this.nextSession++;
    this.sessions.set(peer.name, session);
    this.hello(peer.name, session, 0);
  };

  private readonly peerDown = (peer: PeerId): void => {
    if (this.host.mesh.isConnected(peer.name)) return; // a replaced connection; the new one has its own hello
    this.sessions.delete(peer.name);
    this.outbox.drop(peer.name);
    if (!this.interest.knows(peer.name)) return;
    const left = this.interest.drop(peer.name);
    for (const topic of left) this.emit('leave', topic, peer.name);
    this.emit('node-down', peer.name);
  };

  private hello(peer: string, session: number, attempt: number): void {
    const body = { t: HELLO, topics: this.topics() };
    this.host.mesh.request(peer, body, HELLO_TIMEOUT_MS).then(
      (answer) => {
        if (this.sessions.get(peer) !== session) return;
        const topics = topicList((answer as { topics?: unknown } | null)?.topics);
        if (topics === null) {
          this.logger.warn({ peer }, 'malformed pub/sub hello answer');
          return;
        }
        this.replaceInterest(peer, topics);
      },
      (error: unknown) => {
        if (this.closed || this.sessions.get(peer) !== session) return;
        // The peer may still be starting (its handlers not wired yet): try again while connected.
        this.logger.debug({ peer, attempt, err: messageOf(error) }, 'pub/sub hello failed; retrying');
        const retry = setTimeout(
          () => {
            if (this.sessions.get(peer) === session) this.hello(peer, session, attempt + 1);
          },
          Math.min(1000, 50 * 2 ** Math.min(attempt, 5)),
        );
        retry.unref();
      },
    );
  }

  private onHello(from: PeerId, body: Record<string, unknown>): { topics: string[] } {
    const topics = topicList(body.topics);
    if (topics === null) throw new ConcordError('BAD_MESSAGE', 'malformed pub/sub hello');
    if (!this.closed && this.host.mesh.isConnected(from.name)) this.replaceInterest(from.name, topics);
    return { topics: this.topics() };
  }

  private replaceInterest(peer: string, topics: string[]): void {
    const wasKnown = this.interest.knows(peer);
    const { joined, left } = this.interest.replace(peer, topics);
    if (!wasKnown) this.emit('node-up', peer);
    for (const topic of left) this.emit('leave', topic, peer);
    for (const topic of joined) this.emit('join', topic, peer);
  }

  private onInterest(from: PeerId, body: Record<string, unknown>): void {
    const added = topicList(body.a);
    const removed = topicList(body.r);
    if (added === null || removed === null || !this.interest.knows(from.name)) return;
    for (const topic of this.interest.remove(from.name, removed)) this.emit('leave', topic, from.name);
    for (const topic of this.interest.add(from.name, added)) this.emit('join', topic, from.name);
  }

  // ---- delivery -----------------------------------------------------------------------------

  private onPublish(from: PeerId, body: Record<string, unknown>): void {
    const batch = body.b;
    if (!Array.isArray(batch) || this.closed) return;
    for (let i = 0; i + 1 < batch.length; i += 2) {
      const topic = batch[i];
      if (typeof topic !== 'string') continue;
      this.counters.received++;
      this.deliver(topic, batch[i + 1], from.name);
    }
  }

  private enqueueLocal(topic: string, message: unknown): void {
    this.localQueue.push(topic, message);
    if (!this.draining) {
      this.draining = true;
      queueMicrotask(this.drainLocal);
    }
  }

  /** Local deliveries run after `publish` returns, in publish order (also for publishes made by handlers). */
  private readonly drainLocal = (): void => {
    const queue = this.localQueue;
    for (let i = 0; i < queue.length; i += 2) this.deliver(queue[i] as string, queue[i + 1], this.host.name);
    queue.length = 0;
    this.draining = false;
  };

  private deliver(topic: string, message: unknown, from: string): void {
    const subscribers = this.local.get(topic);
    if (subscribers === undefined) return;
    for (const subscription of [...subscribers]) {
      // A handler may unsubscribe another one: nothing is delivered after unsubscribe returned.
      if (!subscribers.has(subscription)) continue;
      this.counters.delivered++;
      try {
        (subscription.handler as Subscriber)(message, from);
      } catch (error) {
        this.logger.warn({ topic, err: messageOf(error) }, 'pub/sub subscriber threw');
      }
    }
  }
}

function checkTopic(topic: string): void {
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > MAX_TOPIC_LENGTH) {
    throw new TypeError(`a topic must be a string of 1 to ${MAX_TOPIC_LENGTH} characters`);
  }
}

function topicList(value: unknown): string[] | null {
  if (!Array.isArray(value)) return null;
  for (const topic of value) if (typeof topic !== 'string') return null;
  return value as string[];
}
