// Local control plane for development and tests:
//   node dist/devcluster/main.js up [--no-node]   (npm run cluster:up)
//   node dist/devcluster/main.js down             (npm run cluster:down)
//   node dist/devcluster/main.js build            (build/cache the binaries only)
import { ensureBinaries } from './build';
import { down, up } from './cluster';

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const unknown = rest.filter((a) => a !== '--no-node');
  if (unknown.length > 0 || (cmd !== 'up' && rest.length > 0)) {
    console.error(`devcluster: unexpected arguments: ${rest.join(' ')}`);
    return 2;
  }
  switch (cmd) {
    case 'up': {
      const r = await up({ node: !rest.includes('--no-node') });
      out(r.node ? `NODE=${r.node}` : (r.noNodeReason ?? 'no node'));
      out(`KUBECTL=${r.binaries.kubectl}`);
      out(`HELM=${r.binaries.helm}`);
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
    default:
      console.error('usage: devcluster up [--no-node] | down | build');
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
