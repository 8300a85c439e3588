// The Dockerfile's contract (the base is an argument, non-root numeric user,
// node as PID 1) and the cache key of the image build.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { inputsKey } from '../../harness/devcluster/image';
import { repoRoot } from '../../harness/devcluster/paths';

const dockerfile = fs.readFileSync(path.join(repoRoot, 'Dockerfile'), 'utf8');
const instructions = dockerfile
  .split('\n')
  .filter((l) => l.trim() && !l.trim().startsWith('#'))
  .map((l) => l.trim());

test('the base is a build argument defaulting to the official Node 20 image', () => {
  expect(instructions[0]).toBe('ARG BASE=node:20-bookworm-slim');
  const froms = instructions.filter((l) => l.startsWith('FROM '));
  expect(froms.length).toBeGreaterThanOrEqual(2);
  for (const f of froms) expect(f).toMatch(/^FROM \$\{BASE\}( AS [a-z-]+)?$/);
});

test('the final stage: production dependencies, dist and crds, numeric user, node as PID 1', () => {
  const final = instructions.slice(
    instructions.lastIndexOf(instructions.filter((l) => l.startsWith('FROM ')).pop()!),
  );
  expect(final).toContain('COPY crds ./crds');
  expect(final.some((l) => /^COPY --from=build \S*dist/.test(l))).toBe(true);
  expect(final.some((l) => /^COPY --from=prod-deps \S*node_modules/.test(l))).toBe(true);
  expect(instructions).toContain('RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund');
  expect(final).toContain('USER 65532:65532');
  expect(final).toContain('ENTRYPOINT ["node", "--max-semi-space-size=2", "dist/cli.js"]');
  expect(final.some((l) => l.startsWith('RUN '))).toBe(false);
});

test('.dockerignore keeps state and dependencies out of the context', () => {
  const ignored = fs.readFileSync(path.join(repoRoot, '.dockerignore'), 'utf8').split('\n');
  for (const p of ['node_modules', 'dist', '.cluster', '.datakey-dev', '.git', 'coverage']) {
    expect(ignored).toContain(p);
  }
});

test('the build cache key changes with any input and with the base', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'image-key-'));
  try {
    for (const f of [
      'Dockerfile',
      '.dockerignore',
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'tsconfig.build.json',
    ]) {
      fs.writeFileSync(path.join(dir, f), f);
    }
    fs.mkdirSync(path.join(dir, 'src'));
    fs.mkdirSync(path.join(dir, 'crds'));
    fs.writeFileSync(path.join(dir, 'src', 'a.ts'), 'a');
    const k1 = inputsKey('base:1', dir);
    expect(inputsKey('base:1', dir)).toBe(k1);
    expect(inputsKey('base:2', dir)).not.toBe(k1);
    fs.writeFileSync(path.join(dir, 'src', 'a.ts'), 'b');
    const k2 = inputsKey('base:1', dir);
    expect(k2).not.toBe(k1);
    fs.writeFileSync(path.join(dir, 'crds', 'x.yaml'), 'x');
    const k3 = inputsKey('base:1', dir);
    expect(k3).not.toBe(k2);
    // What the Dockerfile does not copy (.dockerignore keeps it out) does not count.
    fs.mkdirSync(path.join(dir, 'test'));
    fs.writeFileSync(path.join(dir, 'test', 't.ts'), 't');
    expect(inputsKey('base:1', dir)).toBe(k3);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
