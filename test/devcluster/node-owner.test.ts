import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  claimNode,
  handOverNode,
  otherLiveOwner,
  readOwner,
  releaseNode,
} from '../../harness/devcluster/node-owner';

const linux = process.platform === 'linux';

(linux ? describe : describe.skip)('the machine-wide node owner', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'datakey-owner-'));
    file = path.join(dir, 'run', 'node-owner');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a live claim of another state folder refuses a node, with the reason', () => {
    claimNode('/work/a/.cluster', process.pid, file);
    expect(otherLiveOwner('/work/b/.cluster', file)).toBe('/work/a/.cluster');
    expect(() => claimNode('/work/b/.cluster', process.pid, file)).toThrow(
      'no node: the node of /work/a/.cluster is running; run `npm run cluster:down` there',
    );
    expect(readOwner(file)?.stateDir).toBe('/work/a/.cluster');
  });

  test('its own claim is no obstacle and is replaced', () => {
    claimNode('/work/a/.cluster', process.pid, file);
    expect(otherLiveOwner('/work/a/.cluster', file)).toBeUndefined();
    expect(() => claimNode('/work/a/.cluster', process.pid, file)).not.toThrow();
  });

  test('a claim whose pid is dead is ignored and taken over', () => {
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    claimNode('/work/a/.cluster', process.pid, file);
    // The claim as a crashed owner would have left it.
    const stale = { ...readOwner(file)!, pid: dead };
    fs.writeFileSync(file, JSON.stringify(stale));
    expect(otherLiveOwner('/work/b/.cluster', file)).toBeUndefined();
    claimNode('/work/b/.cluster', process.pid, file);
    expect(readOwner(file)?.stateDir).toBe('/work/b/.cluster');
  });

  test('a reused pid (another start time) does not keep a claim alive', () => {
    claimNode('/work/a/.cluster', process.pid, file);
    fs.writeFileSync(file, JSON.stringify({ ...readOwner(file)!, started: 1 }));
    expect(otherLiveOwner('/work/b/.cluster', file)).toBeUndefined();
  });

  test('hand-over keeps the owner; release removes only its own claim', () => {
    claimNode('/work/a/.cluster', process.pid, file);
    handOverNode('/work/a/.cluster', process.ppid, file);
    expect(readOwner(file)).toMatchObject({ stateDir: '/work/a/.cluster', pid: process.ppid });
    releaseNode('/work/b/.cluster', file);
    expect(fs.existsSync(file)).toBe(true);
    releaseNode('/work/a/.cluster', file);
    expect(fs.existsSync(file)).toBe(false);
  });
});
