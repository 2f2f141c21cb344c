// The native addon, three ways:
// - in the msgflo source repository (`npm install` in node/): cargo builds
//   it and it is put next to this file as msgflo.node (needs Rust);
// - `npm pack` (prepack: `node build.js --pack`): the same build, copied to
//   the platform's name (napi-rs's convention, msgflo.linux-x64-gnu.node),
//   which is what the tarball carries;
// - installed from that tarball: the prebuilt addon for this platform is
//   used as it is; no Rust needed.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { prebuiltName } = require('./lib/platform');

const inRepo = fs.existsSync(path.join(__dirname, '..', 'core', 'Cargo.toml'));
const pack = process.argv.includes('--pack');
const prebuilt = path.join(__dirname, prebuiltName());

if (!inRepo && !pack) {
  if (fs.existsSync(prebuilt)) {
    console.log('msgflo: using the prebuilt addon ' + path.basename(prebuilt));
    process.exit(0);
  }
  console.error(`msgflo: no prebuilt addon for ${process.platform}-${process.arch} in this package, and no source ` +
    'to build one from. Build it in the msgflo repository: `npm install` in node/ (needs Rust), then `npm pack`.');
  process.exit(1);
}

const profile = process.env.MSGFLO_NODE_PROFILE || 'release';
const args = ['build', '-p', 'msgflo-node'];
if (profile === 'release') args.push('--release');
execFileSync('cargo', args, { cwd: __dirname, stdio: ['ignore', 'inherit', 'inherit'] });
const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: __dirname }));
const names = { linux: 'libmsgflo_node.so', darwin: 'libmsgflo_node.dylib', win32: 'msgflo_node.dll' };
const lib = path.join(meta.target_directory, profile, names[process.platform] || names.linux);
const out = pack ? prebuilt : path.join(__dirname, 'msgflo.node');
fs.copyFileSync(lib, out + '.tmp');
if (pack) {
  // No debug info in the tarball (the workspace's release profile keeps it
  // for profiling).
  try {
    execFileSync('strip', ['--strip-debug', out + '.tmp']);
  } catch (e) {
    console.warn('msgflo: strip failed, packing the addon with its debug info: ' + e.message);
  }
}
fs.renameSync(out + '.tmp', out);
console.log('msgflo: built ' + out);
