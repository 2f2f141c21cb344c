// The live view: one more client of the runtime's FBP protocol WebSocket.
// It reads the graph (component:getsource), the components (component:list)
// and the live state (our `msgflo:subscribe` -> `msgflo:status`), draws them
// with our own layout, watches edges (network:edges -> network:data) and
// edits the graph (graph:addedge/removeedge/addnode/removenode/addinitial).
// Every edit goes through the protocol, and edits from any client (ours
// included) come back as graph:* frames that are applied in one place.
//
// Keyboard: Tab through roles, ports and edges; Enter/Space activates
// (edge: select and watch; inport: send a value, or finish a connection;
// outport: start a connection; role: select); Delete removes the selected
// edge or role; Escape cancels.
//
// The secret (URL fragment `#secret=...` or the prompt) lives only in the
// client and the Flowhub link; it is never logged.

import { Client } from './client.js';
import { layout } from './layout.js';

const SVG = 'http://www.w3.org/2000/svg';
const IIP_SPACE = 120; // room left of the first layer for IIP labels
const HEADER = 46;
const ROW = 30;
const MAX_MESSAGES = 500;

const ICONS = {
  thermometer: '°', television: '▭', tv: '▭', desktop: '▭', font: 'A', cog: '⚙', gear: '⚙', cogs: '⚙',
  envelope: '✉', 'envelope-o': '✉', cloud: '☁', bolt: '⚡', flash: '⚡', 'sun-o': '☀', sun: '☀', star: '★',
  heart: '♥', music: '♪', filter: '⧩', random: '⤨', exchange: '⇄', refresh: '↻', repeat: '↻', play: '▶',
  stop: '■', clock: '◷', 'clock-o': '◷', database: '⛁', file: '▤', 'file-o': '▤', code: '⌥', terminal: '›_',
  search: '⌕', bell: '♪', lightbulb: '☼', 'lightbulb-o': '☼', globe: '◍', home: '⌂', lock: '⚿', key: '⚿',
  'check': '✓', times: '✕', plus: '+', minus: '−', calculator: '±', table: '▦', list: '☰', bars: '☰',
  'bar-chart': '▥', 'line-chart': '⟋', pencil: '✎', trash: '⌫', eye: '◉', user: '☺', plug: '⏚', wifi: '◠',
  'paper-plane': '➤', send: '➤', print: '⎙', camera: '◙', 'map-marker': '⌖', industry: '⌂', microchip: '▣',
};

const state = {
  client: null,
  runtime: null,
  graphId: null,
  secret: '',
  components: new Map(),
  nodes: new Map(), // id -> {id, component, metadata}
  edges: new Map(), // edge key -> {src, tgt, metadata}
  iips: new Map(), // port key -> {tgt, data}
  status: null, // the last msgflo:status payload
  roles: new Map(), // role -> status entry
  edgeStatus: new Map(), // edge key -> status entry
  iipStatus: new Map(), // port key -> status entry
  running: null,
  watched: new Set(), // edge keys
  selected: null, // {type: 'edge'|'node'|'outport'|'inport', key, node?, port?}
  messages: 0,
  paused: false,
  held: [],
  arrivals: new Map(), // watched edge key -> arrival times (ms), for rates
  signature: null,
  fit: null, // null: automatic, true: fit the canvas, false: natural size
  scale: 1,
  els: null, // element references of the drawing
  firstRender: false,
};

// ---- small helpers -------------------------------------------------------

const $ = (sel) => document.querySelector(sel);
const portKey = (p) => `${p.node}.${p.port}`;
const edgeKey = (src, tgt) => `${portKey(src)}>${portKey(tgt)}`;
const parseEdgeKey = (key) => {
  const [a, b] = key.split('>');
  const split = (s) => {
    const i = s.lastIndexOf('.');
    return { node: s.slice(0, i), port: s.slice(i + 1) };
  };
  return { src: split(a), tgt: split(b) };
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

const fit = (text, chars) => (text.length > chars ? `${text.slice(0, Math.max(1, chars - 1))}…` : text);

function short(data, chars = 14) {
  const s = typeof data === 'string' ? `'${data}'` : JSON.stringify(data);
  return fit(s ?? String(data), chars);
}

function toast(message) {
  const t = $('#toast');
  t.textContent = message;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

function describeError(e) {
  return e && e.message ? e.message : String(e);
}

// ---- the protocol --------------------------------------------------------

async function request(protocol, command, payload) {
  try {
    return await state.client.send(protocol, command, payload);
  } catch (e) {
    toast(`${protocol}:${command}: ${describeError(e)}`);
    throw e;
  }
}

function readSecretFromFragment() {
  const m = /^#secret=(.*)$/.exec(location.hash);
  if (!m) return '';
  // Out of the address bar and the history as soon as it is read.
  history.replaceState(null, '', location.pathname + location.search);
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return m[1];
  }
}

function askSecret(wrong) {
  const dialog = $('#secret-dialog');
  $('#secret-wrong').hidden = !wrong;
  const input = $('#secret-input');
  input.value = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(input.value), { once: true });
    dialog.showModal();
    input.focus();
  });
}

async function start() {
  setConnection('connecting');
  state.secret = readSecretFromFragment();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const client = new Client(`${scheme}://${location.host}/`, { secret: state.secret, timeout: 15000 });
  state.client = client;
  client.on(applyFrame);
  client.onClose(() => setConnection('disconnected'));
  try {
    await client.connect();
  } catch (e) {
    setConnection('disconnected');
    toast(describeError(e));
    return;
  }
  setConnection('connected');
  let runtime = (await request('runtime', 'getruntime', {})).payload;
  let asked = false;
  while (!runtime.capabilities || runtime.capabilities.length === 0) {
    state.secret = await askSecret(asked || Boolean(state.secret));
    asked = true;
    client.secret = state.secret;
    runtime = (await request('runtime', 'getruntime', {})).payload;
  }
  state.runtime = runtime;
  const wanted = new URLSearchParams(location.search).get('graph');
  state.graphId = wanted || runtime.graph;
  $('#graph-name').textContent = state.graphId ?? '(no graph)';
  document.title = `${state.graphId ?? 'msgflo'} · msgflo live view`;
  if (!state.graphId) {
    toast('The runtime runs no graph.');
    return;
  }
  const [list, source] = await Promise.all([
    request('component', 'list', {}),
    request('component', 'getsource', { name: state.graphId }),
  ]);
  for (const f of list.parts) if (f.command === 'component') state.components.set(f.payload.name, f.payload);
  loadGraph(JSON.parse(source.payload.code));
  refreshComponents();
  update();
  await request('msgflo', 'subscribe', { graph: state.graphId });
  // Without a selection the runtime sends every edge's data; ask for none
  // until the user watches one.
  sendWatched();
  request('network', 'getstatus', { graph: state.graphId }).catch(() => {});
}

function setConnection(s) {
  const c = $('#connection');
  c.textContent = s;
  c.className = `connection-${s}`;
  document.body.dataset.connection = s;
}

// ---- the model -------------------------------------------------------------

function loadGraph(g) {
  state.nodes.clear();
  state.edges.clear();
  state.iips.clear();
  for (const [id, p] of Object.entries(g.processes ?? {})) {
    state.nodes.set(id, { id, component: p.component, metadata: p.metadata ?? {} });
  }
  for (const c of g.connections ?? []) {
    const tgt = { node: c.tgt.process, port: c.tgt.port };
    if (c.src) {
      const src = { node: c.src.process, port: c.src.port };
      state.edges.set(edgeKey(src, tgt), { src, tgt, metadata: c.metadata ?? {} });
    } else if ('data' in c) {
      state.iips.set(portKey(tgt), { tgt, data: c.data });
    }
  }
}

function applyGraphEdit(command, p) {
  switch (command) {
    case 'clear':
      state.nodes.clear();
      state.edges.clear();
      state.iips.clear();
      break;
    case 'addnode':
      state.nodes.set(p.id, { id: p.id, component: p.component, metadata: p.metadata ?? {} });
      break;
    case 'changenode': {
      const n = state.nodes.get(p.id);
      if (n) n.metadata = p.metadata ?? {};
      break;
    }
    case 'removenode':
      state.nodes.delete(p.id);
      for (const [k, e] of state.edges) if (e.src.node === p.id || e.tgt.node === p.id) state.edges.delete(k);
      for (const [k, i] of state.iips) if (i.tgt.node === p.id) state.iips.delete(k);
      break;
    case 'renamenode': {
      const n = state.nodes.get(p.from);
      if (!n) break;
      state.nodes.delete(p.from);
      state.nodes.set(p.to, { ...n, id: p.to });
      const rename = (x) => (x.node === p.from ? { ...x, node: p.to } : x);
      for (const [k, e] of [...state.edges]) {
        state.edges.delete(k);
        const src = rename(e.src);
        const tgt = rename(e.tgt);
        state.edges.set(edgeKey(src, tgt), { ...e, src, tgt });
      }
      for (const [k, i] of [...state.iips]) {
        state.iips.delete(k);
        const tgt = rename(i.tgt);
        state.iips.set(portKey(tgt), { ...i, tgt });
      }
      break;
    }
    case 'addedge':
    case 'changeedge':
      if (p.src && p.tgt) state.edges.set(edgeKey(p.src, p.tgt), { src: p.src, tgt: p.tgt, metadata: p.metadata ?? {} });
      break;
    case 'removeedge':
      if (p.src && p.tgt) {
        const key = edgeKey(p.src, p.tgt);
        state.edges.delete(key);
        if (state.watched.delete(key)) sendWatched();
      }
      break;
    case 'addinitial':
      if (p.tgt) state.iips.set(portKey(p.tgt), { tgt: p.tgt, data: p.src?.data });
      break;
    case 'removeinitial':
      if (p.tgt) state.iips.delete(portKey(p.tgt));
      break;
    default:
      return;
  }
}

function applyFrame(f) {
  const p = f.payload ?? {};
  const ours = p.graph === undefined || p.graph === state.graphId;
  switch (`${f.protocol}:${f.command}`) {
    case 'msgflo:status':
      if (ours) setStatus(p);
      break;
    case 'network:data':
      if (ours) onData(p);
      return;
    case 'network:status':
    case 'network:started':
    case 'network:stopped':
      if (ours) state.running = Boolean(p.running ?? p.started);
      break;
    case 'component:component':
      state.components.set(p.name, p);
      refreshComponents();
      break;
    case 'network:error':
    case 'network:processerror':
      if (ours) toast(`${p.id ? `${p.id}: ` : ''}${p.message ?? p.error ?? 'error'}`);
      return;
    case 'graph:clear':
      if (p.id === state.graphId) applyGraphEdit('clear', p);
      break;
    default:
      if (f.command === 'error') {
        toast(`${f.protocol}: ${p.message ?? 'error'}`);
        return;
      }
      if (f.protocol === 'graph' && p.graph === state.graphId) applyGraphEdit(f.command, p);
      else return;
  }
  scheduleUpdate();
}

function setStatus(s) {
  state.status = s;
  state.roles = new Map((s.roles ?? []).map((r) => [r.role, r]));
  state.edgeStatus = new Map((s.edges ?? []).map((e) => [edgeKey(e.src, e.tgt), e]));
  state.iipStatus = new Map((s.iips ?? []).map((i) => [portKey(i.tgt), i]));
  if (s.broker) $('#broker').textContent = s.broker;
  if (s.ide && state.runtime) {
    const query =
      `protocol=websocket&address=ws://${location.host}&id=${state.runtime.id}` +
      (state.secret ? `&secret=${state.secret}` : '');
    const a = $('#flowhub');
    a.href = `${s.ide}#runtime/endpoint?${encodeURIComponent(query)}`;
    a.hidden = false;
  }
}

// What is drawn is the graph (component:getsource, then every graph:* edit);
// msgflo:status only annotates it (a status may lag behind an edit).

function nodeIds() {
  return [...state.nodes.keys()];
}

function allEdges() {
  return state.edges;
}

function allIips() {
  return state.iips;
}

function componentOf(id) {
  return state.nodes.get(id)?.component ?? state.roles.get(id)?.component ?? '';
}

/** The ports of a role: from its status (with queues), its component, and the edges and IIPs that use them. */
function portsOf(id) {
  const ins = new Map();
  const outs = new Map();
  const role = state.roles.get(id);
  for (const p of role?.inports ?? []) ins.set(p.id, { id: p.id, queue: p.queue });
  for (const p of role?.outports ?? []) outs.set(p.id, { id: p.id, queue: p.queue });
  const comp = state.components.get(componentOf(id));
  for (const p of comp?.inPorts ?? []) if (!ins.has(p.id)) ins.set(p.id, { id: p.id });
  for (const p of comp?.outPorts ?? []) if (!outs.has(p.id)) outs.set(p.id, { id: p.id });
  for (const e of allEdges().values()) {
    if (e.src.node === id && !outs.has(e.src.port)) outs.set(e.src.port, { id: e.src.port });
    if (e.tgt.node === id && !ins.has(e.tgt.port)) ins.set(e.tgt.port, { id: e.tgt.port });
  }
  for (const i of allIips().values()) if (i.tgt.node === id && !ins.has(i.tgt.port)) ins.set(i.tgt.port, { id: i.tgt.port });
  return { ins: [...ins.values()], outs: [...outs.values()] };
}

// ---- drawing ---------------------------------------------------------------

function boxSize(id, ports) {
  const comp = componentOf(id);
  const rows = Math.max(1, ports.ins.length, ports.outs.length);
  // Each half holds the longest port name or queue name of either side.
  const len = (p) => Math.max(p.id.length * 7.5, (p.queue ?? '').length * 6.2);
  const half = Math.max(0, ...ports.ins.map(len), ...ports.outs.map(len)) + 22;
  const width = Math.max(160, id.length * 8.5 + 80, comp.length * 6.8 + 24, 2 * half);
  return { width: Math.min(420, Math.ceil(width)), height: HEADER + rows * ROW + 6 };
}

function structureSignature() {
  const parts = [];
  for (const id of nodeIds()) {
    const p = portsOf(id);
    const names = (list) => list.map((x) => `${x.id}=${x.queue ?? ''}`).join(',');
    parts.push(`${id}(${componentOf(id)}):${names(p.ins)}/${names(p.outs)}`);
  }
  parts.push('|', ...allEdges().keys(), '|', ...allIips().keys());
  return parts.join('\n');
}

let updateTimer = null;
function scheduleUpdate() {
  if (updateTimer === null) updateTimer = setTimeout(update, 15);
}

function update() {
  clearTimeout(updateTimer);
  updateTimer = null;
  const signature = structureSignature();
  if (signature !== state.signature) {
    state.signature = signature;
    draw();
  }
  patch();
  renderTextView();
  renderSelection();
  if (!state.firstRender && state.graphId) {
    state.firstRender = true;
    performance.mark('msgflo:first-render');
    document.body.dataset.rendered = 'yes';
  }
}

function portPosition(box, dir, index) {
  return { x: dir === 'in' ? box.x : box.x + box.width, y: box.y + HEADER + index * ROW + 11 };
}

function curve(points) {
  let d = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1];
    const b = points[i];
    const dx = Math.max(30, Math.abs(b.x - a.x) / 2);
    d += ` C${a.x + dx},${a.y} ${b.x - dx},${b.y} ${b.x},${b.y}`;
  }
  return d;
}

function focusKeyOfActive() {
  const a = document.activeElement;
  return a && a.dataset ? a.dataset.focusKey : undefined;
}

function draw() {
  const focused = focusKeyOfActive();
  const ids = nodeIds();
  const ports = new Map(ids.map((id) => [id, portsOf(id)]));
  const known = new Set(ids);
  const edges = [...allEdges()].filter(([, e]) => known.has(e.src.node) && known.has(e.tgt.node));
  const t0 = performance.now();
  const g = layout(
    ids.map((id) => ({ id, ...boxSize(id, ports.get(id)) })),
    edges.map(([, e]) => ({ source: e.src.node, target: e.tgt.node })),
    { layerGap: 130 },
  );
  if (!state.firstRender) performance.measure('msgflo:layout', { start: t0, end: performance.now() });
  const root = $('#graph');
  root.replaceChildren();
  const natural = g.width + IIP_SPACE;
  root.setAttribute('viewBox', `0 0 ${natural} ${g.height}`);
  // Automatic: shrink to the canvas's width when that keeps it readable,
  // else scroll. The Fit button shows it all; 100% at natural size.
  const canvas = $('#canvas');
  const roomW = canvas.clientWidth - 8;
  const roomH = canvas.clientHeight - 8;
  let scale = 1;
  if (state.fit === true) scale = Math.min(1, roomW / natural, roomH / g.height);
  else if (state.fit === null && natural > roomW && roomW / natural >= 0.6) scale = roomW / natural;
  if (!(scale > 0)) scale = 1;
  state.scale = scale;
  root.setAttribute('width', Math.round(natural * scale));
  root.setAttribute('height', Math.round(g.height * scale));
  const zoom = $('#zoom');
  zoom.textContent = scale < 1 ? 'Zoom 100%' : 'Fit';
  zoom.hidden = scale === 1 && natural <= roomW && g.height <= roomH;
  root.append(
    svg(
      'defs',
      {},
      ...['pubsub', 'roundrobin', 'deadletter', 'unknown'].map((kind) =>
        svg(
          'marker',
          { id: `arrow-${kind}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 10, markerHeight: 10, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse', class: `arrow kind-${kind}` },
          svg('path', { d: 'M0,0 L10,5 L0,10 z' }),
        ),
      ),
    ),
  );
  const scene = svg('g', { transform: `translate(${IIP_SPACE},0)` });
  root.append(scene);
  const els = { nodes: new Map(), ports: new Map(), edges: new Map(), iips: new Map() };
  const edgeLayer = svg('g', { class: 'edges' });
  const nodeLayer = svg('g', { class: 'nodes' });
  const iipLayer = svg('g', { class: 'iips' });
  scene.append(edgeLayer, iipLayer, nodeLayer);

  const where = new Map(); // port key + dir -> position
  for (const id of ids) {
    const box = g.nodes.get(id);
    const p = ports.get(id);
    const comp = componentOf(id);
    const node = svg('g', { class: 'node', 'data-role': id, 'data-focus-key': `node:${id}`, tabindex: 0, role: 'button' });
    const title = svg('title');
    const rect = svg('rect', { class: 'box', x: box.x, y: box.y, width: box.width, height: box.height, rx: 6 });
    const icon = svg('text', { class: 'icon', x: box.x + 10, y: box.y + 18 });
    const name = svg('text', { class: 'name', x: box.x + 30, y: box.y + 18, text: fit(id, Math.floor((box.width - 80) / 8)) });
    const count = svg('text', { class: 'count', x: box.x + box.width - 10, y: box.y + 18, 'text-anchor': 'end' });
    const compText = svg('text', { class: 'component', x: box.x + 10, y: box.y + 35, text: fit(comp || '(unknown component)', Math.floor((box.width - 20) / 6.4)) });
    node.append(title, rect, icon, name, count, compText);
    node.addEventListener('click', (ev) => {
      ev.stopPropagation();
      select({ type: 'node', key: `node:${id}`, node: id });
    });
    nodeLayer.append(node);
    els.nodes.set(id, { node, title, rect, icon, count, compText, chars: Math.floor((box.width - 20) / 6.4) });
    for (const dir of ['in', 'out']) {
      const list = dir === 'in' ? p.ins : p.outs;
      list.forEach((port, i) => {
        const at = portPosition(box, dir, i);
        where.set(`${id}.${port.id}:${dir}`, at);
        const key = `${dir}port:${id}.${port.id}`;
        const anchor = dir === 'in' ? 'start' : 'end';
        const tx = dir === 'in' ? at.x + 10 : at.x - 10;
        const half = Math.floor((box.width / 2 - 14) / 7.5);
        const pg = svg('g', {
          class: `port port-${dir}`,
          'data-node': id,
          'data-port': port.id,
          'data-dir': dir,
          'data-focus-key': key,
          tabindex: 0,
          role: 'button',
        });
        const ptitle = svg('title');
        const hit = svg('rect', { class: 'port-hit', x: dir === 'in' ? at.x - 8 : at.x - box.width / 2, y: at.y - 10, width: box.width / 2 + 8, height: ROW - 2 });
        const dot = svg('circle', { class: 'port-dot', cx: at.x, cy: at.y, r: 5 });
        const label = svg('text', { class: 'port-name', x: tx, y: at.y + 4, 'text-anchor': anchor, text: fit(port.id, half) });
        const queue = svg('text', { class: 'queue', x: tx, y: at.y + 16, 'text-anchor': anchor });
        pg.append(ptitle, hit, dot, label, queue);
        pg.addEventListener('click', (ev) => {
          ev.stopPropagation();
          activatePort(dir, id, port.id);
        });
        node.append(pg);
        els.ports.set(key, { pg, title: ptitle, queue, half, dir, node: id, port: port.id });
      });
    }
  }

  edges.forEach(([key, e], i) => {
    const from = where.get(`${portKey(e.src)}:out`);
    const to = where.get(`${portKey(e.tgt)}:in`);
    if (!from || !to) return;
    const shape = g.edges[i];
    let d;
    let mid;
    if (e.src.node === e.tgt.node) {
      const box = g.nodes.get(e.src.node);
      const below = box.y + box.height + 18;
      d = `M${from.x},${from.y} C${from.x + 40},${from.y} ${from.x + 40},${below} ${from.x - 10},${below} L${to.x + 10},${below} C${to.x - 40},${below} ${to.x - 40},${to.y} ${to.x},${to.y}`;
      mid = { x: box.x + box.width / 2, y: below - 4 };
    } else {
      const pts = [from, ...shape.points, to];
      d = curve(pts);
      const k = Math.floor((pts.length - 1) / 2);
      mid = { x: (pts[k].x + pts[k + 1].x) / 2, y: (pts[k].y + pts[k + 1].y) / 2 - 6 };
    }
    const eg = svg('g', { class: 'edge', 'data-key': key, 'data-focus-key': `edge:${key}`, tabindex: 0, role: 'button' });
    const title = svg('title');
    const hit = svg('path', { class: 'edge-hit', d });
    const line = svg('path', { class: 'edge-line', d });
    const label = svg('text', { class: 'edge-label', x: mid.x, y: mid.y, 'text-anchor': 'middle' });
    eg.append(title, hit, line, label);
    eg.addEventListener('click', (ev) => {
      ev.stopPropagation();
      activateEdge(key);
    });
    edgeLayer.append(eg);
    els.edges.set(key, { eg, title, line, label, src: e.src, tgt: e.tgt });
  });

  for (const [key, iip] of allIips()) {
    const at = where.get(`${key}:in`);
    if (!at) continue;
    const ig = svg('g', { class: 'iip', 'data-port': key });
    const title = svg('title');
    const text = svg('text', { class: 'iip-text', x: at.x - 16, y: at.y + 4, 'text-anchor': 'end' });
    const line = svg('line', { class: 'iip-line', x1: at.x - 14, y1: at.y, x2: at.x - 5, y2: at.y });
    ig.append(title, line, text);
    iipLayer.append(ig);
    els.iips.set(key, { ig, title, text, tgt: iip.tgt });
  }

  state.els = els;
  if (focused) {
    const again = root.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  $('#empty').hidden = ids.length > 0;
}

function edgeWords(key) {
  const { src, tgt } = parseEdgeKey(key);
  return `${src.node} ${src.port} to ${tgt.node} ${tgt.port}`;
}

function edgeInfo(key) {
  const s = state.edgeStatus.get(key);
  const bits = [s?.kind ?? 'kind unknown', s?.state ?? 'state unknown'];
  if (s?.reason) bits.push(s.reason);
  if (s?.depth !== undefined) bits.push(`${s.depth} queued`);
  const rate = rateOf(key);
  if (rate !== undefined) bits.push(`${formatRate(rate)} msg/s`);
  if (state.watched.has(key)) bits.push('watched');
  return bits.join(', ');
}

const RATE_WINDOW = 5000; // ms

/** Messages per second on an edge: the runtime's figure, else our own count over the last seconds of a watched edge. */
function rateOf(key) {
  const s = state.edgeStatus.get(key);
  if (s?.rate !== undefined) return s.rate;
  const times = state.arrivals.get(key);
  if (!times || !state.watched.has(key)) return undefined;
  const now = performance.now();
  while (times.length && times[0] < now - RATE_WINDOW) times.shift();
  // Over the window, or the time since watching began when that is shorter.
  const span = Math.max(1000, Math.min(RATE_WINDOW, now - (times.since ?? now)));
  return times.length / (span / 1000);
}

function formatRate(r) {
  return r >= 10 ? r.toFixed(0) : r.toFixed(1);
}

function roleInfo(id) {
  const r = state.roles.get(id);
  if (!r) return 'no status yet';
  return `${r.status}, ${r.alive} of ${r.expected} alive${r.reason ? `, ${r.reason}` : ''}`;
}

function patch() {
  const els = state.els;
  if (!els) return;
  for (const [id, e] of els.nodes) {
    const r = state.roles.get(id);
    const status = r?.status ?? 'unknown';
    const sel = state.selected?.type === 'node' && state.selected.node === id;
    e.node.setAttribute('class', `node status-${status}${sel ? ' selected' : ''}`);
    e.node.setAttribute('data-status', status);
    e.count.textContent = r ? `${r.alive}/${r.expected}` : '?';
    const comp = componentOf(id);
    const icon = state.components.get(comp)?.icon ?? r?.icon;
    e.icon.textContent = icon ? ICONS[icon] ?? icon.slice(0, 1).toUpperCase() : '◇';
    // The participant's own label (from its discovery message) on the box.
    const label = r?.label || undefined;
    e.compText.textContent = fit(`${comp || '(unknown component)'}${label ? ` · ${label}` : ''}`, e.chars);
    const about = label ?? state.components.get(comp)?.description;
    e.title.textContent = `${id} (${comp || 'unknown component'})${about ? `: ${about}` : ''}\n${roleInfo(id)}`;
    e.node.setAttribute('aria-label', `role ${id}, component ${comp || 'unknown'}${label ? `, ${label}` : ''}, ${roleInfo(id)}`);
  }
  const queues = new Map();
  for (const r of state.roles.values()) {
    for (const p of r.inports ?? []) queues.set(`inport:${r.role}.${p.id}`, p.queue);
    for (const p of r.outports ?? []) queues.set(`outport:${r.role}.${p.id}`, p.queue);
  }
  for (const [key, p] of els.ports) {
    const q = queues.get(key) ?? '';
    p.queue.textContent = fit(q, Math.floor(p.half * 1.2));
    if (q) p.pg.setAttribute('data-queue', q);
    const sel = state.selected && (state.selected.type === 'outport' || state.selected.type === 'inport') && state.selected.key === key;
    p.pg.setAttribute('class', `port port-${p.dir}${sel ? ' selected' : ''}`);
    const what = p.dir === 'in' ? 'inport' : 'outport';
    const action = p.dir === 'in' ? (state.selected?.type === 'outport' ? 'connect here' : 'send a value') : 'connect from here';
    const text = `${what} ${p.port} of ${p.node}${q ? `, queue ${q}` : ''}: ${action}`;
    p.title.textContent = text;
    p.pg.setAttribute('aria-label', text);
  }
  for (const [key, e] of els.edges) {
    const s = state.edgeStatus.get(key);
    const kind = s?.kind ?? 'unknown';
    const st = s?.state ?? 'unknown';
    const cls = ['edge', `kind-${kind}`, `state-${st}`];
    if (state.watched.has(key)) cls.push('watched');
    if (state.selected?.type === 'edge' && state.selected.key === key) cls.push('selected');
    e.eg.setAttribute('class', cls.join(' '));
    e.eg.setAttribute('data-state', st);
    e.line.setAttribute('marker-end', `url(#arrow-${kind})`);
    const bits = [];
    if (s?.depth !== undefined) bits.push(`${s.depth} queued`);
    const rate = rateOf(key);
    if (rate !== undefined) bits.push(`${formatRate(rate)}/s`);
    if (st === 'pending') bits.unshift('pending');
    e.label.textContent = bits.join(' · ');
    const text = `edge ${e.src.node}.${e.src.port} → ${e.tgt.node}.${e.tgt.port}: ${edgeInfo(key)}`;
    e.title.textContent = text;
    e.eg.setAttribute('aria-label', `edge ${edgeWords(key)}, ${edgeInfo(key)}`);
  }
  const iips = allIips();
  for (const [key, e] of els.iips) {
    const iip = iips.get(key);
    if (!iip) continue;
    const s = state.iipStatus.get(key);
    e.ig.setAttribute('class', `iip${s?.sent ? ' sent' : ''}`);
    e.text.textContent = short(iip.data);
    e.title.textContent = `IIP ${JSON.stringify(iip.data)} → ${key}${s ? (s.sent ? ' (sent)' : ' (not sent yet)') : ''}`;
  }
}

function renderTextView() {
  const roles = el('ul');
  for (const id of nodeIds()) {
    const p = portsOf(id);
    const ports = (list) => list.map((x) => `${x.id}${x.queue ? ` (queue ${x.queue})` : ''}`).join(', ') || 'none';
    roles.append(el('li', { text: `${id}: ${componentOf(id) || 'unknown component'}; ${roleInfo(id)}; inports ${ports(p.ins)}; outports ${ports(p.outs)}` }));
  }
  const edges = el('ul');
  for (const key of allEdges().keys()) edges.append(el('li', { text: `${key.replace('>', ' → ')}: ${edgeInfo(key)}` }));
  const iips = el('ul');
  for (const [key, i] of allIips()) {
    const s = state.iipStatus.get(key);
    iips.append(el('li', { text: `${JSON.stringify(i.data)} → ${key}${s ? (s.sent ? ' (sent)' : ' (not sent yet)') : ''}` }));
  }
  $('#text-alt').replaceChildren(
    el('h3', { text: `Roles (${roles.children.length})` }),
    roles,
    el('h3', { text: `Edges (${edges.children.length})` }),
    edges,
    el('h3', { text: `Initial values (${iips.children.length})` }),
    iips,
  );
}

// ---- selection and actions ---------------------------------------------------

let shownSelection = null;

function select(sel) {
  state.selected = sel;
  $('#send-form').hidden = sel?.type !== 'inport';
  if (sel?.type === 'inport') {
    $('#send-target').textContent = `${sel.node}.${sel.port}`;
    const v = $('#send-value');
    const iip = state.iips.get(`${sel.node}.${sel.port}`);
    if (!v.value && iip) v.value = typeof iip.data === 'string' ? iip.data : JSON.stringify(iip.data);
  }
  update();
}

function renderSelection() {
  const sel = state.selected;
  const id = sel ? sel.key : null;
  const box = $('#selection');
  if (id !== shownSelection) {
    shownSelection = id;
    const parts = [];
    if (!sel) {
      parts.push(el('p', { class: 'hint', text: 'Select an edge to watch its messages, an inport to send it a value, an outport and then an inport to connect them, or a role.' }));
    } else if (sel.type === 'edge') {
      const { src, tgt } = parseEdgeKey(sel.key);
      parts.push(
        el('h2', { text: `Edge ${src.node}.${src.port} → ${tgt.node}.${tgt.port}` }),
        el('p', { id: 'selection-detail' }),
        el(
          'div',
          { class: 'buttons' },
          el('button', { id: 'watch-toggle', type: 'button', onclick: () => toggleWatch(sel.key) }),
          el('button', { id: 'remove-edge', type: 'button', class: 'danger', onclick: () => removeEdge(sel.key), text: 'Remove edge' }),
        ),
      );
    } else if (sel.type === 'node') {
      parts.push(
        el('h2', { text: `Role ${sel.node}` }),
        el('p', { id: 'selection-detail' }),
        el('div', { class: 'buttons' }, el('button', { id: 'remove-node', type: 'button', class: 'danger', onclick: () => removeNode(sel.node), text: 'Remove role' })),
      );
    } else if (sel.type === 'outport') {
      parts.push(
        el('h2', { text: `Connect from ${sel.node}.${sel.port}` }),
        el('p', { id: 'selection-detail', text: 'Now choose an inport (click it, or Tab to it and press Enter). Escape cancels.' }),
        el('div', { class: 'buttons' }, el('button', { type: 'button', onclick: () => select(null), text: 'Cancel' })),
      );
    }
    box.replaceChildren(...parts);
  }
  const detail = $('#selection-detail');
  if (sel?.type === 'edge' && detail) {
    detail.textContent = edgeInfo(sel.key);
    $('#watch-toggle').textContent = state.watched.has(sel.key) ? 'Stop watching' : 'Watch';
  } else if (sel?.type === 'node' && detail) {
    detail.textContent = `${componentOf(sel.node) || 'unknown component'}: ${roleInfo(sel.node)}`;
  }
}

function activateEdge(key) {
  select({ type: 'edge', key });
  if (!state.watched.has(key)) toggleWatch(key);
}

function activatePort(dir, node, port) {
  const sel = state.selected;
  if (dir === 'out') {
    const key = `outport:${node}.${port}`;
    select(sel?.key === key ? null : { type: 'outport', key, node, port });
    return;
  }
  if (sel?.type === 'outport') {
    const src = { node: sel.node, port: sel.port };
    const tgt = { node, port };
    select(null);
    request('graph', 'addedge', { src, tgt, metadata: {}, graph: state.graphId }).catch(() => {});
    return;
  }
  select({ type: 'inport', key: `inport:${node}.${port}`, node, port });
  $('#send-value').focus();
}

function sendWatched() {
  const edges = [...state.watched].map((k) => parseEdgeKey(k));
  request('network', 'edges', { graph: state.graphId, edges }).catch(() => {});
  renderWatched();
  scheduleUpdate();
}

function toggleWatch(key) {
  if (state.watched.has(key)) state.watched.delete(key);
  else state.watched.add(key);
  state.arrivals.delete(key);
  sendWatched();
}

function renderWatched() {
  const ul = $('#watched');
  const items = [...state.watched].map((key) =>
    el(
      'li',
      {},
      el('span', { text: key.replace('>', ' → ') }),
      el('button', { type: 'button', class: 'small', 'aria-label': `stop watching ${edgeWords(key)}`, text: '×', onclick: () => toggleWatch(key) }),
    ),
  );
  ul.replaceChildren(...items);
  $('#watch-none').hidden = items.length > 0;
}

async function removeEdge(key) {
  const { src, tgt } = parseEdgeKey(key);
  if (state.selected?.key === key) select(null);
  await request('graph', 'removeedge', { src, tgt, graph: state.graphId }).catch(() => {});
}

async function removeNode(id) {
  if (state.selected?.node === id) select(null);
  await request('graph', 'removenode', { id, graph: state.graphId }).catch(() => {});
}

async function sendValue(ev) {
  ev.preventDefault();
  const sel = state.selected;
  if (sel?.type !== 'inport') return;
  const text = $('#send-value').value;
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = text; // not JSON: sent as text
  }
  const tgt = { node: sel.node, port: sel.port };
  try {
    // Replace semantics: the port keeps one initial value, the new one.
    if (state.iips.has(portKey(tgt))) await request('graph', 'removeinitial', { tgt, graph: state.graphId });
    await request('graph', 'addinitial', { src: { data }, tgt, graph: state.graphId });
    $('#send-status').textContent = `sent ${short(data, 40)} to ${portKey(tgt)}`;
  } catch {
    $('#send-status').textContent = 'not sent';
  }
}

async function addNode(ev) {
  ev.preventDefault();
  const component = $('#component').value;
  const input = $('#role-name');
  const id = input.value.trim() || input.placeholder; // empty: the suggested name
  if (!component || !id) return;
  if (state.nodes.has(id)) {
    toast(`There is already a role ${id}.`);
    return;
  }
  await request('graph', 'addnode', { id, component, metadata: { label: id }, graph: state.graphId }).catch(() => {});
  $('#role-name').value = '';
  suggestRoleName();
}

function suggestRoleName() {
  const input = $('#role-name');
  if (input.value) return;
  const comp = $('#component').value;
  if (!comp) return;
  const base = comp.split('/').pop().toLowerCase().replace(/[^a-z0-9_-]/g, '') || 'role';
  let n = 1;
  while (state.nodes.has(`${base}${n}`)) n++;
  input.placeholder = `${base}${n}`;
}

function refreshComponents() {
  const select = $('#component');
  const current = select.value;
  const names = [...state.components.keys()].sort();
  select.replaceChildren(...names.map((n) => el('option', { value: n, text: n })));
  if (names.includes(current)) select.value = current;
  suggestRoleName();
}

// ---- watched messages -------------------------------------------------------

function hexPreview(base64) {
  let bytes;
  try {
    bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  } catch {
    return el('pre', { class: 'binary', text: '(undecodable binary)' });
  }
  const lines = [];
  const shown = bytes.subarray(0, 64);
  for (let i = 0; i < shown.length; i += 16) {
    const row = [...shown.subarray(i, i + 16)];
    const hex = row.map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = row.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${i.toString(16).padStart(4, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  return el('pre', { class: 'binary', text: `${lines.join('\n')}${bytes.length > 64 ? '\n…' : ''}\n(${bytes.length} bytes)` });
}

function renderData(data) {
  if (typeof data === 'string') return el('pre', { class: 'text', text: data });
  if (data && typeof data === 'object' && !Array.isArray(data) && typeof data.base64 === 'string' && Object.keys(data).length === 1) {
    return hexPreview(data.base64);
  }
  return el('pre', { class: 'json', text: JSON.stringify(data, null, 2) });
}

function timestamp(d) {
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function onData(p) {
  // Data of unwatched edges (sent before our first network:edges) is not shown;
  // data of initial values (no src) is.
  if (p.src && p.tgt && !state.watched.has(edgeKey(p.src, p.tgt))) return;
  if (p.src && p.tgt) {
    const key = edgeKey(p.src, p.tgt);
    if (!state.arrivals.has(key)) state.arrivals.set(key, Object.assign([], { since: performance.now() }));
    const times = state.arrivals.get(key);
    times.push(performance.now());
    if (times.length > 10000) times.shift();
    scheduleUpdate();
  }
  const label = p.src ? edgeKey(p.src, p.tgt).replace('>', ' → ') : `IIP → ${p.tgt ? portKey(p.tgt) : '?'}`;
  const now = new Date();
  const item = el(
    'li',
    { class: 'message', 'data-edge': p.src && p.tgt ? edgeKey(p.src, p.tgt) : '' },
    el('div', { class: 'meta' }, el('time', { datetime: now.toISOString(), text: timestamp(now) }), el('span', { class: 'edge-name', text: label })),
    renderData(p.data),
  );
  if (state.paused) {
    state.held.push(item);
    if (state.held.length > MAX_MESSAGES) state.held.shift();
    $('#held').textContent = `${state.held.length} waiting`;
    return;
  }
  appendMessages([item]);
}

function appendMessages(items) {
  const list = $('#messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(...items);
  while (list.children.length > MAX_MESSAGES) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function togglePause() {
  state.paused = !state.paused;
  const b = $('#pause');
  b.textContent = state.paused ? 'Resume' : 'Pause';
  b.setAttribute('aria-pressed', String(state.paused));
  if (!state.paused) {
    appendMessages(state.held);
    state.held = [];
    $('#held').textContent = '';
  }
}

function clearMessages() {
  $('#messages').replaceChildren();
  state.held = [];
  $('#held').textContent = '';
}

// ---- keyboard ---------------------------------------------------------------

function onKey(ev) {
  const t = ev.target;
  if (ev.key === 'Escape') {
    if (state.selected) {
      select(null);
      ev.preventDefault();
    }
    return;
  }
  const fk = t?.dataset?.focusKey;
  if (!fk) return;
  if (ev.key === 'Enter' || ev.key === ' ') {
    ev.preventDefault();
    if (fk.startsWith('edge:')) activateEdge(fk.slice(5));
    else if (fk.startsWith('node:')) select({ type: 'node', key: fk, node: fk.slice(5) });
    else if (t.dataset.dir) activatePort(t.dataset.dir, t.dataset.node, t.dataset.port);
  } else if (ev.key === 'Delete') {
    if (fk.startsWith('edge:')) {
      ev.preventDefault();
      removeEdge(fk.slice(5));
    } else if (fk.startsWith('node:')) {
      ev.preventDefault();
      removeNode(fk.slice(5));
    }
  }
}

function init() {
  document.addEventListener('keydown', onKey);
  $('#graph').addEventListener('click', () => select(null));
  $('#pause').addEventListener('click', togglePause);
  $('#clear').addEventListener('click', clearMessages);
  $('#send-form').addEventListener('submit', sendValue);
  $('#add-node').addEventListener('submit', addNode);
  $('#component').addEventListener('change', () => {
    $('#role-name').value = '';
    suggestRoleName();
  });
  $('#zoom').addEventListener('click', () => {
    state.fit = !(state.scale < 1);
    state.signature = null;
    update();
  });
  window.addEventListener('resize', () => {
    state.signature = null; // draw again, to the new width
    scheduleUpdate();
  });
  // Rates of watched edges fall when their messages stop.
  setInterval(() => {
    if (state.watched.size) scheduleUpdate();
  }, 1000);
  renderWatched();
  start().catch((e) => toast(describeError(e)));
}

init();
