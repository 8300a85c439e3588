// Local control plane for development and tests:
//   node dist/devcluster/main.js up [--no-node]   (npm run cluster:up)
//   node dist/devcluster/main.js down             (npm run cluster:down)
//   node dist/devcluster/main.js build            (build/cache the binaries only)
//   node dist/devcluster/main.js image [--force]  (npm run image:build: the Dockerfile
//                                                  built with buildah, imported into the node)
import * as fs from 'node:fs';
import { ensureBinaries } from './build';
import { down, up } from './cluster';
import { buildImage, OPERATOR_IMAGE } from './image';
import { importImage } from './images';
import { nodePaths } from './node';
import { defaultStateDir } from './paths';

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const flag = cmd === 'image' ? '--force' : '--no-node';
  const unknown = rest.filter((a) => a !== flag);
  if (unknown.length > 0 || (cmd !== 'up' && cmd !== 'image' && rest.length > 0)) {
    console.error(`devcluster: unexpected arguments: ${rest.join(' ')}`);
    return 2;
  }
  switch (cmd) {
    case 'up': {
      const r = await up({ node: !rest.includes('--no-node') });
      out(r.node ? `NODE=${r.node}` : (r.noNodeReason ?? 'no node'));
      out(`KUBECTL=${r.binaries.kubectl}`);
      out(`HELM=${r.binaries.helm}`);
      out(`HELM4=${r.binaries.helm4}`);
      out(`KUBECONFIG=${r.kubeconfig}`);
      return 0;
    }
    case 'down':
      await down();
      return 0;
    case 'build': {
      const bins = await ensureBinaries();
      for (const [name, file] of Object.entries(bins)) out(`${name}=${file}`);
      return 0;
    }
    case 'image': {
      const img = await buildImage({ force: rest.includes('--force'), log: out });
      out(`IMAGE=${img.name}`);
      out(`ARCHIVE=${img.file}`);
      out(`SIZE_MB=${(img.size / 1e6).toFixed(0)}`);
      if (img.built) out(`SECONDS=base ${img.seconds.base} build ${img.seconds.build}`);
      // Into the node's containerd when the local cluster runs one.
      const sock = nodePaths(defaultStateDir()).containerdSock;
      if (fs.existsSync(sock)) {
        await importImage(img, { address: sock });
        out(`imported into the node's containerd (${sock}) as ${OPERATOR_IMAGE}`);
      } else {
        out('no local node running: not imported (npm run cluster:up, then run this again)');
      }
      return 0;
    }
    default:
      console.error('usage: devcluster up [--no-node] | down | build | image [--force]');
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`devcluster: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
