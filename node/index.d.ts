// Types for msgflo (Node.js binding of the msgflo Rust core).
/// <reference types="node" />
import { EventEmitter } from 'events';

export interface PortDefinition {
  id: string;
  type?: string;
  /** Queue/topic; default ROLE.PORTID upper-cased. */
  queue?: string;
  description?: string;
  schema?: string;
  hidden?: boolean;
  /** false: transient, auto-deleted queue/exchange. */
  persistent?: boolean;
}

export interface Definition {
  component: string;
  label?: string;
  icon?: string;
  id?: string;
  role?: string;
  inports?: PortDefinition[];
  outports?: PortDefinition[];
}

/** Error codes of the core, on `err.code`. */
export type ErrorCode =
  | 'INVALID_URL' | 'CONNECTION' | 'DECLARATION_CONFLICT' | 'BROKER' | 'UNKNOWN_PORT'
  | 'ALREADY_COMPLETED' | 'INVALID_DEFINITION' | 'INVALID_PAYLOAD' | 'CLOSED' | 'TIMEOUT' | 'HANDLER';

export interface MsgfloError extends Error { code: ErrorCode | string; }

export class Message {
  readonly inport: string;
  /** The payload bytes as received. */
  readonly payload: Buffer;
  /** Parsed JSON, else the text, else (invalid UTF-8) the Buffer. */
  readonly data: unknown;
  readonly redelivered: boolean;
  readonly settled: boolean;
  /** Throws (code ALREADY_COMPLETED) the second time. */
  ack(): void;
  /** Failed: to the dead-letter route when the graph has one (AMQP; without one the broker drops it); never requeued. */
  nack(): void;
}

export type ResultCallback = (outport: string, err?: Error | string | null, data?: unknown) => void;
export type ProcessFunc = (inport: string, indata: unknown, callback: ResultCallback) => void;

export interface ParticipantOptions {
  prefetch?: number;
  /** Seconds between discovery messages (default MSGFLO_DISCOVERY_PERIOD/2.2). */
  heartbeat?: number;
}

export namespace participant {
  class Participant extends EventEmitter {
    constructor(client: string | transport.Client, definition: Definition, func: ProcessFunc, role?: string, options?: ParticipantOptions);
    definition: Definition & { role: string; id?: string };
    running: boolean;
    start(callback?: (err: MsgfloError | null) => void): void;
    stop(callback?: (err: MsgfloError | null) => void): void;
    send(inport: string, data: unknown, callback?: (err: Error | null) => void): void;
    on(event: 'data', listener: (outport: string, data: unknown) => void): this;
  }
  function instantiateDefinition(definition: Definition, role: string): Definition;
  function startParticipant(library: Record<string, (client: unknown, role: string) => Participant>, client: unknown, componentName: string, id: string, callback: (err: Error | null, part?: Participant) => void): void;
}

export namespace transport {
  type Callback = (err: MsgfloError | null) => void;
  class Client {
    constructor(address: string, options?: object);
    address: string;
    connect(callback: Callback): void;
    disconnect(callback: Callback): void;
    createQueue(type: 'inqueue' | 'outqueue', name: string, options: { persistent?: boolean } | Callback, callback?: Callback): void;
    sendTo(type: 'inqueue' | 'outqueue', name: string, data: unknown, callback: Callback): void;
    subscribeToQueue(name: string, handler: (msg: Message) => void, callback: Callback): void;
    ackMessage(msg: Message): void;
    nackMessage(msg: Message): void;
    registerParticipant(definition: object, callback: Callback): void;
  }
  class MessageBroker extends Client {
    /** pubsub: src exchange -> tgt queue; roundrobin: through `out-<src>`, with nacked messages of tgt going to queue `deadletter`. */
    addBinding(binding: { type?: 'pubsub' | 'roundrobin'; src?: string; tgt: string; deadletter?: string }, callback: Callback): void;
    removeBinding(binding: { type?: 'pubsub' | 'roundrobin'; src?: string; tgt: string; deadletter?: string }, callback: Callback): void;
    /** Every discovery message on the broker (msg.data: the envelope); several observers each get all of them. */
    subscribeParticipantChange(handler: (msg: Message) => void, callback: Callback): void;
  }
  function getClient(address: string, options?: object): Client;
  function getBroker(address: string, options?: object): MessageBroker;
}

export const Participant: typeof participant.Participant;

export class AsyncParticipant implements AsyncIterable<Message> {
  readonly id: string;
  readonly role: string;
  readonly broker: string;
  /** `ROLE(COMPONENT) ready on BROKER`: the line a participant process prints before its first discovery message. */
  readonly readinessLine: string;
  readonly stopped: boolean;
  definition: Definition;
  announce(): Promise<void>;
  recvBatch(max?: number, timeoutMs?: number): Promise<Message[]>;
  [Symbol.asyncIterator](): AsyncIterator<Message>;
  /** Buffers as they are, anything else as JSON. */
  send(port: string, data: unknown): Promise<void>;
  /** Handler returns {outport: data}; a throw nacks (and feeds an `error` outport). */
  serve(handler: (msg: Message) => Promise<Record<string, unknown> | void> | Record<string, unknown> | void): Promise<void>;
  stop(): Promise<void>;
}

export function connect(definition: Definition, role: string, options?: ParticipantOptions & { broker?: string; announce?: boolean }): Promise<AsyncParticipant>;
/** Which of the core's log lines reach `console` (as "msgflo.transport.amqp WARN ..."):
 *  'error', 'warn', 'info', 'debug', 'trace'; none: RUST_LOG if set, else 'warn'.
 *  An unknown level throws an Error with `code`. */
export function initLogging(level?: string): void;
