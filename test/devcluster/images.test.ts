import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { layerTar, writeImageArchive } from '../../harness/devcluster/images';

describe('images written by code (docker-archive)', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'datakey-images-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('an archive with a folder layer and an entries layer reads back with tar', () => {
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(src, 'sub', 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    fs.symlinkSync('sub/run.sh', path.join(src, 'link'));
    const long = `/deep/${'x'.repeat(120)}/file`;
    const img = writeImageArchive(
      {
        name: 'datakey.local/test:1',
        aliases: ['docker.io/library/test:2'],
        layers: [
          { fromDir: { dir: src, at: '/app', uid: 1000, gid: 1000 } },
          { entries: [{ type: 'file', path: long, data: 'long name' }] },
        ],
        config: { entrypoint: ['/app/link'], user: '1000:1000', env: { A: 'b' } },
      },
      path.join(dir, 'out', 'img.tar'),
    );
    const out = path.join(dir, 'x');
    fs.mkdirSync(out);
    execFileSync('tar', ['-xf', img.file, '-C', out]);
    const manifest = JSON.parse(fs.readFileSync(path.join(out, 'manifest.json'), 'utf8')) as {
      Config: string;
      RepoTags: string[];
      Layers: string[];
    }[];
    expect(manifest).toHaveLength(1);
    expect(manifest[0].RepoTags).toEqual(['datakey.local/test:1', 'docker.io/library/test:2']);
    expect(img.id).toBe(`sha256:${manifest[0].Config.replace(/\.json$/, '')}`);
    const config = JSON.parse(fs.readFileSync(path.join(out, manifest[0].Config), 'utf8'));
    expect(config.config.Entrypoint).toEqual(['/app/link']);
    expect(config.config.User).toBe('1000:1000');
    expect(config.config.Env).toContain('A=b');
    expect(config.rootfs.diff_ids).toHaveLength(2);

    const l0 = path.join(dir, 'l0');
    fs.mkdirSync(l0);
    execFileSync('tar', ['-xf', path.join(out, manifest[0].Layers[0]), '-C', l0]);
    expect(fs.readFileSync(path.join(l0, 'app', 'sub', 'run.sh'), 'utf8')).toContain('echo hi');
    expect(fs.statSync(path.join(l0, 'app', 'sub', 'run.sh')).mode & 0o777).toBe(0o755);
    expect(fs.readlinkSync(path.join(l0, 'app', 'link'))).toBe('sub/run.sh');
    const listing = execFileSync('tar', ['-tvf', path.join(out, manifest[0].Layers[0])], {
      encoding: 'utf8',
    });
    expect(listing).toMatch(/1000\/1000 .* app\/sub\/run\.sh/);

    const l1 = path.join(dir, 'l1');
    fs.mkdirSync(l1);
    execFileSync('tar', ['-xf', path.join(out, manifest[0].Layers[1]), '-C', l1]);
    expect(fs.readFileSync(path.join(l1, long), 'utf8')).toBe('long name');
  });

  test('layers are reproducible', () => {
    const spec = { entries: [{ type: 'file' as const, path: '/a', data: 'x' }] };
    expect(layerTar(spec).equals(layerTar(spec))).toBe(true);
  });

  test('a bad name is refused', () => {
    expect(() =>
      writeImageArchive({ name: 'NoTag', layers: [{ entries: [] }] }, path.join(dir, 'bad.tar')),
    ).toThrow(/repository:tag/);
  });
});
