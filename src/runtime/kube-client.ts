import * as http from 'node:http';
import * as https from 'node:https';
import { KubeConfig, Watch } from '@kubernetes/client-node';

/**
 * A small REST client over client-node's KubeConfig (auth, in-cluster config) and
 * Watch (stream framing). Paths are API paths, so one client serves every kind,
 * and server-side apply is a plain PATCH with its content type.
 */

export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

export const isNotFound = (err: unknown) => err instanceof KubeApiError && err.status === 404;
export const isConflict = (err: unknown) => err instanceof KubeApiError && err.status === 409;
export const isForbidden = (err: unknown) => err instanceof KubeApiError && err.status === 403;

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    deletionTimestamp?: string;
    creationTimestamp?: string;
    ownerReferences?: unknown[];
  };
  [field: string]: unknown;
}

export interface KubeList<T> {
  metadata: { resourceVersion: string; continue?: string };
  items: T[];
}

type Query = Record<string, string | number | boolean | undefined>;

/** Requests that got an answer `code` (or 'error': none), by Kubernetes verb and resource. */
export interface RequestTally {
  verb: string;
  resource: string;
  code: string;
  count: number;
}

const VERB_OF_METHOD: Record<string, [named: string, collection: string]> = {
  GET: ['get', 'list'],
  POST: ['create', 'create'],
  PUT: ['update', 'update'],
  PATCH: ['patch', 'patch'],
  DELETE: ['delete', 'deletecollection'],
};

/**
 * The Kubernetes verb and resource (with its subresource, e.g. datakeys/status)
 * of an API path, as the API server's request info names them: what the
 * request metric is labelled with.
 */
export function describeRequest(method: string, pathname: string) {
  const segments = pathname.split('/').filter(Boolean);
  if (segments[0] !== 'api' && segments[0] !== 'apis')
    return { verb: method.toLowerCase(), resource: 'nonresource' };
  // /api/v1/... or /apis/GROUP/VERSION/...
  const rest = segments.slice(segments[0] === 'api' ? 2 : 3);
  const namespaced =
    rest[0] === 'namespaces' && rest.length >= 3 && rest[2] !== 'status' && rest[2] !== 'finalize';
  const [resource = 'unknown', name, subresource] = namespaced ? rest.slice(2) : rest;
  const [named, collection] = VERB_OF_METHOD[method] ?? [
    method.toLowerCase(),
    method.toLowerCase(),
  ];
  return {
    verb: name === undefined ? collection : named,
    resource: subresource === undefined ? resource : `${resource}/${subresource}`,
  };
}

/** A write refused before it was sent: this replica may not write now (e.g. lost its lease). */
export class FencedWriteError extends Error {
  constructor(reason: string) {
    super(`write not sent: ${reason}`);
    this.name = 'FencedWriteError';
  }
}

export class KubeClient {
  private readonly server: URL;
  private readonly agent: https.Agent;
  /** Shared with the views of withWriteFence, so that every request is counted once. */
  private readonly counter = { requests: 0, answered: new Map<string, RequestTally>() };
  private fence?: () => string | undefined;

  constructor(readonly config: KubeConfig) {
    const cluster = config.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    this.server = new URL(cluster.server);
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 32 });
  }

  /** Requests made, for the benchmarks and metrics. */
  get requestCount(): number {
    return this.counter.requests;
  }

  /** Requests answered so far, by verb, resource and status code (for the request metric). */
  requestTallies(): RequestTally[] {
    return [...this.counter.answered.values()];
  }

  private tally(method: string, pathname: string, code: string): void {
    const { verb, resource } = describeRequest(method, pathname);
    const key = `${verb} ${resource} ${code}`;
    const seen = this.counter.answered.get(key);
    if (seen) seen.count++;
    else this.counter.answered.set(key, { verb, resource, code, count: 1 });
  }

  /**
   * The same client (connections, credentials, counter) whose writes (any method
   * but GET) are refused with FencedWriteError while `fence` names a reason,
   * checked immediately before each request is sent.
   */
  withWriteFence(fence: () => string | undefined): KubeClient {
    const view = Object.create(this) as KubeClient;
    view.fence = fence;
    return view;
  }

  static fromEnvironment(kubeconfigPath?: string): KubeClient {
    const config = new KubeConfig();
    if (kubeconfigPath) config.loadFromFile(kubeconfigPath);
    else config.loadFromDefault();
    return new KubeClient(config);
  }

  get<T extends KubeObject>(path: string): Promise<T> {
    return this.request('GET', path);
  }

  list<T extends KubeObject>(path: string, query: Query = {}): Promise<KubeList<T>> {
    return this.request('GET', path, { query });
  }

  /**
   * A list read in pages of `pageSize` (limit/continue, as client-go's reflector
   * does), so that a large collection is never one response body held whole in
   * memory while it is parsed. The pages come from one consistent snapshot; its
   * resourceVersion is the last page's.
   */
  async listPaged<T extends KubeObject>(
    path: string,
    query: Query = {},
    pageSize = 500,
  ): Promise<KubeList<T>> {
    const items: T[] = [];
    let page: KubeList<T>;
    let next: string | undefined;
    do {
      page = await this.list<T>(path, { ...query, limit: pageSize, continue: next });
      for (const item of page.items) items.push(item);
      next = page.metadata.continue || undefined;
    } while (next);
    return { metadata: { resourceVersion: page.metadata.resourceVersion }, items };
  }

  create<T extends KubeObject>(path: string, body: unknown): Promise<T> {
    return this.request('POST', path, { body });
  }

  replace<T extends KubeObject>(path: string, body: unknown): Promise<T> {
    return this.request('PUT', path, { body });
  }

  /** Server-side apply as `fieldManager`. */
  apply<T extends KubeObject>(
    path: string,
    body: unknown,
    fieldManager: string,
    force = true,
  ): Promise<T> {
    return this.request('PATCH', path, {
      body,
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager, force },
    });
  }

  mergePatch<T extends KubeObject>(path: string, patch: unknown): Promise<T> {
    return this.request('PATCH', path, {
      body: patch,
      contentType: 'application/merge-patch+json',
    });
  }

  delete(path: string, query: Query = {}): Promise<unknown> {
    return this.request('DELETE', path, { query });
  }

  /** Starts a watch; `done` is called once when it ends for any reason. */
  watch(
    path: string,
    query: Query,
    onEvent: (type: string, object: KubeObject) => void,
    done: (err?: unknown) => void,
  ): Promise<AbortController> {
    return new Watch(this.config).watch(path, query, onEvent, done);
  }

  async request<T>(
    method: string,
    path: string,
    options: { body?: unknown; contentType?: string; query?: Query; accept?: string } = {},
  ): Promise<T> {
    const url = new URL(path, this.server);
    for (const [k, v] of Object.entries(options.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const requestOptions: https.RequestOptions = {
      method,
      agent: this.agent,
      headers: { accept: options.accept ?? 'application/json' },
    };
    await this.config.applyToHTTPSOptions(requestOptions);
    // applyToHTTPSOptions sets a new Agent on every call: a TLS handshake per request.
    // Keep our keep-alive agent instead (the TLS options stay on the request and are
    // part of its connection pool's name); a proxy keeps the agent built for it.
    if (url.protocol === 'https:' && !this.config.getCurrentCluster()?.proxyUrl) {
      requestOptions.agent = this.agent;
    }
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    if (payload !== undefined) {
      requestOptions.headers = {
        ...requestOptions.headers,
        'content-type': options.contentType ?? 'application/json',
        'content-length': Buffer.byteLength(payload),
      };
    }
    const refused = method !== 'GET' ? this.fence?.() : undefined;
    if (refused) throw new FencedWriteError(refused);
    this.counter.requests++;
    const transport = url.protocol === 'https:' ? https : http;
    return new Promise<T>((resolve, reject) => {
      let tallied = false;
      const answered = (code: string) => {
        if (!tallied) this.tally(method, url.pathname, code);
        tallied = true;
      };
      const failed = (err: Error) => {
        answered('error');
        reject(err);
      };
      const req = transport.request(url, requestOptions, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', failed);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const parsed = text ? safeJson(text) : undefined;
          const status = res.statusCode ?? 0;
          answered(String(status));
          if (status >= 200 && status < 300) return resolve(parsed as T);
          const body = (parsed ?? {}) as { reason?: string; message?: string };
          reject(
            new KubeApiError(
              status,
              body.reason ?? 'Unknown',
              `${method} ${url.pathname}: ${status} ${body.message ?? text.slice(0, 200)}`,
            ),
          );
        });
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${url.pathname}: timed out`)));
      req.on('error', failed);
      req.end(payload);
    });
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
