// A msgflo Node participant (Promise API) relaying payload bytes unchanged:
// the Node binding's own cost. Usage: node node_relay.js ROLE.
'use strict';
const msgflo = require('../node');

(async () => {
  const role = process.argv[2];
  const def = { component: 'NodeRelay', inports: [{ id: 'in' }], outports: [{ id: 'out' }] };
  const p = await msgflo.connect(def, role, { announce: false });
  console.log(`${role}(NodeRelay) ready on ${p.broker}`);
  await p.announce();
  process.on('SIGTERM', () => p.stop().then(() => process.exit(0)));
  for await (const msg of p) {
    await p.send('out', msg.payload);
    msg.ack();
  }
})();
