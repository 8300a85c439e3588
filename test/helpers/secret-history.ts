import { createHash } from 'node:crypto';
import { createLogger } from '../../src/common/logger';
import { Informer, keyOf } from '../../src/runtime/informer';
import type { KubeClient } from '../../src/runtime/kube-client';
import type { SecretObject } from './operator-suite';

/**
 * Every ciphertext each DataKey Secret ever held, recorded by a watch (the
 * project's own informer, which re-lists after a cut watch) for a whole run. At
 * the end each distinct ciphertext is opened and the data keys are compared: one
 * data key per (Secret, generation) is the promise; a second one is a data key
 * that was silently replaced.
 */

/** One stored copy of a generation's data key, as the Secret carried it. */
interface StoredCopy {
  generation: number;
  /** The Secret's data describing this copy, in the layout decryptSecret reads. */
  data: Record<string, string>;
}

export interface HistoryVerdict {
  secrets: number;
  copies: number;
  /** (Secret, generation) pairs whose copies hold more than one data key. */
  doubleKeys: string[];
  /** Secrets with a generation above 1 (nothing in the suites asks for regeneration). */
  regenerated: string[];
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const text = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8');

/** The copies a Secret snapshot carries: its current generation and every kept one. */
function copiesOf(secret: SecretObject): StoredCopy[] {
  const data = secret.data ?? {};
  if (!data.ciphertextBlob) return [];
  const copies: StoredCopy[] = [{ generation: Number(text(data.generation) || '1'), data }];
  let kept: { generation: number; flow: string; ciphertextBlob: string; keyVersionId: string }[];
  try {
    kept = JSON.parse(text(data.generations) || '[]') as typeof kept;
  } catch {
    kept = [];
  }
  for (const g of kept) {
    copies.push({
      generation: g.generation,
      data: {
        ...data,
        flow: b64(g.flow),
        ciphertextBlob: b64(g.ciphertextBlob),
        keyVersionId: b64(g.keyVersionId),
      },
    });
  }
  return copies;
}

export class SecretHistory {
  private readonly copies = new Map<string, Map<string, StoredCopy>>();
  private readonly informer: Informer<SecretObject>;
  snapshots = 0;

  constructor(client: KubeClient, labelSelector = 'kms.datakey.io/datakey') {
    this.informer = new Informer<SecretObject>(
      client,
      { path: '/api/v1/secrets', labelSelector, backoffMaxMs: 2000 },
      createLogger('secret-history', { level: 'silent' }),
    );
    this.informer.on((event, secret) => {
      if (event === 'delete') return;
      this.snapshots++;
      const key = keyOf(secret);
      const seen = this.copies.get(key) ?? new Map<string, StoredCopy>();
      for (const copy of copiesOf(secret)) {
        seen.set(`${copy.generation}|${copy.data.ciphertextBlob}`, copy);
      }
      this.copies.set(key, seen);
    });
  }

  async start(): Promise<void> {
    this.informer.start();
    await this.informer.synced;
  }

  stop(): void {
    this.informer.stop();
  }

  /** Opens every recorded copy (through `open`, which returns the plaintext) and compares. */
  async verify(
    open: (secret: SecretObject) => Promise<Buffer>,
    only: (secretKey: string) => boolean = () => true,
  ): Promise<HistoryVerdict> {
    const verdict: HistoryVerdict = { secrets: 0, copies: 0, doubleKeys: [], regenerated: [] };
    for (const [key, copies] of this.copies) {
      if (!only(key)) continue;
      verdict.secrets++;
      const keysByGeneration = new Map<number, Set<string>>();
      for (const copy of copies.values()) {
        verdict.copies++;
        const [namespace, name] = key.split('/');
        const plaintext = await open({ metadata: { name, namespace }, data: copy.data });
        const digest = createHash('sha256').update(plaintext).digest('hex');
        plaintext.fill(0);
        const set = keysByGeneration.get(copy.generation) ?? new Set<string>();
        set.add(digest);
        keysByGeneration.set(copy.generation, set);
      }
      for (const [generation, digests] of keysByGeneration) {
        if (digests.size > 1) verdict.doubleKeys.push(`${key}#${generation}`);
        if (generation > 1) verdict.regenerated.push(`${key}#${generation}`);
      }
    }
    return verdict;
  }
}
