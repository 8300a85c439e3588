// npm 11 `npm ci` wants a lock entry for every optional platform package (e.g.
// @swc/core-darwin-arm64), but the registry reachable here serves only this
// platform's builds, so `npm install` leaves them out. This adds each missing one
// with its os/cpu (read from its name), so `npm ci` accepts the lock and skips
// it on other platforms. Run `npm run lock:platforms` after changing dependencies.
const fs = require('fs');
const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8'));
const pk = lock.packages;
const OS = ['darwin', 'linux', 'win32', 'freebsd', 'android', 'openharmony', 'sunos', 'aix'];
const CPU = ['arm64', 'x64', 'ia32', 'arm', 'ppc64', 's390x', 'riscv64', 'loong64', 'wasm32'];
let added = 0;
for (const [path, entry] of Object.entries(pk)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const at = `node_modules/${name}`;
    if (pk[at]) continue;
    const parts = name.split('/').pop().split('-');
    const os = parts.find((p) => OS.includes(p));
    const cpu = parts.find((p) => CPU.includes(p));
    if (!os || !cpu) {
      console.error('cannot infer platform of', name);
      process.exitCode = 1;
      continue;
    }
    pk[at] = { version, dev: entry.dev || undefined, optional: true, os: [os], cpu: [cpu] };
    added++;
  }
}
fs.writeFileSync('package-lock.json', JSON.stringify(lock, null, 2) + '\n');
console.log('added', added);
