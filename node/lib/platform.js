'use strict';
// The file name of a prebuilt addon for this platform, as napi-rs names
// them: msgflo.<platform>-<arch>[-gnu|-musl].node.
function prebuiltName() {
  let abi = '';
  if (process.platform === 'linux') {
    const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null;
    abi = report && report.header && report.header.glibcVersionRuntime ? '-gnu' : '-musl';
  }
  return `msgflo.${process.platform}-${process.arch}${abi}.node`;
}

module.exports = { prebuiltName };
