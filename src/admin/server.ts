import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../core/log.js';
import type { ApprovalsApi } from './approvals-api.js';

/** Each readiness check names one thing the sidecar needs before it may take traffic. */
export type ReadinessReport = Readonly<Record<string, { readonly ok: boolean; readonly detail?: string }>>;

export interface AdminOptions {
  readonly host: string;
  readonly port: number;
  readonly log: Logger;
  readonly readiness: () => ReadinessReport;
  /** The approvals API and page (`/approvals…`, `/grants…`). */
  readonly approvals?: ApprovalsApi;
  /** Prometheus exposition for `GET /metrics` (404 when absent). */
  readonly metrics?: MetricsExposition;
  /** The MITM CA certificate agents must trust, for `GET /ca.crt` (`firma ca export --admin URL`). */
  readonly ca?: { readonly certPem: string; readonly fingerprint256: string };
}

/** What `GET /metrics` serves: prom-client's text format and its content type. */
export interface MetricsExposition {
  readonly contentType: string;
  render(): Promise<string>;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/**
 * The admin listener (docs/listeners.md): liveness, readiness, metrics, the approvals API and page. It is a separate
 * listener so the proxy port never serves anything but proxied traffic.
 */
export class AdminServer {
  readonly #server: http.Server;
  readonly #opts: AdminOptions;

  constructor(opts: AdminOptions) {
    this.#opts = opts;
    this.#server = http.createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => this.#route(req, res));
    this.#server.on('clientError', (_err, socket) => socket.destroy());
  }

  listen(): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#opts.port, this.#opts.host, () => {
        this.#server.off('error', reject);
        this.#server.on('error', (err) => this.#opts.log.error({ err }, 'admin listener error'));
        resolve(this.#server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    this.#opts.approvals?.close();
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  #route(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
    const approvals = this.#opts.approvals;
    if (approvals !== undefined && approvals.handles(path)) {
      approvals.handle(req, res, path);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      json(res, 405, { error: 'method_not_allowed' });
      return;
    }
    switch (path) {
      case '/healthz':
        json(res, 200, { status: 'ok' });
        return;
      case '/readyz': {
        const checks = this.#opts.readiness();
        const ready = Object.values(checks).every((c) => c.ok);
        json(res, ready ? 200 : 503, { ready, checks });
        return;
      }
      case '/ca.crt':
        if (this.#opts.ca !== undefined) {
          // Public material: the certificate only, never the key (docs/listeners.md "The admin listener").
          res.writeHead(200, {
            'content-type': 'application/x-pem-file',
            'content-length': Buffer.byteLength(this.#opts.ca.certPem),
            'cache-control': 'no-store',
            'x-firma-ca-sha256': this.#opts.ca.fingerprint256,
          });
          res.end(this.#opts.ca.certPem);
          return;
        }
        json(res, 404, { error: 'not_found' });
        return;
      case '/metrics':
        if (this.#opts.metrics !== undefined) {
          this.#metrics(res, this.#opts.metrics);
          return;
        }
        json(res, 404, { error: 'not_found' });
        return;
      default:
        json(res, 404, { error: 'not_found' });
    }
  }

  #metrics(res: ServerResponse, metrics: MetricsExposition): void {
    metrics.render().then(
      (text) => {
        res.writeHead(200, {
          'content-type': metrics.contentType,
          'content-length': Buffer.byteLength(text),
          'cache-control': 'no-store',
        });
        res.end(text);
      },
      (err: unknown) => {
        this.#opts.log.error({ err }, 'metrics could not be collected');
        json(res, 500, { error: 'metrics_unavailable' });
      },
    );
  }
}
