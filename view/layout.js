// Our own layered ("Sugiyama") layout for the live view, left to right:
//   1. cycles are broken by reversing the back edges of a depth-first search;
//   2. longest-path layering (then each source moves right, next to its
//      nearest successor, so a feeder does not sit far away from its target);
//   3. edges spanning several layers get dummy points, one per layer;
//   4. the order within each layer: barycentre sweeps down and up, keeping
//      the order with the fewest crossings;
//   5. coordinates: x by layer; y by a few passes that pull every node to the
//      mean of its neighbours while keeping the order and the spacing (an
//      isotonic regression, so the result is the least-squares best).
// Pure functions, no DOM. Nodes without edges and separate parts of a graph
// are laid out like the rest; self-loops are ignored by the layering.

const DEFAULTS = { layerGap: 160, nodeGap: 28, dummyHeight: 12, dummyGap: 12, margin: 24, sweeps: 8, passes: 6 };

/**
 * @param {{id: string, width: number, height: number}[]} nodes
 * @param {{source: string, target: string}[]} edges
 * @param {object} [options] see DEFAULTS
 * @returns {{nodes: Map<string, {x, y, width, height, layer, order}>,
 *   edges: {source, target, points: {x, y}[], reversed: boolean}[], width, height, layers: number, crossings: number}}
 *   x, y: top-left corner of a node; points: the bends an edge passes
 *   through between its two nodes, in the edge's own direction.
 */
export function layout(nodes, edges, options = {}) {
  const o = { ...DEFAULTS, ...options };
  const index = new Map();
  const items = nodes.map((n, i) => {
    index.set(n.id, i);
    return { id: n.id, width: n.width, height: n.height, dummy: false };
  });
  const n = items.length;
  const real = edges.filter((e) => index.has(e.source) && index.has(e.target));
  const links = real.map((e) => ({ s: index.get(e.source), t: index.get(e.target) }));

  const reversed = breakCycles(n, links);
  const dag = links.map((l, i) => (reversed[i] ? { s: l.t, t: l.s } : l)).filter((l) => l.s !== l.t);
  const layer = assignLayers(n, dag);

  // Dummy chains: for every link (self-loops excepted), the item indices it passes through.
  const chains = links.map((l, i) => {
    const [s, t] = reversed[i] ? [l.t, l.s] : [l.s, l.t];
    if (s === t) return null;
    const chain = [s];
    for (let k = layer[s] + 1; k < layer[t]; k++) {
      items.push({ id: null, width: 0, height: o.dummyHeight, dummy: true });
      layer.push(k);
      chain.push(items.length - 1);
    }
    chain.push(t);
    return chain;
  });

  const layerCount = items.length ? Math.max(...layer) + 1 : 0;
  const up = items.map(() => []); // neighbours in the layer before
  const down = items.map(() => []); // neighbours in the layer after
  for (const chain of chains) {
    if (!chain) continue;
    for (let k = 1; k < chain.length; k++) {
      down[chain[k - 1]].push(chain[k]);
      up[chain[k]].push(chain[k - 1]);
    }
  }

  const layers = initialOrder(items.length, layer, layerCount, up, down);
  const crossings = orderLayers(layers, up, down, o.sweeps);
  const y = placeVertically(items, layers, up, down, o);

  // x by layer: every layer as wide as its widest node.
  const layerX = [];
  let x = o.margin;
  for (const ids of layers) {
    layerX.push(x);
    x += Math.max(0, ...ids.map((i) => items[i].width)) + o.layerGap;
  }
  const width = layers.length ? x - o.layerGap + o.margin : 2 * o.margin;
  let height = 2 * o.margin;
  const out = new Map();
  layers.forEach((ids, l) =>
    ids.forEach((i, order) => {
      const it = items[i];
      height = Math.max(height, y[i] + it.height + o.margin);
      if (it.dummy) return;
      const lw = Math.max(...ids.map((j) => items[j].width));
      // Centred in the layer's column, so short boxes line up with long ones.
      out.set(it.id, { x: layerX[l] + (lw - it.width) / 2, y: y[i], width: it.width, height: it.height, layer: l, order });
    }),
  );
  const centre = (i) => {
    const l = layer[i];
    const lw = Math.max(...layers[l].map((j) => items[j].width));
    return { x: layerX[l] + lw / 2, y: y[i] + items[i].height / 2 };
  };
  const outEdges = real.map((e, i) => {
    const chain = chains[i];
    const points = chain ? chain.slice(1, -1).map(centre) : [];
    if (reversed[i]) points.reverse();
    return { source: e.source, target: e.target, points, reversed: reversed[i] };
  });
  return { nodes: out, edges: outEdges, width, height, layers: layerCount, crossings };
}

/** Which links to reverse so that the graph has no cycle: the back edges of an iterative DFS, sources first. */
export function breakCycles(n, links) {
  const outs = Array.from({ length: n }, () => []);
  const indeg = new Array(n).fill(0);
  links.forEach((l, i) => {
    if (l.s === l.t) return;
    outs[l.s].push(i);
    indeg[l.t]++;
  });
  const state = new Uint8Array(n); // 0 new, 1 on the stack, 2 done
  const reversed = links.map(() => false);
  const roots = [...Array(n).keys()].sort((a, b) => (indeg[a] === 0 ? 0 : 1) - (indeg[b] === 0 ? 0 : 1) || a - b);
  for (const root of roots) {
    if (state[root]) continue;
    const stack = [[root, 0]];
    state[root] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [v, k] = top;
      if (k < outs[v].length) {
        top[1]++;
        const li = outs[v][k];
        const w = links[li].t;
        if (state[w] === 1) reversed[li] = true;
        else if (state[w] === 0) {
          state[w] = 1;
          stack.push([w, 0]);
        }
      } else {
        state[v] = 2;
        stack.pop();
      }
    }
  }
  return reversed;
}

/** Longest-path layering of a DAG given as links {s, t}; then sources move right next to their nearest successor. */
export function assignLayers(n, dag) {
  const outs = Array.from({ length: n }, () => []);
  const ins = Array.from({ length: n }, () => []);
  const indeg = new Array(n).fill(0);
  for (const l of dag) {
    outs[l.s].push(l.t);
    ins[l.t].push(l.s);
    indeg[l.t]++;
  }
  const layer = new Array(n).fill(0);
  const queue = [];
  for (let v = 0; v < n; v++) if (indeg[v] === 0) queue.push(v);
  for (let q = 0; q < queue.length; q++) {
    const v = queue[q];
    for (const w of outs[v]) {
      layer[w] = Math.max(layer[w], layer[v] + 1);
      if (--indeg[w] === 0) queue.push(w);
    }
  }
  for (let v = 0; v < n; v++) {
    if (ins[v].length === 0 && outs[v].length > 0) layer[v] = Math.min(...outs[v].map((w) => layer[w])) - 1;
  }
  return layer;
}

function initialOrder(count, layer, layerCount, up, down) {
  // Breadth-first from the items of the first layers, so connected items start near each other.
  const layers = Array.from({ length: layerCount }, () => []);
  const seen = new Uint8Array(count);
  const starts = [...Array(count).keys()].sort((a, b) => layer[a] - layer[b] || a - b);
  for (const s of starts) {
    if (seen[s]) continue;
    seen[s] = 1;
    const queue = [s];
    for (let q = 0; q < queue.length; q++) {
      const v = queue[q];
      layers[layer[v]].push(v);
      for (const w of [...down[v], ...up[v]]) {
        if (!seen[w]) {
          seen[w] = 1;
          queue.push(w);
        }
      }
    }
  }
  return layers;
}

/** Barycentre sweeps; `layers` is changed in place to the best order seen. Returns its crossing count. */
export function orderLayers(layers, up, down, sweeps) {
  const pos = new Map();
  const index = () => layers.forEach((ids) => ids.forEach((v, i) => pos.set(v, i)));
  index();
  let best = layers.map((ids) => ids.slice());
  let bestCrossings = countCrossings(layers, down, pos);
  for (let s = 0; s < sweeps && bestCrossings > 0; s++) {
    const downward = s % 2 === 0;
    const order = downward ? [...layers.keys()].slice(1) : [...layers.keys()].reverse().slice(1);
    for (const l of order) {
      const ids = layers[l];
      const bary = new Map();
      ids.forEach((v, i) => {
        const nb = downward ? up[v] : down[v];
        bary.set(v, nb.length ? nb.reduce((a, w) => a + pos.get(w), 0) / nb.length : i);
      });
      ids.sort((a, b) => bary.get(a) - bary.get(b) || pos.get(a) - pos.get(b));
      ids.forEach((v, i) => pos.set(v, i));
    }
    transpose(layers, up, down, pos);
    const c = countCrossings(layers, down, pos);
    if (c < bestCrossings) {
      bestCrossings = c;
      best = layers.map((ids) => ids.slice());
    }
  }
  best.forEach((ids, l) => (layers[l] = ids));
  return bestCrossings;
}

/** Swap neighbours within a layer while that removes crossings with the layers either side. */
function transpose(layers, up, down, pos) {
  // Crossings between the links of u and v (u placed before v) to one side.
  const pair = (nu, nv) => {
    let c = 0;
    for (const a of nu) for (const b of nv) if (pos.get(a) > pos.get(b)) c++;
    return c;
  };
  for (let round = 0, improved = true; improved && round < 4; round++) {
    improved = false;
    for (const ids of layers) {
      for (let i = 0; i + 1 < ids.length; i++) {
        const u = ids[i];
        const v = ids[i + 1];
        const now = pair(up[u], up[v]) + pair(down[u], down[v]);
        const swapped = pair(up[v], up[u]) + pair(down[v], down[u]);
        if (swapped < now) {
          ids[i] = v;
          ids[i + 1] = u;
          pos.set(v, i);
          pos.set(u, i + 1);
          improved = true;
        }
      }
    }
  }
}

/** Crossings between consecutive layers: two links cross when their ends are in opposite orders. */
export function countCrossings(layers, down, pos) {
  let total = 0;
  for (let l = 0; l + 1 < layers.length; l++) {
    const segs = [];
    for (const v of layers[l]) for (const w of down[v]) segs.push([pos.get(v), pos.get(w)]);
    segs.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    for (let i = 0; i < segs.length; i++) {
      for (let j = i + 1; j < segs.length; j++) {
        if (segs[j][0] > segs[i][0] && segs[j][1] < segs[i][1]) total++;
      }
    }
  }
  return total;
}

function placeVertically(items, layers, up, down, o) {
  const y = new Array(items.length).fill(0);
  const gapAfter = (i) => (items[i].dummy ? o.dummyGap : o.nodeGap);
  for (const ids of layers) {
    let at = o.margin;
    for (const v of ids) {
      y[v] = at;
      at += items[v].height + gapAfter(v);
    }
  }
  const centre = (v) => y[v] + items[v].height / 2;
  for (let p = 0; p < o.passes; p++) {
    const downward = p % 2 === 0;
    const order = downward ? [...layers.keys()] : [...layers.keys()].reverse();
    for (const l of order) {
      const ids = layers[l];
      if (!ids.length) continue;
      const want = ids.map((v) => {
        const nb = p === o.passes - 1 ? [...up[v], ...down[v]] : downward ? up[v] : down[v];
        const c = nb.length ? nb.reduce((a, w) => a + centre(w), 0) / nb.length : centre(v);
        return c - items[v].height / 2;
      });
      const placed = packInOrder(
        want,
        ids.map((v) => items[v].height + gapAfter(v)),
      );
      ids.forEach((v, i) => (y[v] = placed[i]));
    }
  }
  const top = Math.min(...items.map((_, i) => y[i]));
  return y.map((v) => v - top + o.margin);
}

/**
 * Positions as close as possible (least squares) to `want`, in the given
 * order, each at least `space[i]` below the one before: pool adjacent
 * violators on the positions less their minimal offsets.
 */
export function packInOrder(want, space) {
  const offset = [];
  let acc = 0;
  for (let i = 0; i < want.length; i++) {
    offset.push(acc);
    acc += space[i];
  }
  const blocks = []; // {sum, count, value}
  for (let i = 0; i < want.length; i++) {
    let b = { sum: want[i] - offset[i], count: 1 };
    b.value = b.sum;
    while (blocks.length && blocks[blocks.length - 1].value > b.value) {
      const prev = blocks.pop();
      b = { sum: prev.sum + b.sum, count: prev.count + b.count };
      b.value = b.sum / b.count;
    }
    blocks.push(b);
  }
  const out = [];
  for (const b of blocks) for (let k = 0; k < b.count; k++) out.push(b.value + offset[out.length]);
  return out;
}
