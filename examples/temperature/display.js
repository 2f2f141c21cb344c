// The display of the example graph, in Node.js, written for the
// msgflo-nodejs API (it runs unchanged on the original library): prints
// every text it gets on inport `in` to stdout.
// `msgflo-nodejs --name ROLE display.js`
const msgflo = require('msgflo-nodejs');

module.exports = function Display(client, role) {
  const definition = {
    component: 'examples/Display',
    label: 'Prints what it gets',
    icon: 'television',
    inports: [{ id: 'in', type: 'string' }],
    outports: [],
  };
  const process = (inport, data, callback) => {
    console.log(typeof data === 'string' ? data : JSON.stringify(data));
    callback();
  };
  return new msgflo.participant.Participant(client, definition, process, role);
};
