// Braid live dashboard. Vanilla JS, no dependencies: it polls the public
// HTTP API, subscribes to /v1/views/{view}/live (Server-Sent Events read
// through fetch, so the bearer token can be sent) and draws inline SVG.
'use strict';

(() => {
  const RANGES = { '15m': 15 * 60e3, '1h': 60 * 60e3, '6h': 6 * 60 * 60e3 };
  const TOP = 5;
  const ADDITIVE = new Set(['count', 'sum']);
  const SVGNS = 'http://www.w3.org/2000/svg';
  const STATUS_EVERY = 2000;
  const RUNS_EVERY = 5000;
  const VIEWS_EVERY = 30000;
  const QUERY_EVERY = 5000; // fallback refresh without a live stream
  const QUERY_EVERY_LIVE = 15000; // safety refresh with a live stream
  const ALERTS_EVERY = 3000;

  const store = {
    get(k, d) { try { const v = window.localStorage.getItem(k); return v === null ? d : v; } catch (e) { return d; } },
    set(k, v) { try { if (v === null || v === '') window.localStorage.removeItem(k); else window.localStorage.setItem(k, v); } catch (e) { /* storage may be disabled */ } },
  };

  const state = {
    token: store.get('braid.token', ''),
    range: RANGES[store.get('braid.range', '15m')] ? store.get('braid.range', '15m') : '15m',
    charts: new Map(), // view name -> Chart
    viewsSig: '',
    reachable: null, // null = unknown, true, false
    downSince: 0,
    lastError: '',
    authNeeded: false,
    forbidden: '',
    lastOK: 0,
    prevStatus: null, // {t, accepted: {stream: n}, seq: {stream: n}}
    rates: {}, // stream -> ev/s
    rateHist: [],
    marks: new Map(), // view name -> [{t, alert, state, group, id}]: firings drawn on its chart
  };

  // ---------- small helpers ----------
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const isNum = (x) => typeof x === 'number' && isFinite(x);
  const num = (x) => (isNum(x) ? x : (typeof x === 'string' && x.trim() !== '' && isFinite(+x) ? +x : null));
  const parseTime = (s) => {
    if (s === null || s === undefined || s === '') return 0;
    if (isNum(s)) return s;
    const t = Date.parse(s);
    return isNaN(t) ? 0 : t;
  };
  const iso = (ms) => new Date(ms).toISOString().replace(/\.000Z$/, 'Z');
  const pad = (n) => String(n).padStart(2, '0');
  const hhmm = (ms) => { const d = new Date(ms); return pad(d.getHours()) + ':' + pad(d.getMinutes()); };
  const hhmmss = (ms) => { const d = new Date(ms); return hhmm(ms) + ':' + pad(d.getSeconds()); };
  const nf0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const nf2 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
  const nfc = new Intl.NumberFormat('en-US', { notation: 'compact', maximumSignificantDigits: 3 });
  function fmtNum(v) {
    if (!isNum(v)) return '–';
    const a = Math.abs(v);
    if (a >= 1e6) return nfc.format(v);
    if (a >= 100 || Number.isInteger(v)) return nf0.format(v);
    if (a >= 1) return nf2.format(v);
    if (a === 0) return '0';
    return v.toPrecision(2);
  }
  function ago(ms) {
    if (!ms) return '';
    let s = Math.round((Date.now() - ms) / 1000);
    const fut = s < 0;
    s = Math.abs(s);
    let out;
    if (s < 60) out = s + 's';
    else if (s < 3600) out = Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    else if (s < 86400) out = Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    else out = Math.floor(s / 86400) + 'd';
    return fut ? 'in ' + out : out + ' ago';
  }
  function fmtMs(ms) {
    if (!isNum(ms)) return '–';
    if (ms < 1000) return Math.round(ms) + 'ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + 's';
    return Math.floor(ms / 60000) + 'm' + pad(Math.round((ms % 60000) / 1000)) + 's';
  }
  // Go-style durations as the API renders them: 1d, 1h30m, 10s, 250ms.
  function parseDur(s) {
    if (isNum(s)) return s;
    if (typeof s !== 'string') return 0;
    const re = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/g;
    const unit = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };
    let total = 0;
    let m;
    while ((m = re.exec(s)) !== null) total += parseFloat(m[1]) * unit[m[2]];
    return total;
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---------- API ----------
  class APIError extends Error {
    constructor(status, body) {
      const msg = body && typeof body === 'object' && body.error ? body.error + (body.detail ? ': ' + (typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail)) : '') : 'HTTP ' + status;
      super(msg);
      this.status = status;
    }
  }

  function authHeaders(h) {
    const out = Object.assign({}, h || {});
    if (state.token) out.Authorization = 'Bearer ' + state.token;
    return out;
  }

  async function api(path, signal) {
    let resp;
    try {
      resp = await fetch(path, { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store', signal });
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      setReachable(false, e && e.message ? e.message : String(e));
      throw new APIError(0, { error: 'API unreachable' });
    }
    if (resp.status === 502 || resp.status === 504) {
      setReachable(false, 'gateway answered ' + resp.status);
      throw new APIError(resp.status, null);
    }
    setReachable(true);
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401) { needAuth('The API answered 401: a token is required.'); throw new APIError(401, body); }
    if (resp.status === 403) { state.forbidden = (body && body.error) || 'forbidden'; updateBanner(); throw new APIError(403, body); }
    if (!resp.ok) throw new APIError(resp.status, body);
    if (state.authNeeded) authOK();
    state.forbidden = '';
    state.lastOK = Date.now();
    return body || {};
  }

  function setReachable(ok, why) {
    if (ok) {
      if (state.reachable === false) state.downSince = 0;
      state.reachable = true;
      state.lastError = '';
    } else {
      if (state.reachable !== false) state.downSince = Date.now();
      state.reachable = false;
      state.lastError = why || '';
    }
    updateBanner();
    updatePill();
  }

  function updateBanner() {
    const b = $('banner');
    let msg = '';
    let warn = false;
    if (state.reachable === false) {
      msg = 'API unreachable since ' + hhmmss(state.downSince) + ' (' + ago(state.downSince) + ') — retrying every few seconds.';
      if (state.lastError) msg += ' Last error: ' + state.lastError + '.';
      if (state.lastOK) msg += ' Figures below are from ' + hhmmss(state.lastOK) + '.';
    } else if (state.forbidden) {
      msg = 'The token lacks a scope this page needs (403: ' + state.forbidden + '). Some panels stay empty.';
      warn = true;
    }
    b.textContent = msg;
    b.classList.toggle('warn', warn);
    document.body.classList.toggle('stale', state.reachable === false);
    b.hidden = msg === '';
  }

  function updatePill() {
    const p = $('conn');
    let cls = 'pill-wait';
    let text = 'connecting…';
    const anyLive = [...state.charts.values()].some((c) => c.liveConnected);
    if (state.reachable === false) { cls = 'pill-bad'; text = 'offline'; }
    else if (state.authNeeded) { cls = 'pill-bad'; text = 'token needed'; }
    else if (state.reachable) {
      if (anyLive) { cls = 'pill-ok'; text = 'live'; }
      else { cls = 'pill-poll'; text = 'polling'; }
    }
    p.className = 'pill ' + cls;
    p.textContent = text;
    p.title = anyLive ? 'live updates over Server-Sent Events, plus a periodic query' : 'periodic queries every ' + QUERY_EVERY / 1000 + 's';
  }

  // ---------- auth ----------
  function needAuth(msg) {
    const first = !state.authNeeded;
    state.authNeeded = true;
    $('auth').hidden = false;
    $('auth-msg').textContent = (state.token ? 'The stored token was refused (401). ' : msg + ' ') +
      'Paste a token with read scopes; it is kept in this browser (localStorage) and sent as Authorization: Bearer.';
    if (first) { try { $('auth-token').focus(); } catch (e) { /* ignore */ } }
    updatePill();
  }
  function authOK() {
    state.authNeeded = false;
    $('auth').hidden = true;
    updatePill();
  }
  function setupAuth() {
    $('auth-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.token = $('auth-token').value.trim();
      store.set('braid.token', state.token);
      $('auth-token').value = '';
      state.authNeeded = false;
      $('auth').hidden = true;
      kickAll();
    });
    $('auth-clear').addEventListener('click', () => {
      state.token = '';
      store.set('braid.token', '');
      $('auth-token').value = '';
      kickAll();
    });
  }

  // ---------- range selector ----------
  function setupRange() {
    const seg = $('range');
    const paint = () => {
      for (const b of seg.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.range === state.range));
    };
    seg.addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-range]');
      if (!b || !RANGES[b.dataset.range] || b.dataset.range === state.range) return;
      state.range = b.dataset.range;
      store.set('braid.range', state.range);
      paint();
      for (const c of state.charts.values()) { c.rangeChanged(); }
    });
    paint();
  }

  // ---------- views ----------
  // Tolerant reading of GET /v1/views: {"views":[...]} or a map, measures as
  // objects, strings or a map name -> kind/expression.
  function normViews(body) {
    let list = body && body.views !== undefined ? body.views : body;
    if (list && !Array.isArray(list) && typeof list === 'object') {
      list = Object.entries(list).map(([name, v]) => Object.assign({ name }, v));
    }
    if (!Array.isArray(list)) return [];
    const out = [];
    for (const v of list) {
      if (!v || typeof v !== 'object' || !v.name) continue;
      let ms = v.measures || [];
      if (!Array.isArray(ms) && typeof ms === 'object') {
        ms = Object.entries(ms).map(([name, k]) => ({ name, kind: typeof k === 'string' ? k : (k && k.kind) || '' }));
      }
      const measures = [];
      for (const m of ms) {
        if (typeof m === 'string') measures.push({ name: m, kind: '' });
        else if (m && m.name) measures.push({ name: String(m.name), kind: String(m.kind || '').replace(/\(.*$/, '').toLowerCase(), exact: m.exact !== false });
      }
      const window = parseDur(v.window) || 60e3;
      const step = parseDur(v.step) || parseDur(v.hop) || window;
      out.push({ name: String(v.name), stream: v.stream || '', window, windowText: v.window || '', step, dims: Array.isArray(v.dims) ? v.dims : (Array.isArray(v.group_by) ? v.group_by : []), measures, exact: v.exact !== false, tier: v.tier === 'batch' ? 'batch' : 'live' });
    }
    return out;
  }

  async function pollViews() {
    for (;;) {
      if (!state.authNeeded) {
        try {
          const views = normViews(await api('/v1/views'));
          const sig = JSON.stringify(views);
          if (sig !== state.viewsSig) { state.viewsSig = sig; syncCharts(views); }
          await sleep(VIEWS_EVERY);
          continue;
        } catch (e) { /* shown by the banner; retry soon */ }
      }
      await sleep(3000);
    }
  }

  function syncCharts(views) {
    const main = $('charts');
    const keep = new Set(views.map((v) => v.name));
    for (const [name, c] of state.charts) {
      if (!keep.has(name)) { c.destroy(); state.charts.delete(name); }
    }
    for (const v of views) {
      const c = state.charts.get(v.name);
      if (c) { c.updateView(v); main.appendChild(c.root); continue; }
      const nc = new Chart(v);
      state.charts.set(v.name, nc);
      main.appendChild(nc.root);
      nc.start();
    }
    $('empty').hidden = views.length > 0;
    updatePill();
  }

  function kickAll() {
    for (const c of state.charts.values()) c.rangeChanged();
    if (state.charts.size === 0) state.viewsSig = '';
    pollers.wake();
  }

  // ---------- live stream (SSE over fetch) ----------
  // The first chart probes the endpoint; if it is missing (404/405/501 or not
  // an event stream) no chart tries again for a minute: the periodic query
  // keeps the page current either way.
  // Browsers allow about six HTTP/1.1 connections per host and every stream
  // holds one, so at most MAX_LIVE charts subscribe; the others poll.
  const MAX_LIVE = 3;
  const live = { ok: false, deniedUntil: 0, probing: null, done: null, active: 0 };
  function liveClaim() {
    if (live.active >= MAX_LIVE) return 'full';
    if (live.ok) return 'go';
    if (Date.now() < live.deniedUntil) return 'no';
    if (live.probing) return 'wait';
    live.probing = new Promise((r) => { live.done = r; });
    return 'probe';
  }
  function liveProbeDone() {
    if (live.done) { const d = live.done; live.done = null; live.probing = null; d(); }
  }

  function parseSSE(chunk, st, dispatch) {
    st.buf += chunk;
    for (;;) {
      const i = st.buf.search(/\r\n|\r|\n/);
      if (i < 0) break;
      const nl = st.buf[i] === '\r' && st.buf[i + 1] === '\n' ? 2 : 1;
      if (st.buf[i] === '\r' && i + 1 === st.buf.length) break; // wait: \r\n may be split
      const line = st.buf.slice(0, i);
      st.buf = st.buf.slice(i + nl);
      if (line === '') {
        if (st.data.length) dispatch(st.event || 'message', st.data.join('\n'));
        st.event = '';
        st.data = [];
        continue;
      }
      if (line[0] === ':') continue;
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? '' : line.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') st.event = value;
      else if (field === 'data') st.data.push(value);
    }
  }

  // ---------- charts ----------
  class Chart {
    constructor(view) {
      this.view = view;
      this.rows = new Map();
      this.cutoff = 0;
      this.watermark = 0;
      this.from = 0;
      this.to = 0;
      this.gen = 0;
      this.timer = 0;
      this.dead = false;
      this.liveConnected = false;
      this.liveCtrl = null;
      this.queryCtrl = null;
      this.renders = 0;
      this.liveEvents = 0;
      this.error = '';
      this.loaded = false;
      this.renderPending = false;
      this.measure = this.pickMeasure(store.get('braid.measure.' + view.name, ''));
      this.build();
    }

    pickMeasure(want) {
      const ms = this.view.measures;
      if (ms.some((m) => m.name === want)) return want;
      return ms.length ? ms[0].name : '';
    }

    measureInfo() { return this.view.measures.find((m) => m.name === this.measure) || { name: this.measure, kind: '' }; }

    build() {
      const v = this.view;
      const root = el('section', 'chart');
      root.dataset.view = v.name;
      const head = el('div', 'chart-head');
      const title = el('div', 'chart-title', v.name);
      this.metaEl = el('span', 'meta');
      title.appendChild(this.metaEl);
      const tools = el('div', 'chart-tools');
      this.liveEl = el('span', 'pill pill-wait live', '…');
      this.select = el('select');
      this.select.setAttribute('aria-label', 'measure of ' + v.name);
      this.select.addEventListener('change', () => {
        this.measure = this.select.value;
        store.set('braid.measure.' + v.name, this.measure);
        this.scheduleRender();
      });
      tools.append(this.liveEl, this.select);
      head.append(title, tools);
      this.latestEl = el('div', 'chart-latest');
      this.plot = el('div', 'plot');
      this.svg = svg('svg', { class: 'chart-svg', role: 'img', 'aria-label': 'time series of ' + v.name });
      this.svg.dataset.view = v.name;
      this.msg = el('div', 'msg', 'loading…');
      this.tip = el('div', 'tip');
      this.tip.hidden = true;
      this.plot.append(this.svg, this.msg, this.tip);
      this.legend = el('div', 'legend');
      root.append(head, this.latestEl, this.plot, this.legend);
      this.root = root;
      this.fillSelect();
      this.paintMeta();
      this.plot.addEventListener('mousemove', (ev) => this.hover(ev));
      this.plot.addEventListener('mouseleave', () => { this.tip.hidden = true; this.hoverX = null; this.scheduleRender(); });
      if (typeof ResizeObserver === 'function') {
        this.ro = new ResizeObserver(() => this.scheduleRender());
        this.ro.observe(this.plot);
      }
    }

    fillSelect() {
      this.select.textContent = '';
      for (const m of this.view.measures) {
        const o = el('option', '', m.name + (m.kind ? ' · ' + m.kind : ''));
        o.value = m.name;
        this.select.appendChild(o);
      }
      this.select.value = this.measure;
    }

    paintMeta() {
      const v = this.view;
      const parts = [];
      if (v.stream) parts.push(v.stream);
      if (v.windowText) parts.push(v.windowText + ' windows');
      if (v.dims.length) parts.push('by ' + v.dims.join(', '));
      if (v.tier === 'batch') parts.push('batch tier: batch layer only');
      this.metaEl.textContent = parts.join(' · ');
    }

    updateView(v) {
      this.view = v;
      this.measure = this.pickMeasure(this.measure);
      this.fillSelect();
      this.paintMeta();
      this.rangeChanged();
    }

    start() {
      this.schedule(0);
      this.liveLoop();
    }

    destroy() {
      this.dead = true;
      clearTimeout(this.timer);
      if (this.liveCtrl) this.liveCtrl.abort();
      if (this.queryCtrl) this.queryCtrl.abort();
      if (this.ro) this.ro.disconnect();
      this.root.remove();
    }

    rangeChanged() {
      this.gen++;
      if (this.queryCtrl) this.queryCtrl.abort();
      if (this.liveCtrl) this.liveCtrl.abort();
      // The old rows stay on screen until the new range's answer arrives.
      this.schedule(0);
      this.scheduleRender();
    }

    span() {
      const step = this.view.step;
      const now = Date.now();
      const to = (Math.floor(now / step) + 1) * step;
      const from = Math.floor((now - RANGES[state.range]) / step) * step;
      return { from, to };
    }

    schedule(ms) {
      clearTimeout(this.timer);
      if (this.dead) return;
      this.timer = setTimeout(() => { this.refresh(); }, ms);
    }

    async refresh() {
      if (this.dead) return;
      if (state.authNeeded) { this.schedule(QUERY_EVERY); return; }
      const gen = this.gen;
      const { from, to } = this.span();
      const ctrl = new AbortController();
      if (this.queryCtrl) this.queryCtrl.abort();
      this.queryCtrl = ctrl;
      try {
        const body = await api('/v1/views/' + encodeURIComponent(this.view.name) + '?from=' + encodeURIComponent(iso(from)) + '&to=' + encodeURIComponent(iso(to)), ctrl.signal);
        if (gen !== this.gen || this.dead) return;
        const rows = new Map();
        for (const r of Array.isArray(body.rows) ? body.rows : []) this.put(rows, r);
        this.rows = rows;
        this.cutoff = parseTime(body.batch_cutoff);
        this.watermark = parseTime(body.watermark);
        this.from = from;
        this.to = to;
        this.error = '';
        this.loaded = true;
        this.warnings = Array.isArray(body.warnings) ? body.warnings : [];
        document.getElementById('updated').textContent = 'updated ' + hhmmss(Date.now());
      } catch (e) {
        if (e && e.name === 'AbortError') return;
        if (gen !== this.gen) return;
        this.error = e.status === 0 ? 'API unreachable' : (e.message || String(e));
      } finally {
        if (this.queryCtrl === ctrl) this.queryCtrl = null;
      }
      this.scheduleRender();
      if (gen === this.gen) this.schedule(this.liveConnected ? QUERY_EVERY_LIVE : QUERY_EVERY);
    }

    key(r) {
      let k = String(r.window_start);
      for (const d of this.view.dims) k += '\x1f' + (r[d] === undefined ? '' : String(r[d]));
      return k;
    }

    put(map, r) {
      if (!r || typeof r !== 'object' || r.window_start === undefined) return;
      const t = parseTime(r.window_start);
      if (!t) return;
      r._t = t;
      map.set(this.key(r), r);
    }

    applyLive(rows, final) {
      if (!Array.isArray(rows)) rows = rows && Array.isArray(rows.rows) ? rows.rows : (rows && typeof rows === 'object' ? [rows] : []);
      let n = 0;
      for (const r of rows) {
        if (!r || typeof r !== 'object' || r.window_start === undefined) continue;
        if (final && r.final === undefined) r.final = true;
        if (r.batch_cutoff !== undefined) this.cutoff = parseTime(r.batch_cutoff);
        this.put(this.rows, r);
        n++;
      }
      if (n) {
        this.liveEvents += n;
        document.getElementById('updated').textContent = 'updated ' + hhmmss(Date.now());
        this.scheduleRender();
      }
    }

    setLive(on) {
      if (this.liveConnected === on) return;
      this.liveConnected = on;
      this.paintLive();
      updatePill();
    }

    paintLive() {
      if (this.liveConnected) { this.liveEl.className = 'pill pill-ok live'; this.liveEl.textContent = 'live'; this.liveEl.title = 'Server-Sent Events from /live'; }
      else { this.liveEl.className = 'pill pill-poll live'; this.liveEl.textContent = 'poll'; this.liveEl.title = 'refreshed by a query every ' + QUERY_EVERY / 1000 + 's'; }
    }

    async liveLoop() {
      this.paintLive();
      let backoff = 1000;
      while (!this.dead) {
        if (state.authNeeded || state.reachable === false) { await sleep(3000); continue; }
        const claim = liveClaim();
        if (claim === 'no' || claim === 'full') { await sleep(10000); continue; }
        if (claim === 'wait') { await live.probing; continue; }
        const probing = claim === 'probe';
        live.active++;
        const ctrl = new AbortController();
        this.liveCtrl = ctrl;
        const { from } = this.span();
        const step = this.view.step;
        const to = (Math.floor((Date.now() + 30 * 60e3) / step) + 1) * step;
        // Reconnect every few minutes so the subscribed range slides on.
        const slide = setTimeout(() => ctrl.abort(), 5 * 60e3);
        let connected = false;
        try {
          const resp = await fetch('/v1/views/' + encodeURIComponent(this.view.name) + '/live?from=' + encodeURIComponent(iso(from)) + '&to=' + encodeURIComponent(iso(to)),
            { headers: authHeaders({ Accept: 'text/event-stream' }), cache: 'no-store', signal: ctrl.signal });
          const ctype = resp.headers.get('Content-Type') || '';
          if (resp.status === 401) {
            needAuth('The API answered 401: a token is required.');
          } else if (resp.status === 404 || resp.status === 405 || resp.status === 501 || (resp.ok && !ctype.includes('text/event-stream'))) {
            live.ok = false;
            live.deniedUntil = Date.now() + 60e3;
          } else if (resp.ok && resp.body) {
            live.ok = true;
            if (probing) liveProbeDone();
            connected = true;
            backoff = 1000;
            this.setLive(true);
            const reader = resp.body.getReader();
            const dec = new TextDecoder();
            const st = { buf: '', event: '', data: [] };
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              parseSSE(dec.decode(value, { stream: true }), st, (event, data) => this.onLive(event, data));
            }
          }
          if (resp.body && !connected) { try { await resp.body.cancel(); } catch (e) { /* ignore */ } }
        } catch (e) {
          // aborted (range change, slide) or network trouble: reconnect below
        } finally {
          clearTimeout(slide);
          live.active--;
          if (probing) liveProbeDone();
          if (this.liveCtrl === ctrl) this.liveCtrl = null;
          this.setLive(false);
        }
        if (this.dead) return;
        if (!connected) { await sleep(backoff); backoff = Math.min(backoff * 2, 30000); }
        else await sleep(250);
      }
    }

    onLive(event, data) {
      if (event !== 'rows' && event !== 'final' && event !== 'message') return;
      let parsed;
      try { parsed = JSON.parse(data); } catch (e) { return; }
      this.applyLive(parsed, event === 'final');
      if (event === 'final' && parsed && !Array.isArray(parsed) && parsed.window_start === undefined) this.schedule(200);
    }

    scheduleRender() {
      if (this.renderPending || this.dead) return;
      this.renderPending = true;
      setTimeout(() => { this.renderPending = false; try { this.render(); } catch (e) { this.msg.textContent = 'render error: ' + e.message; this.msg.hidden = false; } }, 30);
    }

    // series computes the plotted lines: the top groups by the measure over
    // the range, plus "other" for additive measures.
    series() {
      const m = this.measureInfo();
      const additive = ADDITIVE.has(m.kind);
      const { from, to } = this.loaded ? { from: this.from, to: this.to } : this.span();
      const dims = this.view.dims;
      const groups = new Map(); // label -> {points: Map(t -> v), weight}
      let rowsN = 0;
      let total = 0;
      const perWindow = new Map();
      for (const r of this.rows.values()) {
        if (r._t < from || r._t >= to) continue;
        const v = num(r[m.name]);
        rowsN++;
        if (v === null) continue;
        total += v;
        perWindow.set(r._t, (perWindow.get(r._t) || 0) + v);
        const label = dims.length ? dims.map((d) => (r[d] === null || r[d] === undefined ? '∅' : String(r[d]))).join(' · ') : 'all';
        let g = groups.get(label);
        if (!g) { g = { label, points: new Map(), weight: 0 }; groups.set(label, g); }
        g.points.set(r._t, v);
        g.weight += Math.abs(v);
      }
      const sorted = [...groups.values()].sort((a, b) => b.weight - a.weight || (a.label < b.label ? -1 : 1));
      const top = sorted.slice(0, TOP);
      const rest = sorted.slice(TOP);
      const lines = top.map((g, i) => ({ label: g.label, points: g.points, cls: 's' + i, sw: 'c' + i }));
      if (rest.length && additive) {
        const pts = new Map();
        for (const g of rest) for (const [t, v] of g.points) pts.set(t, (pts.get(t) || 0) + v);
        lines.push({ label: 'other (' + rest.length + ')', points: pts, cls: 's5 other', sw: 'c5', other: true });
      }
      // For counts and sums a missing window means zero: fill the gaps up to
      // the current window so lines do not jump across empty minutes.
      const step = this.view.step;
      const now = Date.now();
      const out = [];
      let nPoints = 0;
      for (const l of lines) {
        const pts = [];
        if (additive) {
          const first = Math.min(...l.points.keys());
          for (let t = Math.max(from, Math.floor(first / step) * step); t < to && t <= now; t += step) pts.push([t, l.points.get(t) || 0, l.points.has(t)]);
          for (const [t, v] of l.points) if (t > now) pts.push([t, v, true]);
        } else {
          for (const [t, v] of l.points) pts.push([t, v, true]);
        }
        pts.sort((a, b) => a[0] - b[0]);
        nPoints += l.points.size;
        out.push(Object.assign({}, l, { pts }));
      }
      let latestT = 0;
      for (const t of perWindow.keys()) if (t > latestT && t <= now) latestT = t;
      return { lines: out, from, to, additive, total, rowsN, nPoints, perWindow, latestT, groups: groups.size, hidden: rest.length };
    }

    render() {
      if (this.dead) return;
      this.renders++;
      const W = Math.max(200, Math.round(this.plot.clientWidth || 600));
      const H = Math.max(120, Math.round(this.plot.clientHeight || 260));
      const s = this.series();
      const m = this.measureInfo();
      const g = this.svg;
      g.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
      g.textContent = '';
      const L = 58, R = 14, T = 24, B = 26;
      const pw = W - L - R, ph = H - T - B;
      const x = (t) => L + ((t - s.from) / (s.to - s.from)) * pw;
      // y scale
      let lo = 0, hi = 0;
      let any = false;
      for (const l of s.lines) for (const p of l.pts) { if (!any) { lo = Math.min(0, p[1]); hi = p[1]; any = true; } lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
      if (!any || hi === lo) { hi = lo + 1; }
      const ticks = niceTicks(lo, hi, 4);
      lo = Math.min(lo, ticks[0]);
      hi = Math.max(hi, ticks[ticks.length - 1]);
      const y = (v) => T + ph - ((v - lo) / (hi - lo)) * ph;

      // zones: batch (exact) before the cutoff, speed after it
      const xc = this.cutoff ? Math.max(L, Math.min(L + pw, x(this.cutoff))) : L;
      if (this.cutoff && xc > L) {
        g.appendChild(svg('rect', { class: 'zone-batch', x: L, y: T, width: xc - L, height: ph }));
        if (xc - L > 110) g.appendChild(svg('text', { class: 'zone-label batch', x: L + 6, y: T - 8 }, 'exact (batch)'));
      }
      if (xc < L + pw) {
        g.appendChild(svg('rect', { class: 'zone-speed', x: xc, y: T, width: L + pw - xc, height: ph }));
        if (L + pw - xc > 60) g.appendChild(svg('text', { class: 'zone-label speed', x: L + pw - 6, y: T - 8, 'text-anchor': 'end' }, this.cutoff ? 'speed' : 'speed · no batch run yet'));
      }
      // grid + y labels
      for (const tv of ticks) {
        const yy = Math.round(y(tv)) + 0.5;
        g.appendChild(svg('line', { class: 'grid', x1: L, x2: L + pw, y1: yy, y2: yy }));
        g.appendChild(svg('text', { class: 'axis', x: L - 8, y: yy + 4, 'text-anchor': 'end' }, fmtNum(tv)));
      }
      // x labels
      const span = s.to - s.from;
      const steps = [60e3, 2 * 60e3, 5 * 60e3, 10 * 60e3, 15 * 60e3, 30 * 60e3, 3600e3, 2 * 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3];
      const maxLabels = Math.max(2, Math.floor(pw / 70));
      let xs = steps.find((st) => span / st <= maxLabels) || steps[steps.length - 1];
      const tzOff = new Date(s.from).getTimezoneOffset() * 60e3;
      for (let t = Math.ceil((s.from - tzOff) / xs) * xs + tzOff; t <= s.to; t += xs) {
        const xx = Math.round(x(t)) + 0.5;
        g.appendChild(svg('line', { class: 'grid', x1: xx, x2: xx, y1: T + ph, y2: T + ph + 5 }));
        g.appendChild(svg('text', { class: 'axis', x: xx, y: H - 6, 'text-anchor': 'middle' }, hhmm(t)));
      }
      // cutoff and watermark markers
      if (this.cutoff && this.cutoff > s.from && this.cutoff <= s.to) {
        const l = svg('line', { class: 'cutoff', x1: xc, x2: xc, y1: T - 4, y2: T + ph });
        l.appendChild(svg('title', {}, 'batch cutoff ' + hhmmss(this.cutoff) + ' (arrival time): before it the rows are exact batch results, after it the speed layer adds on top'));
        g.appendChild(l);
      }
      if (this.watermark && this.watermark > s.from && this.watermark <= s.to) {
        const xw = x(this.watermark);
        const l = svg('line', { class: 'wm', x1: xw, x2: xw, y1: T, y2: T + ph });
        l.appendChild(svg('title', {}, 'watermark ' + hhmmss(this.watermark) + ': windows before it are final'));
        g.appendChild(l);
        g.appendChild(svg('text', { class: 'wm-label', x: xw - 4, y: T + 14, 'text-anchor': 'end' }, 'watermark'));
      }
      // alert firings: a marker at each window that fired (its state's
      // colour), the alert, group and id in its title
      let nMarks = 0;
      const marks = (state.marks.get(this.view.name) || []).filter((mk) => mk.t >= s.from && mk.t < s.to);
      const stacked = new Map();
      for (const mk of marks) {
        const xm = x(mk.t + this.view.step / 2);
        const k = Math.round(xm);
        const n = stacked.get(k) || 0;
        stacked.set(k, n + 1);
        const ym = T + 4 + n * 9;
        if (n === 0) g.appendChild(svg('line', { class: 'alert-line ' + mk.state, x1: xm.toFixed(1), x2: xm.toFixed(1), y1: T, y2: T + ph }));
        const tri = svg('path', { class: 'alert-mark ' + mk.state, d: 'M' + (xm - 6).toFixed(1) + ' ' + (ym - 5) + 'L' + (xm + 6).toFixed(1) + ' ' + (ym - 5) + 'L' + xm.toFixed(1) + ' ' + (ym + 5) + 'Z' });
        tri.dataset.alert = mk.alert;
        tri.dataset.state = mk.state;
        tri.appendChild(svg('title', {}, mk.alert + ' ' + mk.state + ' · ' + (mk.group || 'all') + ' · window ' + hhmmss(mk.t) + '\n' + mk.id));
        g.appendChild(tri);
        nMarks++;
      }
      // lines
      for (const l of s.lines) {
        if (!l.pts.length) continue;
        let d = '';
        let prev = null;
        for (const p of l.pts) {
          const gap = !s.additive && prev !== null && p[0] - prev > this.view.step * 1.5;
          d += (d === '' || gap ? 'M' : 'L') + x(p[0]).toFixed(1) + ' ' + y(p[1]).toFixed(1);
          prev = p[0];
        }
        const path = svg('path', { class: 'series ' + l.cls, d });
        path.dataset.group = l.label;
        path.dataset.points = String(l.points.size);
        g.appendChild(path);
        const lp = l.pts[l.pts.length - 1];
        g.appendChild(svg('circle', { class: 'dot ' + l.cls, cx: x(lp[0]).toFixed(1), cy: y(lp[1]).toFixed(1), r: 4 }));
      }
      // hover guide
      if (this.hoverX !== null && this.hoverX !== undefined && this.hoverT) {
        const xx = x(this.hoverT);
        g.appendChild(svg('line', { class: 'guide', x1: xx, x2: xx, y1: T, y2: T + ph }));
      }
      this.lastSeries = s;
      this.lastGeom = { L, pw, from: s.from, to: s.to };

      // data attributes for tests and scripts
      const latest = s.latestT ? s.perWindow.get(s.latestT) : null;
      const ds = g.dataset;
      ds.measure = m.name;
      ds.loaded = String(this.loaded);
      ds.rows = String(s.rowsN);
      ds.points = String(s.nPoints);
      ds.total = String(s.total);
      ds.latest = latest === null || latest === undefined ? '' : String(latest);
      ds.latestWindow = s.latestT ? iso(s.latestT) : '';
      ds.cutoff = this.cutoff ? iso(this.cutoff) : '';
      ds.watermark = this.watermark ? iso(this.watermark) : '';
      ds.groups = String(s.groups);
      ds.alertMarks = String(nMarks);
      ds.live = String(this.liveConnected);
      ds.liveEvents = String(this.liveEvents);
      ds.renders = String(this.renders);

      // message overlay
      let msg = '';
      let err = false;
      if (this.error) { msg = this.error; err = true; }
      else if (!this.loaded) msg = 'loading…';
      else if (s.rowsN === 0) msg = 'no events in the last ' + state.range;
      this.msg.textContent = msg;
      this.msg.classList.toggle('err', err);
      this.msg.hidden = msg === '';

      // headline number
      this.latestEl.textContent = '';
      if (s.latestT) {
        let v = latest;
        let unit = s.additive ? m.name + ' in the ' + hhmm(s.latestT) + ' window' : m.name + ' · top group, ' + hhmm(s.latestT);
        if (!s.additive) {
          const first = s.lines[0];
          v = first ? first.points.get(s.latestT) : null;
          if (!isNum(v)) { v = null; unit = m.name; }
        }
        this.latestEl.append(document.createTextNode(fmtNum(v)), el('span', 'u', unit));
      } else {
        this.latestEl.append(document.createTextNode('–'), el('span', 'u', m.name));
      }

      // legend with each line's newest value
      this.legend.textContent = '';
      for (const l of s.lines) {
        const it = el('span', 'item');
        const last = [...l.points.keys()].filter((t) => t <= Date.now()).sort((a, b) => b - a)[0];
        it.append(el('span', 'sw ' + l.sw), el('span', 'g', l.label), el('span', 'val', last !== undefined ? fmtNum(l.points.get(last)) : '–'));
        it.title = l.label;
        this.legend.appendChild(it);
      }
      if (s.hidden && !s.additive) this.legend.appendChild(el('span', 'item muted', '+' + s.hidden + ' more groups'));
      if (this.warnings && this.warnings.length) this.legend.appendChild(el('span', 'item muted', '⚠ ' + this.warnings.join('; ')));
    }

    hover(ev) {
      const s = this.lastSeries;
      const gm = this.lastGeom;
      if (!s || !gm) return;
      const rect = this.plot.getBoundingClientRect();
      const px = ev.clientX - rect.left;
      const W = Math.max(200, Math.round(this.plot.clientWidth || 600));
      const vx = (px / rect.width) * W;
      if (vx < gm.L || vx > gm.L + gm.pw) { this.tip.hidden = true; return; }
      const step = this.view.step;
      const t = Math.floor((gm.from + ((vx - gm.L) / gm.pw) * (gm.to - gm.from)) / step) * step;
      this.hoverX = px;
      this.hoverT = t;
      this.tip.textContent = '';
      this.tip.appendChild(el('div', 't', hhmmss(t) + ' – ' + hhmmss(t + this.view.window)));
      for (const l of s.lines) {
        const r = el('div', 'r');
        r.append(el('span', '', l.label), el('b', '', fmtNum(l.points.has(t) ? l.points.get(t) : (s.additive ? 0 : null))));
        this.tip.appendChild(r);
      }
      this.tip.hidden = false;
      const tw = this.tip.offsetWidth;
      this.tip.style.left = Math.max(0, Math.min(rect.width - tw, px + 12)) + 'px';
      this.tip.style.top = '8px';
      this.scheduleRender();
    }
  }

  function niceTicks(lo, hi, n) {
    const span = hi - lo;
    const raw = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    const out = [];
    for (let v = Math.floor(lo / step) * step; v <= hi + step * 0.5; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : +v.toPrecision(12));
      if (v >= hi) break;
    }
    return out.length >= 2 ? out : [lo, hi];
  }

  // ---------- status strip ----------
  function sumField(streams, f) {
    let s = 0, any = false;
    for (const st of Object.values(streams)) { const v = num(f(st)); if (v !== null) { s += v; any = true; } }
    return any ? s : null;
  }

  function renderStatus(body) {
    const streams = body && body.streams && typeof body.streams === 'object' ? body.streams : {};
    const t = parseTime(body.time) || Date.now();
    const acc = {}, seq = {};
    for (const [name, st] of Object.entries(streams)) {
      acc[name] = num(st.accepted);
      seq[name] = st.log && typeof st.log === 'object' ? num(st.log.last_seq) : null;
    }
    const prev = state.prevStatus;
    if (prev && t > prev.t) {
      const dt = (t - prev.t) / 1000;
      for (const name of Object.keys(streams)) {
        // Prefer the events the log holds (accepted, the same from every
        // process); fall back to the log's last sequence (log records).
        let d = null;
        if (acc[name] !== null && prev.acc[name] !== null && prev.acc[name] !== undefined && acc[name] >= prev.acc[name]) d = acc[name] - prev.acc[name];
        if ((d === null || d === 0) && seq[name] !== null && prev.seq[name] !== null && prev.seq[name] !== undefined && seq[name] >= prev.seq[name]) d = Math.max(d || 0, seq[name] - prev.seq[name]);
        const r = d === null ? null : d / dt;
        const old = state.rates[name];
        state.rates[name] = r === null ? null : (isNum(old) ? old * 0.4 + r * 0.6 : r);
      }
    }
    state.prevStatus = { t, acc, seq };

    const totalRate = sumField(Object.fromEntries(Object.keys(streams).map((k) => [k, { r: state.rates[k] }])), (s) => s.r);
    setK('rate', totalRate === null ? '–' : fmtNum(totalRate >= 10 ? Math.round(totalRate) : Math.round(totalRate * 10) / 10));
    const accepted = sumField(streams, (s) => s.accepted);
    setK('accepted', fmtNum(accepted) + ' accepted');
    if (totalRate !== null) {
      state.rateHist.push(totalRate);
      if (state.rateHist.length > 60) state.rateHist.shift();
      drawSpark($('rate-spark'), state.rateHist);
    }
    const lag = maxField(streams, (s) => s.speed && s.speed.lag);
    const alag = maxField(streams, (s) => s.archive && s.archive.lag);
    setK('lag', lag === null ? '–' : fmtNum(lag));
    setK('archlag', 'archiver lag ' + (alag === null ? '–' : fmtNum(alag)));
    $('t-lag').classList.toggle('caution', lag !== null && lag > 1000);
    const dlq = sumField(streams, (s) => s.dead_letters);
    setK('dlq', dlq === null ? '–' : fmtNum(dlq));
    $('t-dlq').classList.toggle('alert', dlq !== null && dlq > 0);
    setK('rejected', fmtNum(sumField(streams, (s) => s.rejected)) + ' rejected, kept for replay');
    const late = sumField(streams, (s) => s.late);
    setK('late', late === null ? '–' : fmtNum(late));
    $('t-late').classList.toggle('caution', late !== null && late > 0);

    // batch cutoff: the oldest among the views that have one
    const cut = [];
    const b = body.batch && typeof body.batch === 'object' ? body.batch : {};
    const cutoffs = b.cutoffs && typeof b.cutoffs === 'object' ? b.cutoffs : {};
    for (const v of Object.values(cutoffs)) { const c = parseTime(v); if (c) cut.push(c); }
    if (!cut.length && body.views) for (const v of Object.values(body.views)) { const c = parseTime(v && v.batch_cutoff); if (c) cut.push(c); }
    if (cut.length) {
      const lo = Math.min(...cut), hi = Math.max(...cut);
      setK('cutoff', hhmmss(lo));
      setK('cutoffago', ago(lo) + (hi !== lo ? ' · newest ' + hhmmss(hi) : '') + ' · ' + cut.length + ' view' + (cut.length > 1 ? 's' : ''));
    } else {
      setK('cutoff', '–');
      setK('cutoffago', b.status === 'unavailable' ? 'batch views unavailable' : 'no batch run yet');
    }

    // per-stream table
    const tbody = $('streams').tBodies[0];
    tbody.textContent = '';
    const names = Object.keys(streams);
    if (!names.length) {
      const tr = el('tr');
      const td = el('td', 'muted', 'no streams');
      td.colSpan = 8;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    for (const name of names) {
      const st = streams[name] || {};
      const tr = el('tr');
      const sp = st.speed && typeof st.speed === 'object' ? st.speed : {};
      const ar = st.archive && typeof st.archive === 'object' ? st.archive : {};
      const r = state.rates[name];
      const cells = [
        [name, ''],
        [isNum(r) ? fmtNum(r >= 10 ? Math.round(r) : Math.round(r * 10) / 10) : '–', ''],
        [fmtNum(num(st.accepted)), ''],
        [sp.status ? sp.status : fmtNum(num(sp.lag)), num(sp.lag) > 1000 || sp.status === 'error' ? 'warn' : ''],
        [ar.status ? ar.status : fmtNum(num(ar.lag)), num(ar.lag) > 10000 || ar.status === 'error' ? 'warn' : ''],
        [fmtNum(num(st.dead_letters)), num(st.dead_letters) > 0 ? 'bad' : ''],
        [fmtNum(num(st.late)), num(st.late) > 0 ? 'warn' : ''],
        [sp.watermark ? hhmmss(parseTime(sp.watermark)) : '–', ''],
      ];
      for (const [text, cls] of cells) tr.appendChild(el('td', cls, text));
      if (sp.error) tr.title = 'speed: ' + sp.error;
      tbody.appendChild(tr);
    }
    renderPartitions(streams);
    renderTiers(body.views && typeof body.views === 'object' ? body.views : {});
  }

  function fmtBytes(b) {
    if (!isNum(b)) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i === 0 ? String(b) : b.toFixed(b >= 100 ? 0 : 1)) + ' ' + u[i];
  }

  // One row per view: its latency tier, how fresh its answers are and
  // what its speed state costs in Redis — what "real time" costs.
  function renderTiers(views) {
    const tbody = $('tiers').tBodies[0];
    tbody.textContent = '';
    const names = Object.keys(views);
    if (!names.length) {
      const tr = el('tr');
      const td = el('td', 'muted', 'no views');
      td.colSpan = 7;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    for (const name of names) {
      const v = views[name] || {};
      const c = v.speed_cost && typeof v.speed_cost === 'object' ? v.speed_cost : null;
      const tr = el('tr');
      tr.dataset.view = name;
      tr.dataset.tier = v.tier || '';
      const approx = c && c.exact === false ? '≈ ' : '';
      const cells = [
        [name, ''],
        [v.tier || '–', v.tier === 'batch' ? 'tier-batch' : 'tier-live'],
        [v.state === 'rebuilding' ? 'rebuilding ' + Math.round(100 * (num(v.progress) || 0)) + '%' : (v.state || '–'), v.state === 'rebuilding' ? 'warn' : ''],
        [isNum(v.freshness_ms) ? fmtMs(v.freshness_ms) : '–', ''],
        [c ? approx + fmtNum(num(c.cells)) : '–', 'cost'],
        [c ? approx + fmtNum(num(c.keys)) : '–', 'cost'],
        [c ? approx + fmtBytes(num(c.bytes)) : '–', 'cost'],
      ];
      for (const [text, cls] of cells) tr.appendChild(el('td', cls, text));
      if (c && c.measured_at) tr.title = 'Redis cost measured ' + ago(parseTime(c.measured_at)) + (c.exact === false ? ', scaled up from a sample' : '');
      tbody.appendChild(tr);
    }
  }

  // One table per stream: each partition's speed owner, position, lag and
  // watermark, and the archiver's lag.
  function renderPartitions(streams) {
    const box = $('partitions');
    box.textContent = '';
    for (const [name, st] of Object.entries(streams)) {
      const parts = st && Array.isArray(st.partitions) ? st.partitions : [];
      if (!parts.length) continue;
      const table = el('table', 'parts');
      table.dataset.stream = name;
      const cap = el('caption', '', name + ' · ' + parts.length + ' partition' + (parts.length > 1 ? 's' : ''));
      if (st.owners_error) cap.title = 'owners: ' + st.owners_error;
      table.appendChild(cap);
      const head = el('tr');
      for (const h of ['partition', 'owner', 'position', 'lag', 'watermark', 'archive lag']) head.appendChild(el('th', '', h));
      table.appendChild(el('thead')).appendChild(head);
      const tbody = table.appendChild(el('tbody'));
      for (const p of parts) {
        const tr = el('tr');
        tr.dataset.partition = String(p.partition);
        const ar = p.archive && typeof p.archive === 'object' ? p.archive : {};
        const cells = [
          [String(p.partition), ''],
          [p.owner || '–', p.owner ? 'owner' : 'muted'],
          [fmtNum(num(p.position)), ''],
          [fmtNum(num(p.lag)), num(p.lag) > 1000 ? 'warn' : ''],
          [p.watermark ? hhmmss(parseTime(p.watermark)) : '–', ''],
          [ar.status ? ar.status : fmtNum(num(ar.lag)), num(ar.lag) > 10000 || ar.status === 'error' ? 'warn' : ''],
        ];
        for (const [text, cls] of cells) tr.appendChild(el('td', cls, text));
        if (ar.error) tr.title = 'archive: ' + ar.error;
        tbody.appendChild(tr);
      }
      box.appendChild(table);
    }
  }

  function maxField(streams, f) {
    let m = null;
    for (const st of Object.values(streams)) { const v = num(f(st || {})); if (v !== null) m = m === null ? v : Math.max(m, v); }
    return m;
  }

  function setK(k, text) {
    for (const e of document.querySelectorAll('[data-k="' + k + '"]')) e.textContent = text;
  }

  function drawSpark(s, vals) {
    s.textContent = '';
    if (vals.length < 2) return;
    const hi = Math.max(...vals, 1e-9) * 1.25;
    const w = 120, h = 28;
    const pts = vals.map((v, i) => [(i / (vals.length - 1)) * w, h - 2 - (v / hi) * (h - 4)]);
    const d = 'M' + pts.map((p) => p[0].toFixed(1) + ' ' + p[1].toFixed(1)).join('L');
    s.appendChild(svg('path', { class: 'area', d: d + 'L' + w + ' ' + h + 'L0 ' + h + 'Z' }));
    s.appendChild(svg('path', { d }));
  }

  function renderRuns(body) {
    const runs = Array.isArray(body && body.runs) ? body.runs : [];
    const ol = $('runs');
    ol.textContent = '';
    if (!runs.length) { ol.appendChild(el('li', 'muted', 'no batch runs yet')); return; }
    for (const r of runs.slice(0, 4)) {
      const status = String(r.status || 'unknown');
      const li = el('li', status);
      const dot = el('span', 'dot');
      dot.title = status;
      const started = parseTime(r.started);
      const dur = status === 'running' && started ? fmtMs(Date.now() - started) + '…' : fmtMs(num(r.duration_ms));
      const rows = num(r.rows_read);
      const meta = el('span', 'meta', (started ? hhmmss(started) : status) + (rows !== null ? ' · ' + fmtNum(rows) + ' rows' : ''));
      li.append(dot, el('b', '', dur), meta);
      if (r.error) { const e = el('span', 'err', r.error); e.title = r.error; li.appendChild(e); } else li.appendChild(el('span', 'meta', status === 'succeeded' ? 'ok' : status));
      li.title = (r.id ? 'run ' + r.id + ' ' : '') + status + (r.error ? ': ' + r.error : '');
      ol.appendChild(li);
    }
  }

  // ---------- pollers ----------
  const pollers = {
    wakers: [],
    wake() { const w = this.wakers; this.wakers = []; for (const f of w) f(); },
    nap(ms) { return new Promise((r) => { const t = setTimeout(r, ms); this.wakers.push(() => { clearTimeout(t); r(); }); }); },
  };

  async function pollStatus() {
    for (;;) {
      try { renderStatus(await api('/v1/status')); } catch (e) { /* banner shows it */ }
      await pollers.nap(state.authNeeded ? 5000 : STATUS_EVERY);
    }
  }

  async function pollRuns() {
    for (;;) {
      if (!state.authNeeded) {
        try { renderRuns(await api('/v1/batch/runs?limit=5')); } catch (e) {
          if (e.status === 503) { const ol = $('runs'); ol.textContent = ''; ol.appendChild(el('li', 'muted', 'batch runs unavailable here')); }
        }
      }
      await pollers.nap(RUNS_EVERY);
    }
  }

  // ---------- alerts ----------
  // renderAlerts lists every alert (firing now, dead letters, recent
  // deliveries) and keeps the firings each view's chart marks.
  function renderAlerts(body, hooks) {
    const alerts = Array.isArray(body && body.alerts) ? body.alerts : [];
    const sec = $('alerts');
    sec.hidden = alerts.length === 0 && !hooks;
    const marks = new Map();
    const add = (view, mk) => {
      const list = marks.get(view) || [];
      if (!list.some((o) => o.id === mk.id)) list.push(mk);
      marks.set(view, list);
    };
    const tbody = $('alerts-rows');
    tbody.textContent = '';
    for (const a of alerts) {
      const firing = Array.isArray(a.firing) ? a.firing : [];
      const recent = Array.isArray(a.recent_deliveries) ? a.recent_deliveries : [];
      for (const f of firing) {
        const t = parseTime(f.window_start);
        if (t) add(a.view, { t, alert: a.name, state: 'firing', group: Object.values(f.group || {}).join(' · '), id: f.id });
      }
      for (const d of recent) {
        const t = parseTime(d.window_start);
        if (t && d.outcome === 'delivered') add(a.view, { t, alert: a.name, state: d.state, group: d.group, id: d.id });
      }
      const tr = el('tr');
      tr.dataset.alert = a.name;
      const target = a.action && (a.action.webhook || (a.action.nats ? 'nats ' + a.action.nats : '')) || '';
      const last = recent.slice(0, 3).map((d) => d.state + ' ' + (d.group || 'all') + ' ' + hhmmss(parseTime(d.window_start)) + ' → ' + d.outcome + (d.outcome === 'delivered' ? ' in ' + fmtMs(num(d.latency_ms)) : (d.error ? ': ' + d.error : ''))).join('\n');
      const cells = [
        [a.name, 'name'], [a.view, ''], [a.when, 'mono'], [a.on, ''],
        [String(firing.length), firing.length ? 'hot' : ''],
        [String(num(a.dead_letters) || 0), num(a.dead_letters) ? 'warn' : ''],
        [last || '–', 'recent'], [target + (a.action && a.action.signed ? ' (signed)' : ''), 'muted'],
      ];
      for (const [text, cls] of cells) tr.appendChild(el('td', cls, text));
      tbody.appendChild(tr);
    }
    if (!alerts.length) {
      const tr = el('tr');
      const td = el('td', 'muted', 'no alerts configured');
      td.colSpan = 8;
      tr.appendChild(td);
      tbody.appendChild(tr);
    }
    // the demo's webhook receiver (braid up --demo), when there is one
    const demo = $('alerts-demo');
    demo.hidden = !hooks;
    if (hooks) {
      const ds = Array.isArray(hooks.deliveries) ? hooks.deliveries : [];
      $('alerts-demo-sum').textContent = fmtNum(num(hooks.received) || 0) + ' received · ' + fmtNum(num(hooks.bad_signatures) || 0) + ' bad signatures';
      const ol = $('alerts-demo-list');
      ol.textContent = '';
      for (const d of ds.slice(0, 6)) {
        const li = el('li', d.signature_valid ? 'ok' : 'bad');
        li.append(el('b', '', d.state), el('span', 'meta', ' ' + Object.values(d.group || {}).join(' · ') + ' · window ' + hhmmss(parseTime(d.window_start)) + ' · received ' + hhmmss(parseTime(d.received_at))),
          el('span', d.signature_valid ? 'sig ok' : 'sig bad', d.signature_valid ? ' ✓ signature' : ' ✗ signature'));
        li.title = d.id;
        ol.appendChild(li);
      }
      if (!ds.length) ol.appendChild(el('li', 'muted', 'nothing received yet'));
    }
    const changed = JSON.stringify([...marks]) !== JSON.stringify([...state.marks]);
    state.marks = marks;
    if (changed) for (const c of state.charts.values()) c.scheduleRender();
  }

  async function pollAlerts() {
    let demoHooks = true;
    for (;;) {
      if (!state.authNeeded) {
        let body = null, hooks = null;
        try { body = await api('/v1/alerts'); } catch (e) { /* 503 or 403: no alerts shown */ }
        if (demoHooks) {
          try {
            const resp = await fetch('/demo/hooks', { cache: 'no-store' });
            if (resp.ok && (resp.headers.get('Content-Type') || '').includes('json')) hooks = await resp.json();
            else demoHooks = false; // no demo receiver here
          } catch (e) { /* shown by the banner */ }
        }
        renderAlerts(body, hooks);
      }
      await pollers.nap(ALERTS_EVERY);
    }
  }

  function tick() {
    $('clock').textContent = hhmmss(Date.now());
    if (state.reachable === false) updateBanner();
  }

  function main() {
    setupAuth();
    setupRange();
    tick();
    setInterval(tick, 1000);
    updatePill();
    pollStatus();
    pollRuns();
    pollAlerts();
    pollViews();
    // the x axis moves on with the clock even without new data
    setInterval(() => { for (const c of state.charts.values()) c.scheduleRender(); }, 5000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
  else main();
})();
