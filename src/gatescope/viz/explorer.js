/* gatescope explorer: plain JavaScript, no dependencies, nothing loaded from the network.
 *
 * The data object (see gatescope/viz/explorer.py) sits in <script id="gs-data">. Values are
 * stored per quantity and layer as base64 typed arrays, unit-major (H x N), quantised per
 * unit: value = lo[u] + code * step[u]. They are decoded lazily, on first use.
 * The text view draws only the rows in sight (a few thousand spans at most), so a long
 * text scrolls and recolours quickly; the heatmap and the gradient view are canvases.
 * A seq2seq page (D.mode === 'seq2seq') adds the translation panel and a part switch: each
 * part (encoder, decoder) is a document of the format above, mounted in a fresh copy of
 * the page's body.
 */
(function () {
  'use strict';
  const t0 = performance.now();
  const BLOB = JSON.parse(document.getElementById('gs-data').textContent);
  const tParsed = performance.now();
  const $ = (id) => document.getElementById(id);
  // the page's body, as written: a seq2seq page re-creates it to show another part
  const APP = $('gs-app'), TEMPLATE = APP.innerHTML;

  // ------------------------------------------------------------------ decoding
  function bytes(s) {
    const bin = atob(s), n = bin.length, u = new Uint8Array(n);
    for (let i = 0; i < n; i++) u[i] = bin.charCodeAt(i);
    return u.buffer;
  }
  const f32 = (s) => new Float32Array(bytes(s));
  const i32 = (s) => new Int32Array(bytes(s));
  const u16 = (s) => new Uint16Array(bytes(s));
  const u8 = (s) => new Uint8Array(bytes(s));

  // colour tables: 256 entries, as typed arrays, CSS colours and a readable ink for each
  function tables(luts) {
    const LUT = {}, CSS = {}, FG = {};
    for (const name of Object.keys(luts)) {
      const a = luts[name];
      LUT[name] = Uint8Array.from(a);
      CSS[name] = []; FG[name] = [];
      for (let i = 0; i < 256; i++) {
        const r = a[3 * i], g = a[3 * i + 1], b = a[3 * i + 2];
        CSS[name].push('rgb(' + r + ', ' + g + ', ' + b + ')');
        const lum = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
        FG[name].push(lum < 0.5 ? '#ffffff' : '#131722');
      }
    }
    return { LUT, CSS, FG };
  }
  // index = round(255 * (v - lo) / (hi - lo)), clipped (explorer.colour_index in Python)
  function cindex(v, lo, hi) {
    const w = hi - lo;
    const f = w > 0 ? (v - lo) / w : 0.5;
    const i = Math.floor(f * 255 + 0.5);
    return i < 0 ? 0 : i > 255 ? 255 : i;
  }

  // ------------------------------------------------------------------ the unit views of one document
  // D: a document's data object; signal: aborts the listeners it puts on document and window
  function mount(D, signal) {
  const N = D.n, H = D.units, L = D.layers, T = D.seq_len;
  const QS = Object.keys(D.quantities);

  const cache = new Map();
  function series(q, layer) {
    const key = q + '/' + layer;
    let s = cache.get(key);
    if (!s) {
      const e = D.quantities[q].layers[layer];
      const dom = D.quantities[q].domains[layer];
      s = {
        lo: f32(e.lo), step: f32(e.step),
        code: D.bits === 8 ? u8(e.q) : u16(e.q),
        dlo: Float64Array.from(dom.lo), dhi: Float64Array.from(dom.hi),
        cmap: D.quantities[q].cmap, mean: null,
      };
      cache.set(key, s);
    }
    return s;
  }
  function value(q, layer, u, t) {
    const s = series(q, layer);
    return s.lo[u] + s.code[u * N + t] * s.step[u];
  }
  function unitMeans(s) {
    if (!s.mean) {
      s.mean = new Float64Array(H);
      for (let u = 0; u < H; u++) {
        let acc = 0;
        const base = u * N;
        for (let t = 0; t < N; t++) acc += s.code[base + t];
        s.mean[u] = s.lo[u] + (acc / N) * s.step[u];
      }
    }
    return s.mean;
  }

  const { LUT, CSS, FG } = tables(D.luts);
  const LEVELS = D.bits === 8 ? 255 : 65535;
  // colour range of unit u: "fixed" is the data's nominal range (gates 0..1, tanh -1..1,
  // otherwise the unit's largest |value|); "unit" stretches to the unit's own values:
  // symmetric about 0 on the diverging scale, min..max on the sequential one
  function domain(s, u) {
    if (S.range !== 'unit') return [s.dlo[u], s.dhi[u]];
    const a = s.lo[u], b = s.lo[u] + LEVELS * s.step[u];
    if (s.cmap === 'div') { const m = Math.max(Math.abs(a), Math.abs(b)) || 1; return [-m, m]; }
    return b > a ? [a, b] : [a - 0.5, a + 0.5];
  }

  const pred = D.predictions ? {
    k: D.predictions.k, labels: D.predictions.labels,
    idx: u16(D.predictions.idx), p: u16(D.predictions.p), has: u8(D.predictions.has),
    target: D.predictions.target ? u16(D.predictions.target) : null,
    tp: D.predictions.target_p ? u16(D.predictions.target_p) : null,
  } : null;
  const grad = D.gradients ? {
    measure: D.gradients.measure, window: D.gradients.window, what: D.gradients.what,
    pos: i32(D.gradients.positions), start: i32(D.gradients.starts),
    off: i32(D.gradients.offsets), val: f32(D.gradients.values),
  } : null;
  const emph = D.emphasis ? u8(D.emphasis) : null;
  const tokens = Array.from(D.tokens);  // one entry per step (code points)

  // ------------------------------------------------------------------ state
  const S = {
    q: QS.includes('h') ? 'h' : QS[0], layer: L - 1, unit: 0, pinned: -1, colourBy: 'unit',
    gi: grad && grad.pos.length ? Math.floor(grad.pos.length / 2) : -1, gscale: 'log',
    sortKey: 'unit', sortDir: 1, filter: '', order: [], range: 'fixed',
  };

  // ------------------------------------------------------------------ helpers
  const fmt = (v, d) => (v === null || v === undefined || !isFinite(v)) ? '—' : v.toFixed(d);
  const int = (n) => n.toLocaleString('en-US');
  function visible(ch) {
    if (ch === '\n') return '↵';
    if (ch === '\t') return '⇥';
    if (ch === ' ') return '␣';
    if (ch === '\r') return '␍';
    const c = ch.codePointAt(0);
    if (c < 32 || c === 127) return '·';
    return ch;
  }
  function shown(ch) {  // how a token is drawn inside the text itself
    if (ch === '\n') return '↵';
    if (ch === '\t') return '⇥';
    if (ch === '\r') return '␍';
    const c = ch.codePointAt(0);
    if (c < 32 || c === 127) return '·';
    return ch;
  }
  function esc(s) {
    return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // sequences: D.starts (sequences of different lengths, e.g. seq2seq texts) or every T steps
  const seqOf = new Int32Array(N), seqStart = D.starts ? Int32Array.from(D.starts) : null;
  for (let t = 0, k = 0; t < N; t++) {
    if (seqStart) { while (k + 1 < seqStart.length && seqStart[k + 1] <= t) k++; seqOf[t] = k; } else seqOf[t] = Math.floor(t / T);
  }
  const firstOf = (k) => seqStart ? seqStart[k] : k * T;
  function where(t) {  // "line 3, col 7" for texts, "sample 2, step 5" for task samples
    if (D.kind === 'text') return 'line ' + int(lineOf[t]) + ', col ' + (t - lineStart[lineOf[t] - 1] + 1);
    return (seqStart ? 'text ' : 'sample ') + (seqOf[t] + 1) + ', step ' + (t - firstOf(seqOf[t]));
  }
  function halfStep(q, layer, u) { return series(q, layer).step[u] / 2; }

  // line numbers (texts)
  const lineOf = new Int32Array(N);
  const lineStart = [0];
  {
    let line = 1;
    for (let t = 0; t < N; t++) {
      lineOf[t] = line;
      if (tokens[t] === '\n' && t + 1 < N) { line++; lineStart.push(t + 1); }
    }
  }

  // ------------------------------------------------------------------ header
  $('title').textContent = D.title;
  for (const [k, v] of Object.entries(D.details)) {
    const s = el('span');
    s.appendChild(el('b', null, k + ' '));
    s.appendChild(document.createTextNode(v));
    $('details').appendChild(s);
  }
  const qButtons = {};
  QS.forEach((q, i) => {
    const b = el('button');
    b.type = 'button';
    b.dataset.q = q;
    b.title = D.quantities[q].label + ' (key ' + (i + 1) + ')';
    b.appendChild(el('span', 'q', q));
    b.appendChild(el('span', 'ql', D.quantities[q].label.replace(/ [a-z]$/, '').replace(/^(hidden|cell) state/, '$1')));
    b.addEventListener('click', () => setQuantity(q));
    $('quantities').appendChild(b);
    qButtons[q] = b;
  });
  for (let l = 0; l < L; l++) {
    const o = el('option', null, String(l + 1) + (l === L - 1 && L > 1 ? ' (top)' : ''));
    o.value = String(l);
    $('layer').appendChild(o);
  }
  $('layer').value = String(S.layer);
  if (L === 1) $('layer-ctl').hidden = true;
  $('layer').addEventListener('change', (e) => setLayer(+e.target.value));
  $('unit').max = String(H - 1);
  $('unit-of').textContent = 'of ' + H;
  $('unit').addEventListener('change', (e) => {
    const u = Math.round(+e.target.value);
    if (u >= 0 && u < H) selectUnit(u); else e.target.value = String(S.unit);
  });
  $('unit-prev').addEventListener('click', () => stepUnit(-1));
  $('unit-next').addEventListener('click', () => stepUnit(1));
  for (const b of $('colour-by').querySelectorAll('button')) {
    b.addEventListener('click', () => setColourBy(b.dataset.v));
  }
  if (!grad) $('colour-by').querySelector('[data-v=grad]').disabled = true;
  for (const b of $('range').querySelectorAll('button')) b.addEventListener('click', () => setRange(b.dataset.v));
  for (const b of $('grad-scale').querySelectorAll('button')) {
    b.addEventListener('click', () => {
      S.gscale = b.dataset.v;
      for (const x of $('grad-scale').querySelectorAll('button')) x.setAttribute('aria-pressed', String(x === b));
      drawGrad();
    });
  }

  function drawLegend() {
    const c = $('legend'), ctx = c.getContext('2d');
    let name, lo, hi, mid;
    if (S.colourBy === 'grad' && grad) {
      name = 'grad'; lo = '0'; mid = 'influence'; hi = 'max';
      $('legend-title').textContent = 'influence on the pinned position';
    } else {
      const s = series(S.q, S.layer);
      name = s.cmap;
      const [a, b] = domain(s, S.unit);
      const d = Math.abs(b - a) < 0.05 ? 3 : 2;
      lo = fmt(a, d); hi = fmt(b, d); mid = fmt((a + b) / 2, d);
      $('legend-title').textContent = S.q + ' colours' + (S.range === 'unit' || perUnit(S.q, S.layer) ? ' (unit ' + S.unit + ')' : '');
    }
    const lut = LUT[name];
    const img = ctx.createImageData(256, 1);
    for (let i = 0; i < 256; i++) {
      img.data[4 * i] = lut[3 * i]; img.data[4 * i + 1] = lut[3 * i + 1]; img.data[4 * i + 2] = lut[3 * i + 2]; img.data[4 * i + 3] = 255;
    }
    const off = document.createElement('canvas');
    off.width = 256; off.height = 1;
    off.getContext('2d').putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.drawImage(off, 0, 0, c.width, c.height);
    $('leg-lo').textContent = lo; $('leg-mid').textContent = mid; $('leg-hi').textContent = hi;
  }
  function perUnit(q, layer) {
    const d = D.quantities[q].domains[layer];
    for (let u = 1; u < H; u++) if (d.hi[u] !== d.hi[0] || d.lo[u] !== d.lo[0]) return true;
    return !(d.hi[0] === 1 && (d.lo[0] === 0 || d.lo[0] === -1));
  }

  // ------------------------------------------------------------------ unit browser
  const tbody = document.querySelector('#units tbody');
  const thead = document.querySelector('#units thead');
  const F = D.features;
  let rows = [];  // tr per unit
  function buildHeader() {
    const tr = el('tr');
    const cols = [['unit', 'unit', 'unit index'], ['mean', 'mean', 'mean value over the whole document']];
    F.forEach((f, j) => cols.push(['f' + j, f.replace(/_/g, ' '), 'Pearson r with ' + f]));
    for (const [key, label, title] of cols) {
      const th = el('th', key[0] === 'f' ? 'feat' : null);
      th.appendChild(el('span', 'lab', label));
      th.appendChild(el('span', 'dir'));
      th.dataset.key = key;
      th.title = title + ' (click to sort)';
      th.addEventListener('click', () => {
        if (S.sortKey === key) S.sortDir = -S.sortDir;
        else { S.sortKey = key; S.sortDir = key === 'unit' ? 1 : -1; }
        sortRows();
      });
      tr.appendChild(th);
    }
    thead.appendChild(tr);
  }
  function corr(q, layer) { return D.quantities[q].corr[layer] || []; }
  function bestFeature(r) {  // index of the strongest |r| in a row, or -1
    let best = -1, bv = -1;
    for (let j = 0; j < r.length; j++) if (r[j] !== null && Math.abs(r[j]) > bv) { bv = Math.abs(r[j]); best = j; }
    return best;
  }
  function fillTable() {
    const s = series(S.q, S.layer);
    const means = unitMeans(s);
    const R = corr(S.q, S.layer);
    const frag = document.createDocumentFragment();
    rows = [];
    for (let u = 0; u < H; u++) {
      const tr = el('tr');
      tr.dataset.u = String(u);
      tr.appendChild(el('td', null, String(u)));
      const m = means[u], am = Math.abs(m);
      tr.appendChild(el('td', null, fmt(m, am >= 100 ? 0 : am >= 10 ? 1 : 2)));
      const r = R[u] || [];
      const best = bestFeature(r);
      for (let j = 0; j < F.length; j++) {
        const v = r[j];
        const td = el('td', j === best ? 'best' : null, v === null || v === undefined ? '—' : (v >= 0 ? '+' : '') + v.toFixed(2));
        if (v !== null && v !== undefined) {
          const a = Math.min(1, Math.abs(v));
          td.style.backgroundColor = v >= 0 ? 'rgba(214, 96, 77, ' + (0.75 * a).toFixed(3) + ')' : 'rgba(67, 147, 195, ' + (0.75 * a).toFixed(3) + ')';
          if (a > 0.6) td.style.color = '#fff';
        }
        tr.appendChild(td);
      }
      tr.addEventListener('click', () => selectUnit(u));
      rows.push(tr);
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    $('browser-hint').textContent = F.length ? 'r = correlation of ' + S.q + ' with each feature' : 'no text features';
    sortRows();
  }
  function sortKeyOf(u) {
    if (S.sortKey === 'unit') return u;
    if (S.sortKey === 'mean') return unitMeans(series(S.q, S.layer))[u];
    const r = (corr(S.q, S.layer)[u] || [])[+S.sortKey.slice(1)];
    return r === null || r === undefined ? -Infinity * S.sortDir : r;
  }
  function sortRows() {
    const order = Array.from({ length: H }, (_, u) => u);
    const key = order.map(sortKeyOf);
    order.sort((a, b) => (key[a] - key[b]) * S.sortDir || a - b);
    const frag = document.createDocumentFragment();
    for (const u of order) frag.appendChild(rows[u]);
    tbody.appendChild(frag);
    for (const th of thead.querySelectorAll('th')) {
      const on = th.dataset.key === S.sortKey;
      th.classList.toggle('sorted', on);
      th.querySelector('.dir').textContent = on ? (S.sortDir > 0 ? '▲' : '▼') : '';
    }
    S.order = order;
    applyFilter();
  }
  function matches(u) {
    const f = S.filter.trim().toLowerCase();
    if (!f) return true;
    if (/^\d+$/.test(f)) return String(u).startsWith(f);
    const r = corr(S.q, S.layer)[u] || [];
    const b = bestFeature(r);
    return b >= 0 && F[b].toLowerCase().includes(f);
  }
  function applyFilter() {
    let shownRows = 0;
    for (let u = 0; u < H; u++) {
      const ok = matches(u);
      rows[u].hidden = !ok;
      if (ok) shownRows++;
    }
    S.visibleOrder = S.order.filter((u) => !rows[u].hidden);
    $('search').title = shownRows + ' of ' + H + ' units shown';
  }
  $('search').addEventListener('input', (e) => { S.filter = e.target.value; applyFilter(); });
  function markRow() {
    for (const tr of tbody.querySelectorAll('tr.sel')) tr.classList.remove('sel');
    const tr = rows[S.unit];
    if (tr) {
      tr.classList.add('sel');
      const wrap = $('table-wrap');
      const wr = wrap.getBoundingClientRect(), rr = tr.getBoundingClientRect();
      const top = wr.top + thead.getBoundingClientRect().height;  // below the sticky header
      if (rr.top < top || rr.bottom > wr.bottom) {  // out of sight: bring it to the middle
        wrap.scrollTop += rr.top - (top + wr.bottom) / 2 + rr.height / 2;
      }
    }
  }

  // ------------------------------------------------------------------ text view
  const tv = $('tv'), tvRows = $('tv-rows'), spacer = $('tv-spacer');
  const LH = 22;
  // spans: the drawn characters, in order; spans[i] shows step spanT0 + i
  let rowStart = new Int32Array(1), rowLabel = [], R = 0, cols = 80, spans = [], spanT0 = 0, range = [-1, -1];
  let pinnedSpan = null;
  function measure() {
    const m = el('span');
    m.id = 'measure';
    m.textContent = 'M'.repeat(100);
    tv.appendChild(m);
    const cw = m.getBoundingClientRect().width / 100;
    m.remove();
    const g = el('span', 'g', '0');
    const row = el('div', 'row');
    row.appendChild(g);
    tvRows.appendChild(row);
    const gw = g.getBoundingClientRect().width;
    row.remove();
    return { cw: cw || 8.4, gw: gw || 60 };
  }
  function layoutRows() {
    const { cw, gw } = measure();
    cols = Math.max(16, Math.floor((tv.clientWidth - gw - 24) / cw));
    const starts = [0], labels = [];
    const text = D.kind === 'text';
    labels.push(text ? '1' : '#1');
    let len = 0;
    for (let t = 0; t < N; t++) {
      const newSeq = t > 0 && seqOf[t] !== seqOf[t - 1];
      const afterNl = text && t > 0 && tokens[t - 1] === '\n';
      if (t > 0 && (newSeq || afterNl || len === cols)) {
        starts.push(t);
        labels.push(newSeq && !text ? '#' + (seqOf[t] + 1) : (afterNl || newSeq) ? String(lineOf[t]) : '');
        len = 0;
      }
      len++;
    }
    starts.push(N);
    rowStart = Int32Array.from(starts);
    rowLabel = labels;
    R = labels.length;
    spacer.style.height = (R * LH + 8) + 'px';
    tv.style.height = Math.max(120, Math.min(340, R * LH + 12)) + 'px';  // short documents: no empty box
    range = [-1, -1];
  }
  function rowOf(t) {  // binary search
    let a = 0, b = R - 1;
    while (a < b) { const m = (a + b + 1) >> 1; if (rowStart[m] <= t) a = m; else b = m - 1; }
    return a;
  }
  function renderText(force) {
    const top = tv.scrollTop, h = tv.clientHeight || 340;
    const r0 = Math.max(0, Math.floor(top / LH) - 6), r1 = Math.min(R, Math.ceil((top + h) / LH) + 6);
    if (!force && r0 === range[0] && r1 === range[1]) return;
    range = [r0, r1];
    const parts = [];
    for (let r = r0; r < r1; r++) {
      parts.push('<div class="row"><span class="g">', rowLabel[r], '</span>');
      for (let t = rowStart[r]; t < rowStart[r + 1]; t++) {
        const ch = tokens[t];
        let cls = 'c';
        if (ch === '\n' || ch === '\t' || ch === '\r') cls += ' nl';
        if (emph && emph[t]) cls += ' em';
        parts.push('<span class="', cls, '" data-t="', t, '">', esc(shown(ch)), '</span>');
      }
      parts.push('</div>');
    }
    tvRows.innerHTML = parts.join('');
    tvRows.style.transform = 'translateY(' + (r0 * LH) + 'px)';
    spans = Array.from(tvRows.getElementsByClassName('c'));
    spanT0 = r0 < R ? rowStart[r0] : 0;
    pinnedSpan = null;
    colourText();
  }
  function gradWindow() {  // the measured window shown in the gradient view: [start, p], values
    if (!grad || S.gi < 0) return null;
    const i = S.gi, a = grad.off[i], b = grad.off[i + 1];
    return { p: grad.pos[i], start: grad.start[i], vals: grad.val.subarray(a, b) };
  }
  function markPinned(t) {  // the outline on the pinned character (one span, not all)
    const i = t - spanT0;
    const sp = i >= 0 && i < spans.length ? spans[i] : null;
    if (sp === pinnedSpan) return;
    if (pinnedSpan) pinnedSpan.classList.remove('pin');
    if (sp) sp.classList.add('pin');
    pinnedSpan = sp;
  }
  let greyed = false;  // some spans carry the 'out' class (influence colouring)
  function colourText() {
    const t1 = performance.now();
    const n = spans.length;
    if (S.colourBy === 'grad' && grad) {
      const w = gradWindow();
      let mx = 0;
      for (const v of w.vals) mx = Math.max(mx, v);
      const logMode = S.gscale === 'log';
      const floor = mx > 0 ? Math.log10(mx) - 4 : 0;
      markPinned(w.p);
      greyed = true;
      for (let k = 0; k < n; k++) {
        const sp = spans[k], t = spanT0 + k;
        if (t < w.start || t > w.p) {
          sp.style.backgroundColor = ''; sp.style.color = ''; sp.className = sp.className.includes(' out') ? sp.className : sp.className + ' out';
          continue;
        }
        if (sp.className.includes(' out')) sp.className = sp.className.replace(' out', '');
        const v = w.vals[t - w.start];
        let f = mx > 0 ? v / mx : 0;
        if (logMode) f = v > 0 && mx > 0 ? Math.max(0, (Math.log10(v) - floor) / 4) : 0;
        const i = cindex(f, 0, 1);
        sp.style.backgroundColor = CSS.grad[i];
        sp.style.color = FG.grad[i];
      }
    } else {
      const s = series(S.q, S.layer), u = S.unit;
      const lo = s.lo[u], st = s.step[u], [dlo, dhi] = domain(s, u), base = u * N, code = s.code;
      const css = CSS[s.cmap], fg = FG[s.cmap];
      if (greyed) { for (const sp of spans) if (sp.className.includes(' out')) sp.className = sp.className.replace(' out', ''); greyed = false; }
      for (let k = 0; k < n; k++) {
        const sp = spans[k];
        const i = cindex(lo + code[base + spanT0 + k] * st, dlo, dhi);
        sp.style.backgroundColor = css[i];
        sp.style.color = fg[i];
      }
      markPinned(S.pinned);
    }
    api.timings.colour = performance.now() - t1;
  }
  let scrollQueued = false;
  tv.addEventListener('scroll', () => {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      renderText(false);
      if (S.pinned < 0) followText();
    });
  });
  function followText() {  // heatmap window starts at the first character in sight
    const r = Math.min(R - 1, Math.floor(tv.scrollTop / LH));
    setHeatStart(rowStart[Math.max(0, r)]);
  }
  function scrollToPos(t) {
    const r = rowOf(t);
    const y = r * LH;
    if (y < tv.scrollTop || y > tv.scrollTop + tv.clientHeight - LH) {
      tv.scrollTop = Math.max(0, y - tv.clientHeight / 3);
      renderText(false);
    }
  }
  tv.addEventListener('click', (e) => {
    const sp = e.target.closest('.c');
    if (sp) pin(+sp.dataset.t);
  });
  tv.addEventListener('mousemove', (e) => {
    const sp = e.target.closest('.c');
    if (!sp) { hideTip(); return; }
    showTip(tipForStep(+sp.dataset.t), e);
  });
  tv.addEventListener('mouseleave', hideTip);

  // ------------------------------------------------------------------ tooltip
  const tip = $('tip');
  function hideTip() { tip.hidden = true; }
  function showTip(content, e) {
    tip.replaceChildren(content);
    tip.hidden = false;
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = e.clientX + 14, y = e.clientY + 16;
    if (x + w > innerWidth - 8) x = e.clientX - w - 14;
    if (y + h > innerHeight - 8) y = e.clientY - h - 12;
    tip.style.left = Math.max(4, x) + 'px';
    tip.style.top = Math.max(4, y) + 'px';
  }
  function tipForStep(t, u) {
    if (u === undefined) u = S.unit;
    const box = el('div');
    const head = el('div', 't-head');
    head.appendChild(el('span', 'glyph', visible(tokens[t])));
    head.appendChild(document.createTextNode('  position ' + int(t) + ' · ' + where(t)));
    box.appendChild(head);
    const v = value(S.q, S.layer, u, t);
    const line = el('div', 't-val');
    line.appendChild(document.createTextNode(S.q + '  layer ' + (S.layer + 1) + '  unit ' + u + ' = '));
    line.appendChild(el('b', null, fmt(v, 4)));
    line.appendChild(el('span', 't-dim', '  ± ' + halfStep(S.q, S.layer, u).toPrecision(2)));
    box.appendChild(line);
    if (D.token_info) box.appendChild(el('div', 't-dim', D.token_info[t]));
    if (grad && S.colourBy === 'grad') {
      const w = gradWindow();
      if (t >= w.start && t <= w.p) {
        box.appendChild(el('div', 't-val', 'influence on position ' + int(w.p) + ': ' + w.vals[t - w.start].toExponential(2) + (t === w.p ? '' : '  (' + (w.p - t) + ' steps back)')));
      }
    }
    if (pred && pred.has[t]) {
      const k = pred.k;
      const table = el('table');
      const tgt = pred.target ? pred.target[t] : 65535;
      for (let j = 0; j < k; j++) {
        const c = pred.idx[t * k + j], p = pred.p[t * k + j] / 65535;
        const tr = el('tr', c === tgt ? 'target' : null);
        tr.appendChild(el('td', null, visible(pred.labels[c])));
        tr.appendChild(el('td', null, (100 * p).toFixed(1) + '%'));
        const bar = el('td', 'bar'), fill = el('div', 'barfill');
        fill.style.width = (100 * p / Math.max(1e-9, pred.p[t * k] / 65535)).toFixed(1) + '%';  // relative to the top one
        bar.appendChild(fill);
        tr.appendChild(bar);
        table.appendChild(tr);
      }
      box.appendChild(el('div', 't-dim', D.kind === 'text' ? 'the model predicts next:' : 'the model outputs:'));
      box.appendChild(table);
      if (tgt !== 65535 && pred.tp) {
        box.appendChild(el('div', 't-val', 'actual ' + (D.kind === 'text' ? 'next' : 'target') + ' ' + visible(pred.labels[tgt]) + ': p = ' + (100 * pred.tp[t] / 65535).toFixed(1) + '%'));
      }
    }
    return box;
  }

  // ------------------------------------------------------------------ heatmap
  const heat = $('heat'), hctx = heat.getContext('2d');
  const HM = { left: 46, top: 32, cw: 7, rh: Math.max(3, Math.min(12, Math.floor(380 / H))), cols: 100, start: 0 };
  function layoutHeat() {
    const dpr = window.devicePixelRatio || 1;
    const cssW = heat.parentElement.clientWidth || 800;
    HM.cols = Math.min(N, Math.max(10, Math.floor((cssW - HM.left - 10) / HM.cw)));  // at most the N steps there are
    const cssH = HM.top + H * HM.rh + 6;
    heat.style.height = cssH + 'px';
    heat.width = Math.round(cssW * dpr); heat.height = Math.round(cssH * dpr);
    hctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const hs = $('heat-start');
    hs.max = String(Math.max(0, N - HM.cols));
    setHeatStart(HM.start, true);
  }
  function setHeatStart(t, quiet) {
    HM.start = Math.max(0, Math.min(t, N - HM.cols));
    $('heat-start').value = String(HM.start);
    $('heat-hint').textContent = 'steps ' + int(HM.start) + '–' + int(HM.start + HM.cols - 1) + ' · ' + S.q + ', layer ' + (S.layer + 1) + ' · click a row to select its unit';
    if (!quiet) drawHeat();
  }
  $('heat-start').addEventListener('input', (e) => setHeatStart(+e.target.value));
  function drawHeat() {
    const t1 = performance.now();
    const s = series(S.q, S.layer), lut = LUT[s.cmap];
    const W = HM.cols, img = new ImageData(W, H);
    for (let u = 0; u < H; u++) {
      const lo = s.lo[u], st = s.step[u], [dlo, dhi] = domain(s, u), base = u * N + HM.start;
      for (let j = 0; j < W; j++) {
        const i = cindex(lo + s.code[base + j] * st, dlo, dhi) * 3, o = 4 * (u * W + j);
        img.data[o] = lut[i]; img.data[o + 1] = lut[i + 1]; img.data[o + 2] = lut[i + 2]; img.data[o + 3] = 255;
      }
    }
    const off = document.createElement('canvas');
    off.width = W; off.height = H;
    off.getContext('2d').putImageData(img, 0, 0);
    const cssW = heat.width / (window.devicePixelRatio || 1), cssH = heat.height / (window.devicePixelRatio || 1);
    hctx.clearRect(0, 0, cssW, cssH);
    hctx.imageSmoothingEnabled = false;
    hctx.drawImage(off, HM.left, HM.top, W * HM.cw, H * HM.rh);
    // time axis: ticks every 10 steps, glyphs above the columns
    hctx.fillStyle = '#6a7282'; hctx.font = '10px ' + getComputedStyle(document.body).getPropertyValue('--mono');
    hctx.textAlign = 'center'; hctx.textBaseline = 'alphabetic';
    for (let j = 0; j < W; j++) {
      const t = HM.start + j, x = HM.left + j * HM.cw + HM.cw / 2;
      if (t % 10 === 0) { hctx.fillText(String(t), x, 11); hctx.fillRect(x - 0.5, 13, 1, 4); }
      const ch = tokens[t];
      hctx.fillText(ch === '\n' ? '↵' : ch === ' ' ? '·' : shown(ch), x, HM.top - 4);
    }
    // unit labels and the selected row
    hctx.textAlign = 'right'; hctx.textBaseline = 'middle';
    const every = Math.max(1, Math.ceil(14 / HM.rh));
    for (let u = 0; u < H; u += every) if (Math.abs(u - S.unit) >= every) hctx.fillText(String(u), HM.left - 6, HM.top + (u + 0.5) * HM.rh);
    const y = HM.top + S.unit * HM.rh;
    hctx.fillStyle = '#0d1324'; hctx.font = 'bold 11px ' + getComputedStyle(document.body).getPropertyValue('--mono');
    hctx.fillText('▶ ' + S.unit, HM.left - 4, y + HM.rh / 2);
    hctx.strokeStyle = '#0d1324'; hctx.lineWidth = 2;
    hctx.strokeRect(HM.left - 1, y - 1, W * HM.cw + 2, HM.rh + 2);
    if (S.pinned >= HM.start && S.pinned < HM.start + W) {
      const x = HM.left + (S.pinned - HM.start) * HM.cw;
      hctx.strokeStyle = 'rgba(13, 19, 36, .85)'; hctx.lineWidth = 1.5;
      hctx.strokeRect(x, HM.top - 1, HM.cw, H * HM.rh + 2);
    }
    api.timings.heat = performance.now() - t1;
  }
  function heatHit(e) {
    const r = heat.getBoundingClientRect();
    const x = e.clientX - r.left, y = e.clientY - r.top;
    const u = Math.floor((y - HM.top) / HM.rh), j = Math.floor((x - HM.left) / HM.cw);
    if (u < 0 || u >= H || j < 0 || j >= HM.cols) return null;
    return { u, t: HM.start + j };
  }
  heat.addEventListener('click', (e) => { const h = heatHit(e); if (h) selectUnit(h.u); });
  heat.addEventListener('mousemove', (e) => { const h = heatHit(e); if (h) showTip(tipForStep(h.t, h.u), e); else hideTip(); });
  heat.addEventListener('mouseleave', hideTip);

  // ------------------------------------------------------------------ gradient view
  const gc = $('grad'), gctx = gc.getContext('2d');
  const GM = { left: 52, right: 12, top: 10, bottom: 44, h: 210 };
  function layoutGrad() {
    const dpr = window.devicePixelRatio || 1;
    const cssW = gc.parentElement.clientWidth || 800;
    gc.style.height = GM.h + 'px';
    gc.width = Math.round(cssW * dpr); gc.height = Math.round(GM.h * dpr);
    gctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }
  function drawGrad() {
    const cssW = gc.width / (window.devicePixelRatio || 1);
    gctx.clearRect(0, 0, cssW, GM.h);
    if (!grad || !grad.pos.length) {
      $('grad-title').textContent = 'No influence measurements in this file.';
      $('grad-count').textContent = '';
      return;
    }
    const w = gradWindow(), n = w.vals.length;
    const P = grad.pos.length;
    $('grad-count').textContent = (S.gi + 1) + ' / ' + P;
    const what = grad.what[S.gi];
    const title = $('grad-title');
    title.replaceChildren();
    title.appendChild(document.createTextNode('Position ' + int(w.p) + ' '));
    title.appendChild(el('code', null, visible(tokens[w.p])));
    title.appendChild(document.createTextNode(' (' + where(w.p) + ')' + (what ? ' · the model predicts ' : '')));
    if (what) title.appendChild(el('code', null, visible(what)));
    if (S.pinned >= 0 && S.pinned !== w.p) title.appendChild(el('span', 'hint', '  · nearest measured position to the pinned ' + int(S.pinned)));
    $('grad-measure').textContent = grad.measure;
    let mx = 0, total = 0;
    for (const v of w.vals) { mx = Math.max(mx, v); total += v; }
    const plotW = cssW - GM.left - GM.right, plotH = GM.h - GM.top - GM.bottom;
    const bw = plotW / n;
    const log = S.gscale === 'log';
    let decades = 4, top = 0;
    if (log && mx > 0) {
      let mn = Infinity;
      for (const v of w.vals) if (v > 0) mn = Math.min(mn, v);
      top = Math.ceil(Math.log10(mx) - 1e-9);
      decades = Math.max(1, Math.min(8, top - Math.floor(Math.log10(mn))));
    }
    const frac = (v) => {
      if (!(mx > 0)) return 0;
      if (!log) return v / mx;
      return v > 0 ? Math.max(0, (Math.log10(v) - (top - decades)) / decades) : 0;
    };
    const mono = getComputedStyle(document.body).getPropertyValue('--mono');
    // axes
    gctx.strokeStyle = '#e1e4ea'; gctx.lineWidth = 1; gctx.fillStyle = '#6a7282';
    gctx.font = '10px ' + mono; gctx.textAlign = 'right'; gctx.textBaseline = 'middle';
    const ticks = log ? decades : 4;
    for (let k = 0; k <= ticks; k++) {
      const y = GM.top + plotH - (k / ticks) * plotH;
      gctx.beginPath(); gctx.moveTo(GM.left, y + 0.5); gctx.lineTo(GM.left + plotW, y + 0.5); gctx.stroke();
      const label = log ? pow10(top - decades + k) : (mx * k / ticks).toExponential(1);
      gctx.fillText(label, GM.left - 6, y);
    }
    // bars and the glyph strip
    const lut = CSS.grad;
    for (let j = 0; j < n; j++) {
      const f = frac(w.vals[j]);
      const i = cindex(w.vals[j] / (mx || 1), 0, 1);
      const x = GM.left + j * bw;
      gctx.fillStyle = lut[Math.max(40, i)];
      const hgt = f * plotH;
      gctx.fillRect(x + (bw > 4 ? 0.5 : 0), GM.top + plotH - hgt, Math.max(1, bw - (bw > 4 ? 1 : 0)), hgt);
      const t = w.start + j;
      gctx.fillStyle = lut[i];
      gctx.fillRect(x, GM.top + plotH + 4, Math.max(1, bw), 16);
      if (bw >= 7) {
        gctx.fillStyle = FG.grad[i]; gctx.textAlign = 'center'; gctx.font = '11px ' + mono;
        gctx.fillText(shown(tokens[t]) === ' ' ? '·' : shown(tokens[t]), x + bw / 2, GM.top + plotH + 12.5);
      }
    }
    gctx.fillStyle = '#6a7282'; gctx.font = '10px ' + mono; gctx.textAlign = 'center'; gctx.textBaseline = 'alphabetic';
    const stepTick = n > 200 ? 50 : n > 60 ? 10 : 5;
    for (let back = 0; back < n; back += stepTick) {
      const x = GM.left + (n - 1 - back) * bw + bw / 2;
      gctx.fillText(back === 0 ? 'p' : '−' + back, x, GM.h - 8);
    }
    gctx.textAlign = 'left';
    gctx.fillText('steps back', GM.left, GM.h - 8 + 0);
    // how far back the influence reaches
    let acc = 0, k90 = n;
    for (let j = n - 1; j >= 0; j--) { acc += w.vals[j]; if (acc >= 0.9 * total) { k90 = n - j; break; } }
    const oldest = mx > 0 ? w.vals[0] / mx : 0;
    $('grad-note').textContent = (total > 0 ? '90% of the summed influence comes from the last ' + k90 + ' of ' + n + ' steps; ' : '') +
      'the oldest step shown has ' + (oldest > 0 ? oldest.toExponential(1) : '0') + ' of the largest influence. ' +
      'Measured with the real backward pass (exact within the window of ' + grad.window + ' steps).';
  }
  function pow10(k) {
    const sup = { '-': '⁻', 0: '⁰', 1: '¹', 2: '²', 3: '³', 4: '⁴', 5: '⁵', 6: '⁶', 7: '⁷', 8: '⁸', 9: '⁹' };
    return k === 0 ? '1' : k === 1 ? '10' : '10' + String(k).split('').map((c) => sup[c]).join('');
  }
  function gradHit(e) {
    const w = gradWindow();
    if (!w) return null;
    const r = gc.getBoundingClientRect();
    const n = w.vals.length, bw = (r.width - GM.left - GM.right) / n;
    const j = Math.floor((e.clientX - r.left - GM.left) / bw);
    return j >= 0 && j < n ? { t: w.start + j, v: w.vals[j], back: n - 1 - j } : null;
  }
  gc.addEventListener('mousemove', (e) => {
    const h = gradHit(e);
    if (!h) { hideTip(); return; }
    const box = el('div');
    const head = el('div', 't-head');
    head.appendChild(el('span', 'glyph', visible(tokens[h.t])));
    head.appendChild(document.createTextNode('  position ' + int(h.t) + (h.back ? ' · ' + h.back + ' steps back' : ' · the position itself')));
    box.appendChild(head);
    box.appendChild(el('div', 't-val', 'influence ' + h.v.toExponential(3)));
    showTip(box, e);
  });
  gc.addEventListener('mouseleave', hideTip);
  gc.addEventListener('click', (e) => { const h = gradHit(e); if (h) { scrollToPos(h.t); } });
  $('grad-prev').addEventListener('click', () => stepGrad(-1));
  $('grad-next').addEventListener('click', () => stepGrad(1));
  function nearestGrad(t) {
    if (!grad || !grad.pos.length) return -1;
    let a = 0, b = grad.pos.length - 1;
    while (a < b) { const m = (a + b) >> 1; if (grad.pos[m] < t) a = m + 1; else b = m; }
    if (a > 0 && Math.abs(grad.pos[a - 1] - t) <= Math.abs(grad.pos[a] - t)) a--;
    return a;
  }
  function stepGrad(d) {
    if (!grad || !grad.pos.length) return;
    S.gi = Math.max(0, Math.min(grad.pos.length - 1, S.gi + d));
    S.pinned = grad.pos[S.gi];
    scrollToPos(S.pinned);
    centreHeat(S.pinned);
    renderText(true); drawHeat(); drawGrad();
  }

  // ------------------------------------------------------------------ actions
  function selectUnit(u) {
    S.unit = Math.max(0, Math.min(H - 1, u));
    $('unit').value = String(S.unit);
    markRow();
    if (S.colourBy !== 'unit') setColourBy('unit', true);
    colourText(); drawHeat(); drawLegend();
  }
  function stepUnit(d) {
    const order = S.visibleOrder && S.visibleOrder.length ? S.visibleOrder : S.order;
    let i = order.indexOf(S.unit);
    if (i < 0) i = d > 0 ? -1 : order.length;
    const j = Math.max(0, Math.min(order.length - 1, i + d));
    selectUnit(order[j]);
  }
  function setQuantity(q) {
    if (!D.quantities[q]) return;
    S.q = q;
    for (const [k, b] of Object.entries(qButtons)) b.setAttribute('aria-pressed', String(k === q));
    fillTable(); markRow();
    if (S.colourBy !== 'unit') setColourBy('unit', true);
    colourText(); drawHeat(); drawLegend(); setHeatStart(HM.start, true);
  }
  function setLayer(l) {
    S.layer = l;
    $('layer').value = String(l);
    fillTable(); markRow(); colourText(); drawHeat(); drawLegend(); setHeatStart(HM.start, true);
  }
  function setColourBy(v, quiet) {
    if (v === 'grad' && !grad) return;
    S.colourBy = v;
    for (const b of $('colour-by').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.v === v));
    if (v === 'grad' && S.pinned < 0 && grad) { S.pinned = grad.pos[S.gi]; scrollToPos(S.pinned); centreHeat(S.pinned); renderText(true); }
    if (!quiet) { colourText(); drawLegend(); drawHeat(); }
  }
  function setRange(v) {
    S.range = v === 'unit' ? 'unit' : 'fixed';
    for (const b of $('range').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.v === S.range));
    colourText(); drawHeat(); drawLegend();
  }
  function centreHeat(t) { setHeatStart(t - Math.floor(HM.cols / 2), true); }
  function pin(t) {
    S.pinned = t;
    scrollToPos(t);
    if (grad) S.gi = nearestGrad(t);
    centreHeat(t);
    colourText(); drawHeat(); drawGrad();
  }

  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented) return;  // taken by a control of its own (the seq2seq output)
    const tag = (e.target.tagName || '').toLowerCase();
    if (e.target === $('search')) { if (e.key === 'Escape') e.target.blur(); return; }
    if (tag === 'input' || tag === 'select' || tag === 'textarea' || e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === 'j' || k === 'ArrowDown') { stepUnit(1); e.preventDefault(); }
    else if (k === 'k' || k === 'ArrowUp') { stepUnit(-1); e.preventDefault(); }
    else if (k === ']') { stepGrad(1); e.preventDefault(); }
    else if (k === '[') { stepGrad(-1); e.preventDefault(); }
    else if (k === 'g') { setColourBy(S.colourBy === 'grad' ? 'unit' : 'grad'); e.preventDefault(); }
    else if (k === 'r') { setRange(S.range === 'unit' ? 'fixed' : 'unit'); e.preventDefault(); }
    else if (k === '/') { $('search').focus(); e.preventDefault(); }
    else if (/^[1-9]$/.test(k) && +k <= QS.length) { setQuantity(QS[+k - 1]); e.preventDefault(); }
  }, { signal });

  // ------------------------------------------------------------------ notes, start
  {
    const notes = [];
    notes.push('Values are stored with ' + D.bits + ' bits per unit (value = lo + code × step); every value shown carries ± half a step.');
    notes.push('Colours: gates on 0…1, tanh outputs on −1…1; other quantities (such as the cell state) are scaled to each unit\u2019s largest |value|.');
    if (F.length) notes.push('Unit table: Pearson correlation over all ' + int(N) + ' steps with each feature: ' + F.join(', ') + '.');
    if (grad) notes.push('Influence: ' + grad.measure + ' for each earlier step t within ' + grad.window + ' steps of the position p, measured by the backward pass, at ' + grad.pos.length + ' positions (after Madsen 2019, \u201cVisualizing memorization in RNNs\u201d).');
    for (const n of D.notes) notes.push(n);
    for (const n of notes) $('notes').appendChild(el('p', null, n));
    $('text-heading').textContent = D.heading || (D.kind === 'text' ? 'Text' : 'Samples');
  }
  const api = {
    data: D, state: S, timings: { parse: tParsed - t0 },
    value, series, selectUnit, setQuantity, setLayer, setColourBy, setRange, pin, stepUnit, stepGrad,
    scrollToPos, showTip, hideTip,
    domain: (q, layer, u) => domain(series(q, layer), u),
    colourIndex: cindex, lut: (name) => Array.from(LUT[name]),
    visibleSpans: () => spans.length, rows: () => R, render: () => renderText(true),
  };
  window.gatescope = api;

  function start() {
    // the unit with the strongest correlation to any feature, else unit 0
    const Rm = corr(S.q, S.layer);
    let best = 0, bv = -1;
    for (let u = 0; u < H; u++) {
      const r = Rm[u] || [];
      for (const v of r) if (v !== null && Math.abs(v) > bv) { bv = Math.abs(v); best = u; }
    }
    S.unit = best;
    buildHeader();
    for (const [k, b] of Object.entries(qButtons)) b.setAttribute('aria-pressed', String(k === S.q));
    fillTable();
    $('unit').value = String(S.unit);
    layoutRows(); layoutHeat(); layoutGrad();
    renderText(true); drawHeat(); drawGrad(); drawLegend(); markRow();
    api.timings.ready = performance.now() - t0;
    api.ready = true;
    document.documentElement.dataset.ready = 'true';
  }
  let resizeQueued = false;
  window.addEventListener('resize', () => {
    if (resizeQueued) return;
    resizeQueued = true;
    requestAnimationFrame(() => {
      resizeQueued = false;
      const t = rowStart[Math.min(R - 1, Math.floor(tv.scrollTop / LH))];
      layoutRows(); layoutHeat(); layoutGrad();
      tv.scrollTop = rowOf(t) * LH;
      renderText(true); drawHeat(); drawGrad();
    });
  }, { signal });
  start();
  return api;
  }


  // ------------------------------------------------------------------ sequence to sequence
  // B.texts: per text its source, the greedy output, the attention (T x S float32 or null)
  // and where it starts in each part's document; B.parts: the unit views' documents.
  // Switching the part re-creates the unit views from the page's template; the state of
  // the translation panel (text, selected step, scale) lives here and is drawn again.
  function seq2seq(B) {
    const names = Object.keys(B.parts);
    const { CSS, FG } = tables(B.luts);
    const att = B.texts.map((r) => (r.attention ? f32(r.attention) : null));
    for (const p of names) {  // what the parts share: title, details, colour tables, notes
      const D = B.parts[p];
      D.title = B.title; D.details = B.details; D.luts = B.luts;
      D.notes = [...B.notes, ...D.notes];
    }
    const P = { part: names[0], text: 0, pinned: 0, hover: -1, scale: 'fixed' };
    let api = null, controller = null;
    const srcSpans = [], outButtons = [];
    const esc = (ch) => (ch === ' ' ? '\u2423' : ch);  // a visible space

    function show(part) {
      const keep = api ? { q: api.state.q, layer: api.state.layer } : null;
      if (controller) controller.abort();
      controller = new AbortController();
      APP.innerHTML = TEMPLATE;
      P.part = part;
      api = mount(B.parts[part], controller.signal);
      if (keep && api.data.quantities[keep.q]) api.setQuantity(keep.q);
      if (keep && keep.layer < api.data.layers) api.setLayer(keep.layer);
      panel();
      api.s2s = { state: P, setPart, setText, select, hover, setScale, attention: (k) => row(k) };
      window.gatescope = api;
    }
    function setPart(p) { if (B.parts[p] && p !== P.part) show(p); }
    function setText(i) {
      P.text = Math.max(0, Math.min(B.texts.length - 1, i));
      P.pinned = 0; P.hover = -1;
      $('s2s-text').value = String(P.text);
      fillText();
      const rec = B.texts[P.text];
      api.pin(P.part === 'decoder' ? rec.dec_start : rec.enc_start);
    }
    function row(k) {  // attention of output step k of the current text (Float32Array S), or null
      const a = att[P.text], S = Array.from(B.texts[P.text].source).length;
      return a && k >= 0 ? a.subarray(k * S, (k + 1) * S) : null;
    }
    function shownStep() { return P.hover >= 0 ? P.hover : P.pinned; }
    function colourSource() {
      const k = shownStep(), w = row(k);
      let hi = 1;
      if (w && P.scale === 'row') { hi = 0; for (const v of w) hi = Math.max(hi, v); hi = hi || 1; }
      srcSpans.forEach((sp, j) => {
        if (!w) { sp.style.backgroundColor = ''; sp.style.color = ''; sp.removeAttribute('aria-label'); return; }
        const i = cindex(w[j], 0, hi);
        sp.style.backgroundColor = CSS.seq[i];
        sp.style.color = FG.seq[i];
        sp.setAttribute('aria-label', sp.textContent + ': attention of output step ' + k + ' = ' + w[j].toPrecision(6));  // for screen readers; the mouse gets the tooltip
      });
      outButtons.forEach((b, j) => {
        b.classList.toggle('on', j === k);
        b.setAttribute('aria-pressed', String(j === P.pinned));
      });
      info(k, w);
    }
    function glyph(k) {
      const rec = B.texts[P.text], out = Array.from(rec.output);
      return k < out.length ? out[k] : '\u2404';
    }
    function info(k, w) {
      const box = $('s2s-info');
      box.replaceChildren();
      if (k < 0) return;
      const rec = B.texts[P.text], src = Array.from(rec.source);
      box.appendChild(document.createTextNode('output step ' + k + ' emits '));
      const g = document.createElement('code');
      g.textContent = k < Array.from(rec.output).length ? glyph(k) : 'EOS';
      box.appendChild(g);
      if (!w) { box.appendChild(document.createTextNode(' · no attention weights (this model has no attention)')); return; }
      let best = 0;
      for (let j = 1; j < w.length; j++) if (w[j] > w[best]) best = j;
      box.appendChild(document.createTextNode(' · strongest attention on source position ' + best + ' '));
      const s = document.createElement('code');
      s.textContent = esc(src[best]);
      box.appendChild(s);
      box.appendChild(document.createTextNode(' = ' + w[best].toFixed(4) + ' (the ' + w.length + ' weights sum to 1)'));
    }
    function tipFor(k) {  // the exact weights of output step k, the largest first
      const w = row(k), rec = B.texts[P.text], src = Array.from(rec.source);
      const box = document.createElement('div');
      const head = document.createElement('div');
      head.className = 't-head';
      head.textContent = 'output step ' + k + ' · emits ' + (k < Array.from(rec.output).length ? glyph(k) : 'EOS');
      box.appendChild(head);
      if (!w) { const d = document.createElement('div'); d.className = 't-dim'; d.textContent = 'no attention weights: attention="none"'; box.appendChild(d); return box; }
      const order = Array.from(w.keys()).sort((a, b) => w[b] - w[a] || a - b).slice(0, 6);
      const table = document.createElement('table');
      for (const j of order) {
        const tr = document.createElement('tr');
        const c1 = document.createElement('td'); c1.textContent = esc(src[j]);
        const c2 = document.createElement('td'); c2.textContent = 'pos ' + j;
        const c3 = document.createElement('td'); c3.textContent = w[j].toPrecision(6);
        const c4 = document.createElement('td'); c4.className = 'bar';
        const fill = document.createElement('div'); fill.className = 'barfill'; fill.style.width = (100 * w[j]).toFixed(1) + '%';
        c4.appendChild(fill);
        tr.append(c1, c2, c3, c4);
        table.appendChild(tr);
      }
      box.appendChild(table);
      if (w.length > order.length) {
        let rest = 0;
        for (let j = 0; j < w.length; j++) if (!order.includes(j)) rest += w[j];
        const d = document.createElement('div'); d.className = 't-dim';
        d.textContent = 'the other ' + (w.length - order.length) + ' positions: ' + rest.toPrecision(3) + ' together';
        box.appendChild(d);
      }
      return box;
    }
    function hover(k, e) { P.hover = k; colourSource(); if (k >= 0 && e) api.showTip(tipFor(k), e); else api.hideTip(); }
    function select(k) {
      const n = B.texts[P.text].steps;
      P.pinned = Math.max(0, Math.min(n - 1, k));
      colourSource();
      if (P.part === 'decoder') api.pin(B.texts[P.text].dec_start + P.pinned);
    }
    function setScale(v) {
      P.scale = v === 'row' ? 'row' : 'fixed';
      for (const b of $('s2s-scale').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.v === P.scale));
      colourSource();
    }
    function panel() {
      $('s2s-panel').hidden = false;
      $('grad-panel').hidden = true;  // no influence measurements for seq2seq parts
      $('colour-ctl').hidden = true;
      $('part-ctl').hidden = false;
      const parts = $('parts');
      parts.replaceChildren();
      for (const p of names) {
        const b = document.createElement('button');
        b.type = 'button'; b.dataset.part = p; b.textContent = B.part_labels[p];
        b.setAttribute('aria-pressed', String(p === P.part));
        b.addEventListener('click', () => setPart(p));
        parts.appendChild(b);
      }
      const pick = $('s2s-text');
      if (B.texts.length > 1) {
        $('s2s-pick').hidden = false;
        B.texts.forEach((r, i) => {
          const o = document.createElement('option');
          o.value = String(i); o.textContent = (i + 1) + ': ' + r.source + '  \u2192  ' + r.output;
          pick.appendChild(o);
        });
        pick.value = String(P.text);
        pick.addEventListener('change', (e) => setText(+e.target.value));
      }
      for (const b of $('s2s-scale').querySelectorAll('button')) b.addEventListener('click', () => setScale(b.dataset.v));
      fillText();
    }
    function fillText() {  // the source and output characters of the current text
      const rec = B.texts[P.text];
      const src = $('s2s-src'), out = $('s2s-out');
      src.replaceChildren(); out.replaceChildren();
      srcSpans.length = 0; outButtons.length = 0;
      Array.from(rec.source).forEach((ch, j) => {
        const sp = document.createElement('span');
        sp.className = 's2s-c' + (ch === ' ' ? ' sp' : ''); sp.dataset.j = String(j); sp.textContent = esc(ch);
        sp.addEventListener('mousemove', (e) => {
          const w = row(shownStep());
          const box = document.createElement('div');
          const head = document.createElement('div'); head.className = 't-head';
          head.textContent = 'source position ' + j + ' \u00b7 ' + esc(ch);
          box.appendChild(head);
          const v = document.createElement('div'); v.className = 't-val';
          v.textContent = w ? 'attention of output step ' + shownStep() + ': ' + w[j].toPrecision(6) : 'no attention weights';
          box.appendChild(v);
          api.showTip(box, e);
        });
        sp.addEventListener('mouseleave', () => api.hideTip());
        src.appendChild(sp); srcSpans.push(sp);
      });
      for (let k = 0; k < rec.steps; k++) {
        const b = document.createElement('button');
        const g = glyph(k), eos = k >= Array.from(rec.output).length;
        b.type = 'button'; b.className = 's2s-o' + (eos ? ' eos' : '') + (g === ' ' ? ' sp' : ''); b.dataset.k = String(k);
        b.textContent = eos ? 'EOS' : esc(g);
        b.setAttribute('aria-label', 'output step ' + k + ': ' + (eos ? 'end of output' : g));
        b.tabIndex = k === P.pinned ? 0 : -1;  // one tab stop; arrows move inside
        b.addEventListener('mouseenter', (e) => hover(k, e));
        b.addEventListener('mousemove', (e) => api.showTip(tipFor(k), e));
        b.addEventListener('mouseleave', () => hover(-1));
        b.addEventListener('click', () => select(k));
        b.addEventListener('focus', () => { outButtons.forEach((o) => { o.tabIndex = -1; }); b.tabIndex = 0; select(k); });
        b.addEventListener('keydown', (e) => {
          const n = outButtons.length;
          const to = { ArrowRight: k + 1, ArrowLeft: k - 1, Home: 0, End: n - 1 }[e.key];
          if (to === undefined) return;
          e.preventDefault();
          outButtons[Math.max(0, Math.min(n - 1, to))].focus();
        });
        out.appendChild(b); outButtons.push(b);
      }
      for (const b of $('s2s-scale').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.v === P.scale));
      $('s2s-scale').hidden = !att[P.text];
      const note = $('s2s-note');
      note.textContent = B.attention === 'none'
        ? 'This model has no attention (attention="none"): the decoder sees the source only through the encoder\u2019s final state, so there are no attention weights to colour the source by. The encoder and decoder units are below.'
        : 'Colours: the attention weight of the selected output step on each source character, on 0\u20261 (or per row: 0 to the row\u2019s largest weight). Hover a source character for its exact weight.';
      note.classList.toggle('warn', B.attention === 'none');
      colourSource();
    }
    show(P.part);
  }

  if (BLOB.mode === 'seq2seq') seq2seq(BLOB); else mount(BLOB, undefined);
})();
