'use strict';
// runwright's dashboard (issue 6). It polls the JSON API under api/v1 and renders job traces in the browser
// from their raw bytes: ANSI colours (SGR) become spans, GitLab's section markers become <details> elements,
// closed when the section asked for [collapsed=true]. The runner's per-line timestamps (FF_TIMESTAMPS) are read
// as GitLab's viewer reads them (lib/gitlab/ci/ansi2json/converter.rb): the header becomes the line's time, and
// a line marked '+' continues the line before it. Everything from the server goes in as text, never HTML.

const POLL_MS = 1000;
const HISTORY_MS = 5000;
const DISK_MS = 30000;
// A finished job's log starts this far from its end (the whole trace stays one link away).
const TAIL_BYTES = 1024 * 1024;

async function api(path) {
  const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}: ${await r.text()}`);
  return r;
}
const json = async (path) => (await api(path)).json();

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c ?? ''));
  return e;
}

function report(err) {
  const box = document.getElementById('error');
  box.hidden = !err;
  box.textContent = err ? String(err.message || err) : '';
}

const slug = (s) => String(s).toLowerCase().replace(/[^a-z0-9]+/g, '-');
const bytes = (n) => n == null ? '-' : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB`
  : n < 1073741824 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1073741824).toFixed(2)} GiB`;
const duration = (ms) => ms == null ? '-' : ms < 60000 ? `${(ms / 1000).toFixed(1)}s`
  : `${Math.floor(ms / 60000)}m${String(Math.floor(ms / 1000) % 60).padStart(2, '0')}s`;

// ---- ANSI and sections -------------------------------------------------------------------------------------

// `2025-01-31T12:34:56.123456Z 01O ` (GitLab's TIMESTAMP_HEADER_REGEX; 32 bytes): time, stream, O/E, ' ' or '+'.
const STAMP = /^(\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-5]\d\.\d{6}Z) [0-9a-f]{2}[EO]([+ ])/;
const MARKER = /(?:\x1b\[0K)?section_(start|end):(\d+):([A-Za-z0-9_.\-]+)(\[[^\]\r\n]*\])?\r(?:\x1b\[0K)?/g;
const ESCAPE = /\x1b\[([0-9;?]*)([@-~])|\x1b[^[]/g;
const CUBE = [0, 95, 135, 175, 215, 255];

function color256(n) {
  if (n < 16) return null; // the 16 base colours are classes
  if (n >= 232) { const g = 8 + 10 * (n - 232); return `rgb(${g},${g},${g})`; }
  n -= 16;
  return `rgb(${CUBE[Math.floor(n / 36)]},${CUBE[Math.floor(n / 6) % 6]},${CUBE[n % 6]})`;
}

class TraceView {
  constructor(root) {
    this.stack = [{ name: null, body: root }];
    this.style = {};
    this.partial = '';
    this.lineEl = null;
    // The element the last line went to, and whether it ended in a carriage return: a continued line goes on
    // there, as if the two had been one.
    this.lastEl = null;
    this.cr = false;
    this.time = null;
  }

  get body() { return this.stack[this.stack.length - 1].body; }

  push(text) {
    this.partial += text;
    const lines = this.partial.split('\n');
    this.partial = lines.pop();
    for (const l of lines) this.line(l);
  }

  flush() {
    if (this.partial) this.line(this.partial);
    this.partial = '';
  }

  line(raw) {
    let pos = 0, markers = 0, m;
    const stamp = STAMP.exec(raw);
    if (stamp) {
      raw = raw.slice(stamp[0].length);
      if (stamp[2] === '+' && this.lastEl) {
        this.lineEl = this.lastEl;
        markers = 1; // nothing new to place for an empty continuation
      } else {
        this.time = stamp[1];
        this.cr = false;
      }
    } else {
      this.time = null;
      this.cr = false;
    }
    MARKER.lastIndex = 0;
    while ((m = MARKER.exec(raw))) {
      this.text(raw.slice(pos, m.index));
      pos = MARKER.lastIndex;
      markers++;
      if (m[1] === 'start') this.open(m[3], m[4] || '');
      else this.close(m[3]);
    }
    this.text(raw.slice(pos));
    if (!this.lineEl && markers === 0) this.current(); // an empty line keeps its place
    this.lastEl = this.lineEl;
    this.lineEl = null;
  }

  // A line's time, as GitLab's viewer shows it beside the line (the full timestamp on hover).
  stamp(line) {
    if (this.time) line.append(el('span', { class: 'ts', title: this.time }, this.time.slice(11, 19)));
    return line;
  }

  current() {
    if (!this.lineEl) this.lineEl = this.body.appendChild(this.stamp(el('div', { class: 'line' })));
    return this.lineEl;
  }

  // A carriage return starts the line over: its text goes, its time stays.
  clear(line) {
    for (const n of [...line.childNodes]) if (!(n.classList && n.classList.contains('ts'))) n.remove();
  }

  open(name, options) {
    this.lineEl = null;
    const details = el('details', { class: 'section', 'data-section': name });
    if (!/collapsed=true/.test(options)) details.open = true;
    const summary = details.appendChild(this.stamp(el('summary', { class: 'line' })));
    const body = details.appendChild(el('div', { class: 'section-body' }));
    this.body.appendChild(details);
    this.stack.push({ name, body });
    this.lineEl = summary; // the rest of the marker's line is the section's title
  }

  close(name) {
    const at = this.stack.map((s) => s.name).lastIndexOf(name);
    if (at > 0) this.stack.length = at;
    this.lineEl = null;
  }

  // Text of one line: escape sequences change the style; a carriage return starts the line over.
  text(s) {
    if (!s) return;
    s.split('\r').forEach((part, i) => {
      if ((i > 0 || this.cr) && part !== '' && this.lineEl) this.clear(this.lineEl);
      if (part !== '') this.cr = false;
      let pos = 0, m;
      ESCAPE.lastIndex = 0;
      while ((m = ESCAPE.exec(part))) {
        this.run(part.slice(pos, m.index));
        pos = ESCAPE.lastIndex;
        if (m[2] === 'm') this.sgr(m[1]);
      }
      this.run(part.slice(pos));
    });
    if (s.endsWith('\r')) this.cr = true;
  }

  run(s) {
    if (!s) return;
    const st = this.style, classes = [];
    if (st.bold) classes.push('bold');
    if (st.italic) classes.push('italic');
    if (st.underline) classes.push('underline');
    if (st.fg) classes.push(`fg-${st.fg}`);
    if (st.bg) classes.push(`bg-${st.bg}`);
    if (!classes.length && !st.fgRgb && !st.bgRgb) { this.current().append(s); return; }
    const span = el('span', { class: classes.join(' ') }, s);
    if (st.fgRgb) span.style.color = st.fgRgb;
    if (st.bgRgb) span.style.background = st.bgRgb;
    this.current().append(span);
  }

  sgr(params) {
    const codes = params === '' ? [0] : params.split(';').map(Number);
    const st = this.style;
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) this.style = {};
      else if (c === 1) this.style.bold = true;
      else if (c === 3) st.italic = true;
      else if (c === 4) st.underline = true;
      else if (c === 22) st.bold = false;
      else if (c === 23) st.italic = false;
      else if (c === 24) st.underline = false;
      else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) { this.style.fg = c; this.style.fgRgb = null; }
      else if (c === 39) { this.style.fg = null; this.style.fgRgb = null; }
      else if ((c >= 40 && c <= 47) || (c >= 100 && c <= 107)) { this.style.bg = c; this.style.bgRgb = null; }
      else if (c === 49) { this.style.bg = null; this.style.bgRgb = null; }
      else if (c === 38 || c === 48) {
        let rgb = null, base = null;
        if (codes[i + 1] === 5) {
          const n = codes[i + 2];
          rgb = color256(n);
          if (!rgb) base = n < 8 ? 30 + n : 82 + n;
          i += 2;
        } else if (codes[i + 1] === 2) {
          rgb = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
          i += 4;
        }
        const fg = c === 38;
        this.style[fg ? 'fg' : 'bg'] = base == null ? null : (fg ? base : base + 10);
        this.style[fg ? 'fgRgb' : 'bgRgb'] = rgb;
      }
    }
  }
}

// ---- One job's log, followed while it runs ---------------------------------------------------------------

class LogView {
  constructor(job) {
    this.key = job.key;
    this.offset = null;
    this.done = false;
    this.busy = false;
    this.decoder = new TextDecoder();
    this.pre = el('pre', { class: 'log' });
    this.view = new TraceView(this.pre);
    const url = `api/v1/jobs/${encodeURIComponent(job.key)}/trace`;
    this.url = url;
    this.root = el('div', { class: 'joblog', 'data-key': job.key, 'data-job-id': job.job_id },
      el('h3', {}, `#${job.job_id} ${job.job_name} — ${job.project_path} (${job.ref}) on ${job.runner.name} `,
        el('a', { href: url, target: '_blank' }, 'raw')),
      this.pre);
  }

  async poll() {
    if (this.busy || this.done) return;
    this.busy = true;
    try {
      if (this.offset == null) {
        const head = await api(`${this.url}?offset=0&limit=0`);
        const size = Number(head.headers.get('x-trace-size'));
        this.offset = Math.max(0, size - TAIL_BYTES);
        if (this.offset > 0) {
          this.pre.append(el('div', { class: 'note' }, `${bytes(this.offset)} of earlier output not shown (see raw)`));
        }
      }
      for (;;) {
        const r = await api(`${this.url}?offset=${this.offset}`);
        const chunk = await r.arrayBuffer();
        const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
        this.view.push(this.decoder.decode(chunk, { stream: true }));
        if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
        this.offset = Number(r.headers.get('x-trace-next-offset'));
        if (this.offset < Number(r.headers.get('x-trace-size'))) continue;
        if (r.headers.get('x-job-status') !== 'running') {
          this.view.push(this.decoder.decode());
          this.view.flush();
          this.done = true;
        }
        break;
      }
    } finally {
      this.busy = false;
    }
  }
}

// ---- Sections of the page --------------------------------------------------------------------------------

async function refreshRunners() {
  const data = await json('api/v1/runners');
  const s = data.service;
  document.getElementById('service').textContent =
    `v${s.version} · pid ${s.pid} · concurrent ${s.concurrent}${s.stopping ? ' · stopping' : ''}`;
  const body = document.querySelector('#runners tbody');
  body.replaceChildren(...data.runners.map((r) => el('tr', {},
    el('td', {}, r.name), el('td', {}, r.url_host), el('td', {}, r.short_token), el('td', {}, r.executor),
    el('td', { title: r.error || '' }, el('span', { class: `state state-${slug(r.state)}` }, r.state)),
    el('td', {}, r.running_jobs.length ? r.running_jobs.map((j) => `#${j}`).join(' ') : '-'),
    el('td', { title: r.last_outcome || '' }, r.last_contact || 'never'))));
}

const running = new Map();

async function refreshRunning() {
  const jobs = await json('api/v1/jobs?status=running');
  const keys = new Set(jobs.map((j) => j.key));
  const box = document.getElementById('running');
  for (const job of jobs) {
    if (!running.has(job.key)) {
      const v = new LogView(job);
      running.set(job.key, v);
      box.append(v.root);
    }
  }
  for (const [key, v] of running) {
    if (!keys.has(key) && v.done) { v.root.remove(); running.delete(key); }
  }
  document.getElementById('no-running').hidden = running.size > 0;
  await Promise.all([...running.values()].map((v) => v.poll()));
}

function historyQuery() {
  const form = new FormData(document.getElementById('filters'));
  const q = new URLSearchParams({ limit: '50' });
  for (const [k, v] of form) if (v) q.set(k, v);
  return q.toString();
}

let opened = null;

function openJob(job) {
  const box = document.getElementById('opened');
  opened = new LogView(job);
  box.replaceChildren(opened.root);
  opened.poll().catch(report);
}

async function refreshHistory() {
  const jobs = await json(`api/v1/jobs?${historyQuery()}`);
  const body = document.querySelector('#history tbody');
  body.replaceChildren(...jobs.reverse().map((j) => {
    const row = el('tr', { class: 'job', 'data-key': j.key, 'data-job-id': j.job_id },
      el('td', {}, `#${j.job_id}`), el('td', {}, el('span', { class: `status status-${j.status}` }, j.status)),
      el('td', {}, j.local ? `${j.runner.name} (local)` : j.runner.name), el('td', {}, j.project_path),
      el('td', {}, j.ref), el('td', {}, j.job_name), el('td', {}, (j.received_at || '').replace('T', ' ')),
      el('td', {}, duration(j.duration_ms)), el('td', {}, j.failure_reason || ''));
    row.addEventListener('click', () => openJob(j));
    return row;
  }));
  if (opened && !opened.done) await opened.poll();
}

async function refreshDisk() {
  const d = await json('api/v1/disk');
  const rows = d.directories.map((x) => el('tr', {}, el('td', {}, x.runner), el('td', {}, x.kind),
    el('td', {}, x.path), el('td', {}, x.exists ? bytes(x.bytes) : 'not created yet')));
  const docker = d.docker.map((daemon) => daemon.available
    ? el('p', {}, `docker (${daemon.host}): ${daemon.volumes.length} runner volumes, ${bytes(daemon.total_bytes)}`,
      el('table', {}, el('tbody', {}, ...daemon.volumes.map((v) => el('tr', {}, el('td', {}, v.name),
        el('td', {}, v.kind), el('td', {}, v.runner), el('td', {}, v.project ?? ''), el('td', {}, v.destination),
        el('td', {}, bytes(v.size_bytes)))))))
    : el('p', { class: 'muted', title: daemon.error || '' }, `no docker (${daemon.host})`));
  document.getElementById('disk').replaceChildren(
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Runner'), el('th', {}, 'Kind'), el('th', {}, 'Path'),
      el('th', {}, 'Size'))), el('tbody', {}, ...rows)),
    ...docker, el('p', { class: 'muted' }, `measured ${d.measured_at}`));
}

function every(ms, f) {
  const tick = () => f().then(() => report(null), report).finally(() => setTimeout(tick, ms));
  tick();
}

document.getElementById('filters').addEventListener('submit', (e) => {
  e.preventDefault();
  refreshHistory().catch(report);
});
every(POLL_MS, refreshRunners);
every(POLL_MS, refreshRunning);
every(HISTORY_MS, refreshHistory);
every(DISK_MS, refreshDisk);
