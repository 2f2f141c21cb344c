// The conformance shim written with the Node API (msgflo-nodejs style):
// repeats in -> out; {"command":"nack"} nacks (callback error),
// {"command":"error"} throws, {"command":"whoami"} answers {"pid": N},
// {"command":"unicode"} returns {text: 'æ€𝄞'}, {"command":"nan"} returns NaN.
// Run through the bin: msgflo-nodejs shim.js --name ROLE
'use strict';
const msgflo = require('msgflo-nodejs');

module.exports = (client, role) => {
  const definition = {
    component: 'SpecShim',
    inports: [{ id: 'in', type: 'any' }],
    outports: [{ id: 'out', type: 'any' }, { id: 'error', type: 'object' }],
  };
  const func = (inport, data, callback) => {
    const command = data && typeof data === 'object' && !Buffer.isBuffer(data) ? data.command : undefined;
    if (command === 'nack') return callback('out', new Error('nack requested'));
    if (command === 'error') throw new Error('error requested');
    if (command === 'unicode') return callback('out', null, { text: 'æ€𝄞' });
    if (command === 'nan') return callback('out', null, NaN);
    if (command === 'whoami') return callback('out', null, { pid: process.pid });
    return callback('out', null, data);
  };
  return new msgflo.participant.Participant(client, definition, func, role);
};
