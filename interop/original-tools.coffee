# Our participants under the original MsgFlo tools (npm msgflo@0.12.3):
# its participant test harness (spec/heterogenous.coffee) and its
# coordinator starting and wiring our participants from a graph.
#
# Environment:
#   MSGFLO_BROKER       broker URL (amqp://... or mqtt://...)
#   MSGFLO_PARTICIPANT  JSON array: the command of a Repeat participant; the
#                       role is appended as the last argument
#   MSGFLO_COMPONENT    component name it announces (default Repeat)

chai = require 'chai'
child_process = require 'child_process'
fs = require 'fs'
os = require 'os'
path = require 'path'
net = require 'net'
msgflo = require 'msgflo'
heterogenous = require 'msgflo/spec/heterogenous'

broker = process.env.MSGFLO_BROKER
command = JSON.parse process.env.MSGFLO_PARTICIPANT
component = process.env.MSGFLO_COMPONENT or 'Repeat'
suffix = Math.random().toString(16).slice(2, 10)

describe "original harness on #{broker.split(':')[0]}", ->
  g =
    broker: null
    commands: {}
    repeat: { bar: 'foo', n: [1, 2.5], t: 'æøå' }
  g.commands[component] = command.concat ["harness#{suffix}"]

  beforeEach (done) ->
    g.broker = msgflo.transport.getBroker broker
    g.broker.connect done
  afterEach (done) ->
    g.broker.disconnect done

  heterogenous.testParticipant g, component, { broker: broker, timeout: 20000 }

freePort = (callback) ->
  srv = net.createServer()
  srv.listen 0, '127.0.0.1', ->
    port = srv.address().port
    srv.close -> callback port

describe "original coordinator on #{broker.split(':')[0]}", ->
  coordinator = null
  client = null
  dir = null

  afterEach (done) ->
    # The original orphans its children: kill its whole process group.
    try
      process.kill -coordinator.pid, 'SIGTERM' if coordinator
    catch e
    coordinator = null
    client.disconnect(done) if client
    client = null

  # The original sends IIPs before it binds the edges, and sends a string
  # IIP as a JSON string: so the IIP is checked on a's outport, and the
  # a -> b edge with data sent once the IIP came through.
  it 'starts our participants, delivers the IIP and wires the edge', (done) ->
    @timeout 40000
    a = "a#{suffix}"
    b = "b#{suffix}"
    dir = fs.mkdtempSync path.join(os.tmpdir(), 'msgflo-interop-')
    lib = { components: {} }
    # A name the .fbp grammar accepts ("C++Repeat" is not one).
    name = component.replace /[^A-Za-z0-9_]/g, ''
    # The original splits commands on spaces: no quoting possible.
    lib.components[name] = command.join(' ') + ' #ROLE'
    fs.writeFileSync path.join(dir, 'library.json'), JSON.stringify(lib)
    graph = """
      '{"temperature": 22.3}' -> IN #{a}(#{name}) OUT -> IN #{b}(#{name})
    """
    fs.writeFileSync path.join(dir, 'graph.fbp'), graph

    client = msgflo.transport.getBroker broker
    sender = null
    finished = false
    finish = (err) ->
      return if finished
      finished = true
      clearInterval sender if sender
      done err
    onA = (msg) ->
      client.ackMessage msg if msg.amqp
      return if sender or finished
      try
        chai.expect(msg.data).to.equal '{"temperature": 22.3}'
      catch e
        return finish e
      sender = setInterval ->
        client.sendTo 'inqueue', "#{a}.IN", { x: 2 }, ->
      , 300
    onB = (msg) ->
      client.ackMessage msg if msg.amqp
      # Where the edge happens to exist before the IIP passes a, b repeats it too.
      return if msg.data == '{"temperature": 22.3}'
      try
        chai.expect(msg.data).to.eql { x: 2 }
      catch e
        return finish e
      finish()
    startCoordinator = ->
      freePort (port) ->
        coordinator = child_process.spawn 'node', [
          require.resolve('msgflo/bin/msgflo'),
          '--graph', path.join(dir, 'graph.fbp'),
          '--library', path.join(dir, 'library.json'),
          '--broker', broker,
          '--host', '127.0.0.1', '--port', String(port),
          '--ping-interval', '0',
        ], { detached: true, stdio: ['ignore', 'ignore', 'inherit'] }
    tap = (exchange, handler, callback) ->
      if broker.indexOf('mqtt') == 0
        return client.subscribeToQueue exchange, handler, callback
      # Declare the outport exchange exactly as the contract says, so a tap
      # can be bound before the participant exists.
      receive = "receive-#{exchange}"
      client.channel.assertExchange exchange, 'fanout', {}, (err) ->
        return callback err if err
        client.channel.assertQueue receive, { exclusive: true, autoDelete: true }, (err) ->
          return callback err if err
          client.channel.bindQueue receive, exchange, '', {}, (err) ->
            return callback err if err
            client.subscribeToQueue receive, handler, callback
    client.connect (err) ->
      return finish err if err
      tap "#{a}.OUT", onA, (err) ->
        return finish err if err
        tap "#{b}.OUT", onB, (err) ->
          return finish err if err
          startCoordinator()

# Leave nothing behind on RabbitMQ (MQTT keeps no state here).
after (done) ->
  return done() if broker.indexOf('amqp') != 0
  @timeout 10000
  # Give the participants killed in afterEach time to exit: a participant
  # still running would re-declare a deleted inport queue.
  setTimeout ->
    deleteAll done
  , 1500

deleteAll = (done) ->
  roles = ["harness#{suffix}", "a#{suffix}", "b#{suffix}"]
  queues = ("#{r}.IN" for r in roles).concat ['test.RECEIVE']
  exchanges = queues.concat("#{r}.OUT" for r in roles)
  run = ->
    conn = await require('amqplib').connect broker
    ch = await conn.createChannel()
    await ch.deleteQueue q for q in queues
    await ch.deleteExchange x for x in exchanges
    await ch.close()
    await conn.close()
  run().then (-> done()), done
