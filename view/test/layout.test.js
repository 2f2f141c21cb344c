// Unit tests of the page's own layered layout (view/layout.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { layout, breakCycles, assignLayers, packInOrder, countCrossings } from '../layout.js';

const box = (id, width = 120, height = 60) => ({ id, width, height });
const edge = (source, target) => ({ source, target });

function assertNoOverlap(result) {
  const all = [...result.nodes.entries()];
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const [a, p] = all[i];
      const [b, q] = all[j];
      const apart = p.x + p.width <= q.x || q.x + q.width <= p.x || p.y + p.height <= q.y || q.y + q.height <= p.y;
      assert.ok(apart, `${a} and ${b} overlap: ${JSON.stringify(p)} ${JSON.stringify(q)}`);
    }
  }
  for (const [id, p] of result.nodes) {
    for (const v of [p.x, p.y]) assert.ok(Number.isFinite(v) && v >= 0, `${id} at ${v}`);
    assert.ok(p.x + p.width <= result.width && p.y + p.height <= result.height, `${id} outside the drawing`);
  }
}

test('a chain goes left to right, one layer per node', () => {
  const r = layout([box('sensor'), box('formatter'), box('display')], [edge('sensor', 'formatter'), edge('formatter', 'display')]);
  const [s, f, d] = ['sensor', 'formatter', 'display'].map((id) => r.nodes.get(id));
  assert.deepEqual([s.layer, f.layer, d.layer], [0, 1, 2]);
  assert.ok(s.x < f.x && f.x < d.x);
  // Straight line: every box's centre at the same height.
  assert.equal(s.y + s.height / 2, f.y + f.height / 2);
  assert.equal(f.y + f.height / 2, d.y + d.height / 2);
  assert.equal(r.crossings, 0);
  assertNoOverlap(r);
});

test('longest-path layering, and a source sits next to its nearest successor', () => {
  // a -> b -> c -> d, and e -> d: e goes to the layer just before d.
  const n = 5;
  const layer = assignLayers(n, [
    { s: 0, t: 1 },
    { s: 1, t: 2 },
    { s: 2, t: 3 },
    { s: 4, t: 3 },
  ]);
  assert.deepEqual(layer, [0, 1, 2, 3, 2]);
  // a -> c and a -> b -> c: c is two layers after a.
  assert.deepEqual(assignLayers(3, [{ s: 0, t: 2 }, { s: 0, t: 1 }, { s: 1, t: 2 }]), [0, 1, 2]);
});

test('edges over several layers bend through one point per layer crossed', () => {
  const r = layout([box('a'), box('b'), box('c'), box('d')], [edge('a', 'b'), edge('b', 'c'), edge('c', 'd'), edge('a', 'd')]);
  const long = r.edges.find((e) => e.source === 'a' && e.target === 'd');
  assert.equal(long.points.length, 2);
  const short = r.edges.find((e) => e.source === 'a' && e.target === 'b');
  assert.equal(short.points.length, 0);
  // The bends lie between the two ends, left to right.
  const a = r.nodes.get('a');
  const d = r.nodes.get('d');
  assert.ok(a.x < long.points[0].x && long.points[0].x < long.points[1].x && long.points[1].x < d.x);
  assertNoOverlap(r);
});

test('cycles: every node is placed, the back edge is marked reversed and its bends run backwards', () => {
  const nodes = ['a', 'b', 'c', 'd'].map((id) => box(id));
  const edges = [edge('a', 'b'), edge('b', 'c'), edge('c', 'd'), edge('d', 'b'), edge('c', 'c')];
  const r = layout(nodes, edges);
  assert.equal(r.nodes.size, 4);
  assertNoOverlap(r);
  const back = r.edges.find((e) => e.source === 'd' && e.target === 'b');
  assert.equal(back.reversed, true);
  assert.equal(back.points.length, 1);
  const self = r.edges.find((e) => e.source === 'c' && e.target === 'c');
  assert.deepEqual(self.points, []);
  assert.equal(r.edges.filter((e) => e.reversed).length, 1);
});

test('breakCycles reverses only what it must', () => {
  // Two separate cycles and a DAG part.
  const links = [
    { s: 0, t: 1 },
    { s: 1, t: 0 },
    { s: 2, t: 3 },
    { s: 3, t: 4 },
    { s: 4, t: 2 },
    { s: 5, t: 6 },
  ];
  const rev = breakCycles(7, links);
  assert.equal(rev.filter(Boolean).length, 2);
  assert.deepEqual(rev.slice(5), [false]);
});

test('disconnected nodes and separate parts are all placed without overlap', () => {
  const nodes = ['x', 'y', 'z', 'p', 'q', 'lonely1', 'lonely2'].map((id) => box(id, 100 + id.length * 10, 40 + id.length * 5));
  const r = layout(nodes, [edge('x', 'y'), edge('y', 'z'), edge('p', 'q'), edge('missing', 'x')]);
  assert.equal(r.nodes.size, 7);
  assert.equal(r.edges.length, 3, 'an edge to an unknown node is dropped');
  assertNoOverlap(r);
});

test('an empty graph', () => {
  const r = layout([], []);
  assert.equal(r.nodes.size, 0);
  assert.deepEqual(r.edges, []);
  assert.ok(r.width > 0 && r.height > 0);
});

test('barycentre sweeps remove the crossings of a crossed start', () => {
  // The initial order crosses: a1 -> b2, a2 -> b1, with b1/b2 first seen in
  // crossed order through c.
  const nodes = ['a1', 'a2', 'b2', 'b1', 'c1', 'c2'].map((id) => box(id));
  const edges = [edge('a1', 'b1'), edge('a2', 'b2'), edge('b1', 'c1'), edge('b2', 'c2'), edge('a1', 'c2')];
  const r = layout(nodes, edges);
  assertNoOverlap(r);
  assert.ok(r.crossings <= 1, `crossings ${r.crossings}`);
  // A graph that can be drawn without crossing is drawn so.
  const k = layout(
    ['s1', 's2', 's3', 't1', 't2', 't3'].map((id) => box(id)),
    [edge('s1', 't3'), edge('s2', 't2'), edge('s3', 't1')],
  );
  assert.equal(k.crossings, 0);
});

test('countCrossings counts pairs in opposite order', () => {
  const layers = [
    [0, 1, 2],
    [3, 4, 5],
  ];
  const down = [[5], [4], [3], [], [], []];
  const pos = new Map(layers.flatMap((ids) => ids.map((v, i) => [v, i])));
  assert.equal(countCrossings(layers, down, pos), 3);
});

test('packInOrder keeps order and spacing, as close as possible to the wanted places', () => {
  assert.deepEqual(packInOrder([0, 100, 200], [50, 50, 50]), [0, 100, 200]);
  // Two wanting the same place share the difference.
  assert.deepEqual(packInOrder([100, 100], [50, 50]), [75, 125]);
  // Order wins over wishes.
  const p = packInOrder([300, 0, 10], [40, 40, 40]);
  for (let i = 1; i < p.length; i++) assert.ok(p[i] - p[i - 1] >= 40 - 1e-9);
});

function randomGraph(count, extra, seed) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  const nodes = Array.from({ length: count }, (_, i) => box(`n${i}`, 100 + Math.floor(rnd() * 80), 50 + Math.floor(rnd() * 60)));
  const edges = [];
  for (let i = 1; i < count; i++) edges.push(edge(`n${Math.floor(rnd() * i)}`, `n${i}`));
  for (let k = 0; k < extra; k++) edges.push(edge(`n${Math.floor(rnd() * count)}`, `n${Math.floor(rnd() * count)}`));
  return { nodes, edges };
}

test('100 nodes with cycles: placed without overlap, quickly (time printed)', () => {
  const { nodes, edges } = randomGraph(100, 40, 7);
  layout(nodes, edges); // warm up the JIT once
  const t0 = performance.now();
  const r = layout(nodes, edges);
  const ms = performance.now() - t0;
  console.log(`layout of 100 nodes, ${edges.length} edges: ${ms.toFixed(1)} ms, ${r.layers} layers, ${r.crossings} crossings`);
  assert.equal(r.nodes.size, 100);
  assertNoOverlap(r);
  // The sweeps never leave more crossings than the starting order had.
  const unswept = layout(nodes, edges, { sweeps: 0 });
  assert.ok(r.crossings <= unswept.crossings, `${r.crossings} > ${unswept.crossings}`);
});

test('deterministic: the same input gives the same drawing', () => {
  const { nodes, edges } = randomGraph(40, 10, 3);
  const a = layout(nodes, edges);
  const b = layout(nodes, edges);
  assert.deepEqual([...a.nodes], [...b.nodes]);
  assert.deepEqual(a.edges, b.edges);
});
