import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../common/logger';
import { ROOT_KEY_BYTES, type RootKeyLocation } from '../kms';
import type { EventRecorder } from '../runtime/events';
import type { KubeObject } from '../runtime/kube-client';
import { SealError } from '../seal/alicloudkms-seal';
import { ROOT_KEY_SECRET } from './secret-key-store';

const DEFAULT_RETRY_MS = 5_000;

export interface SealGuardOptions {
  location: RootKeyLocation;
  namespace: string;
  events: EventRecorder;
  logger: Logger;
  retryMs?: number;
}

/**
 * Keeps the root key's seal honest: the root key is unsealed at start (retried,
 * not Ready, while the seal cannot be reached or refuses) and checked again at
 * each leadership term and periodically. Every failure is named (reason and
 * message) in /readyz and in a Warning event on the root-key Secret; recovery
 * in a Normal `SealRecovered` event. Nothing is written or created while a seal
 * fails: a sealed root key that cannot be opened is waited for, never replaced.
 */
export class SealGuard {
  private problemText?: string;
  private digest?: Buffer;
  private stopped = false;
  private wake?: () => void;

  constructor(private readonly options: SealGuardOptions) {}

  get problem(): string | undefined {
    return this.problemText;
  }

  /** The root key (the caller takes ownership), once it could be unsealed or created. */
  async open(): Promise<Buffer> {
    for (;;) {
      try {
        const { location } = this.options;
        const material =
          (await location.read()) ?? (await location.create(randomBytes(ROOT_KEY_BYTES)));
        this.digest = digestOf(material);
        this.report(undefined);
        return material;
      } catch (err) {
        if (!(err instanceof SealError)) throw err;
        this.report(err);
      }
      if (this.stopped) throw new Error('stopped before the root key could be unsealed');
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, this.options.retryMs ?? DEFAULT_RETRY_MS).unref();
      });
    }
  }

  /**
   * Unseals the stored root key again and compares it with the one in use;
   * throws (after naming the failure) when it cannot, so a term does not start.
   */
  async check(): Promise<void> {
    let material: Buffer | undefined;
    try {
      material = await this.options.location.read();
    } catch (err) {
      if (err instanceof SealError) this.report(err);
      throw err;
    }
    const same = material && this.digest && timingSafeEqual(digestOf(material), this.digest);
    material?.fill(0);
    if (!same) {
      const err = new SealError(
        'SealKmsError',
        `${this.options.location.description} no longer holds the root key in use`,
      );
      this.report(err);
      throw err;
    }
    this.report(undefined);
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  private report(err: SealError | undefined): void {
    const text = err ? `${err.reason}: ${err.message}` : undefined;
    if (text === this.problemText) return;
    const recovered = this.problemText !== undefined && !err;
    this.problemText = text;
    const { events, logger, namespace } = this.options;
    const secret: KubeObject = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: ROOT_KEY_SECRET, namespace },
    };
    if (err) {
      logger.error({ reason: err.reason, err: err.message }, 'root key seal failing, not Ready');
      events.record(secret, 'Warning', err.reason, err.message);
    } else if (recovered) {
      logger.info('root key seal recovered');
      events.record(secret, 'Normal', 'SealRecovered', 'The root key unseals again.');
    }
  }
}

const digestOf = (material: Buffer): Buffer => createHash('sha256').update(material).digest();
