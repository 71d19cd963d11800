// Copies the built extension into prebuilds/<platform>-<arch>/ so `npm pack` ships it.
// Runs as `prepack` (and `npm run prebuild`). Source: $WALSHIP_EXTENSION, else the repository's
// target/release/libwalvfs.so (`make build` at the repository root makes it). Debug info is
// stripped when `strip` is on PATH (the release build keeps it: 28 MB instead of 4).
'use strict';
const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');

const src = process.env.WALSHIP_EXTENSION
  || path.resolve(__dirname, '..', '..', '..', 'target', 'release', 'libwalvfs.so');
if (!fs.existsSync(src)) {
  console.error(`walship: ${src} does not exist; run \`make build\` at the repository root first `
    + '(or set WALSHIP_EXTENSION to the built libwalvfs.so)');
  process.exit(1);
}
const dir = path.join(__dirname, '..', 'prebuilds', `${process.platform}-${process.arch}`);
fs.mkdirSync(dir, { recursive: true });
const dst = path.join(dir, 'libwalvfs.so');
const stripped = childProcess.spawnSync('strip', ['--strip-debug', '-o', dst, src], { stdio: 'inherit' });
if (stripped.error || stripped.status !== 0) fs.copyFileSync(src, dst);
console.log(`walship: copied ${src} to ${path.relative(process.cwd(), dir) || '.'}/libwalvfs.so`);
