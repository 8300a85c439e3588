import type { Logger } from '../common/logger';
import { isConflict, isNotFound, type KubeClient, type KubeObject } from './kube-client';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  onStartedLeading: () => void;
  /** Called at once when leadership is lost or released; reconciling must stop. */
  onStoppedLeading: () => void;
}

interface Lease extends KubeObject {
  spec?: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

const microTime = (d: Date) => d.toISOString().replace('Z', '000Z');

/**
 * Leader election on a coordination.k8s.io Lease, as client-go does it: a lease
 * is taken over only when its record has not changed for a whole lease duration
 * of *our* clock (no trust in other clocks), renewed every retry period, and
 * given up when renewal fails for the renew deadline.
 */
export class LeaderElector {
  private leading = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  /** The campaign step in flight (a lease GET and PUT), awaited by stop(). */
  private ticking: Promise<void> = Promise.resolve();
  private observed?: { record: string; at: number };
  private lastRenewal = 0;
  private readonly durationS: number;
  private readonly renewDeadlineMs: number;
  private readonly retryMs: number;

  constructor(
    private readonly client: KubeClient,
    private readonly options: LeaderElectionOptions,
    private readonly logger: Logger,
  ) {
    this.durationS = options.leaseDurationSeconds ?? 15;
    this.renewDeadlineMs = options.renewDeadlineMs ?? 10_000;
    this.retryMs = options.retryPeriodMs ?? 2_000;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Why this replica may not write as the leader now, or undefined when it may.
   * The rule: its last successful renewal is younger than the renew deadline,
   * which is shorter than the lease duration another replica waits out (on its
   * own clock) before it takes over. Checked right before each write, so a leader
   * frozen past its lease (SIGSTOP, a long pause) sends nothing from its stale
   * view when it resumes, even before its next renewal attempt fails.
   */
  writeFence(): string | undefined {
    if (!this.leading) return 'this replica does not lead';
    const age = Date.now() - this.lastRenewal;
    return age < this.renewDeadlineMs
      ? undefined
      : `the lease was last renewed ${age} ms ago (renew deadline ${this.renewDeadlineMs} ms)`;
  }

  /** Starts (or, after stop, restarts) campaigning for the lease. */
  start(): void {
    this.stopped = false;
    this.ticking = this.tick();
  }

  /** Stops electing; a leader releases the lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const stoppedAt = Date.now();
    const wasLeading = this.leading;
    this.setLeading(false); // reconciling stops now
    // A renewal in flight would otherwise land after the release below (which then
    // fails with 409, so the next leader waits out a whole lease) or take the lease.
    await this.ticking;
    if (!wasLeading && this.lastRenewal < stoppedAt) return;
    try {
      const lease = await this.client.get<Lease>(this.path());
      if (lease.spec?.holderIdentity === this.options.identity) {
        await this.client.replace(this.path(), {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: '',
            leaseDurationSeconds: 1,
            renewTime: microTime(new Date()),
          },
        });
      }
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'could not release the lease');
    }
  }

  private collectionPath(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.options.namespace}/leases`;
  }

  private path(): string {
    return `${this.collectionPath()}/${this.options.name}`;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.stepDownIfExpired(); // first: e.g. after the process was frozen
    try {
      const acquired = await this.tryAcquireOrRenew();
      if (acquired) this.lastRenewal = Date.now();
      if (acquired && !this.leading && !this.stopped) this.setLeading(true);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'lease request failed');
    }
    this.stepDownIfExpired();
    if (!this.stopped) this.timer = setTimeout(() => (this.ticking = this.tick()), this.retryMs);
  }

  private stepDownIfExpired(): void {
    if (this.leading && Date.now() - this.lastRenewal > this.renewDeadlineMs) {
      this.logger.error('lease not renewed within the renew deadline, stepping down');
      this.setLeading(false);
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const mine = {
      holderIdentity: this.options.identity,
      leaseDurationSeconds: this.durationS,
      renewTime: microTime(now),
    };
    let lease: Lease;
    try {
      lease = await this.client.get<Lease>(this.path());
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.client.create(this.collectionPath(), {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: this.options.name, namespace: this.options.namespace },
        spec: { ...mine, acquireTime: microTime(now), leaseTransitions: 0 },
      });
      return true;
    }
    const spec = lease.spec ?? {};
    const record = JSON.stringify([spec.holderIdentity, spec.renewTime, spec.leaseDurationSeconds]);
    if (this.observed?.record !== record) this.observed = { record, at: Date.now() };
    const held = spec.holderIdentity && spec.holderIdentity !== this.options.identity;
    const expired =
      Date.now() - this.observed.at > (spec.leaseDurationSeconds ?? this.durationS) * 1000;
    if (held && !expired) {
      if (this.leading) this.setLeading(false);
      return false;
    }
    const takingOver = spec.holderIdentity !== this.options.identity;
    try {
      await this.client.replace(this.path(), {
        ...lease,
        spec: {
          ...spec,
          ...mine,
          acquireTime: takingOver ? microTime(now) : spec.acquireTime,
          leaseTransitions: (spec.leaseTransitions ?? 0) + (takingOver ? 1 : 0),
        },
      });
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.logger.info(
      { identity: this.options.identity, leading },
      leading ? 'became leader' : 'stopped leading',
    );
    if (leading) this.options.onStartedLeading();
    else this.options.onStoppedLeading();
  }
}
