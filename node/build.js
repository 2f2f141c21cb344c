// Builds the Rust addon with cargo and puts it next to this file as
// msgflo.node. Run by `npm install` (needs the Rust toolchain).
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const profile = process.env.MSGFLO_NODE_PROFILE || 'release';
const args = ['build', '-p', 'msgflo-node'];
if (profile === 'release') args.push('--release');
execFileSync('cargo', args, { cwd: __dirname, stdio: ['ignore', 'inherit', 'inherit'] });
const meta = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: __dirname }));
const names = { linux: 'libmsgflo_node.so', darwin: 'libmsgflo_node.dylib', win32: 'msgflo_node.dll' };
const lib = path.join(meta.target_directory, profile, names[process.platform] || names.linux);
const out = path.join(__dirname, 'msgflo.node');
fs.copyFileSync(lib, out + '.tmp');
fs.renameSync(out + '.tmp', out);
console.log('msgflo: built ' + out);
