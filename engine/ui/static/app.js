// The dashboard page: live candles, indicators, fills, orders, account, feed health, strategy
// state and log over one websocket; accounts and saved results over the JSON API.
// Everything it loads comes from the engine's own server (no CDN).
"use strict";
(function () {
  const LWC = window.LightweightCharts;
  const token = new URLSearchParams(location.search).get("token") || "";
  const q = (s) => document.querySelector(s);
  const UP = "#26a69a", DOWN = "#ef5350", PALETTE = ["#f6c85f", "#6fa8dc", "#c27ba0", "#93c47d",
    "#e69138", "#8e7cc3", "#76a5af"];
  // State a test or benchmark can read: what the page has drawn.
  const ui = window.engineUi = { candles: 0, last: null, markers: [], account: null,
    shown: [], updates: 0, connected: false, lines: {}, view: null };

  const iso = (t) => (t == null || !isFinite(t)) ? "" :
    new Date(t * 1000).toISOString().replace(".000Z", "Z");
  const num = (v, d = 2) => (v == null || !isFinite(v)) ? "–" : Number(v).toLocaleString("en-US",
    { minimumFractionDigits: d, maximumFractionDigits: d });
  const g = (v) => (v == null || !isFinite(v)) ? "–" : String(+Number(v).toPrecision(10));
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  function table(el, head, rows) {
    el.innerHTML = "<tr>" + head.map((h) => `<th>${esc(h)}</th>`).join("") + "</tr>" +
      rows.map((r) => "<tr>" + r.map((c) => `<td>${c}</td>`).join("") + "</tr>").join("");
  }
  function kv(el, pairs) {
    el.innerHTML = pairs.map(([k, v, id]) =>
      `<tr><td>${esc(k)}</td><td${id ? ` id="${id}"` : ""}>${v}</td></tr>`).join("");
  }
  const chartOpts = (h) => ({
    autoSize: true, layout: { background: { color: "#0f1419" }, textColor: "#d8dee6" },
    grid: { vertLines: { color: "#1c242d" }, horzLines: { color: "#1c242d" } },
    timeScale: { timeVisible: true, secondsVisible: true, borderColor: "#26303a" },
    rightPriceScale: { borderColor: "#26303a" },
    localization: { timeFormatter: (t) => iso(t) },
    height: h,
  });

  // -- tabs ----------------------------------------------------------------------------------
  function showTab(name) {
    document.querySelectorAll(".tabpane").forEach((p) => { p.hidden = p.id !== "tab-" + name; });
    document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("on",
      b.dataset.tab === name));
    window.dispatchEvent(new Event("resize"));
  }
  document.querySelectorAll(".tab").forEach((b) =>
    b.addEventListener("click", () => showTab(b.dataset.tab)));

  async function api(path) {
    const r = await fetch(path + (path.includes("?") ? "&" : "?") + "token=" +
      encodeURIComponent(token), { credentials: "same-origin" });
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
    return r.json();
  }

  // -- live chart ----------------------------------------------------------------------------
  let chart, candles, volume, markersApi, eqChart, eqSeries, ddChart, ddSeries;
  let data = [], first = 0, loadingOlder = false, lineSeries = {}, priceLines = [];
  let equity = [], peak = -Infinity;
  let info = null;

  function makeLiveCharts() {
    chart = LWC.createChart(q("#chart"), chartOpts(420));
    candles = chart.addSeries(LWC.CandlestickSeries, { upColor: UP, downColor: DOWN,
      borderVisible: false, wickUpColor: UP, wickDownColor: DOWN });
    volume = chart.addSeries(LWC.HistogramSeries, { priceScaleId: "vol",
      priceFormat: { type: "volume" }, color: "#2b3a4a" });
    chart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.85, bottom: 0 } });
    markersApi = LWC.createSeriesMarkers(candles, []);
    ui.chart = chart;
    chart.timeScale().subscribeVisibleLogicalRangeChange((r) => {
      if (r && r.from < 10 && first > 0 && !loadingOlder) loadOlder();
    });
    eqChart = LWC.createChart(q("#equity-chart"), chartOpts(140));
    eqSeries = eqChart.addSeries(LWC.LineSeries, { color: "#6fa8dc", lineWidth: 2,
      title: "equity" });
    ddChart = LWC.createChart(q("#dd-chart"), chartOpts(140));
    ddSeries = ddChart.addSeries(LWC.AreaSeries, { lineColor: DOWN, topColor: "rgba(239,83,80,0)",
      bottomColor: "rgba(239,83,80,0.4)", invertFilledArea: true, title: "drawdown %" });
  }

  const bar = (c) => ({ time: c[0], open: c[1], high: c[2], low: c[3], close: c[4] });
  const vol = (c) => ({ time: c[0], value: c[5], color: c[4] >= c[1] ? "#1f4d47" : "#5c2a2a" });

  function setLines(lines, reset) {
    for (const [name, pts] of Object.entries(lines)) {
      let s = lineSeries[name];
      if (!s) {
        const color = PALETTE[Object.keys(lineSeries).length % PALETTE.length];
        s = lineSeries[name] = chart.addSeries(LWC.LineSeries, { color, lineWidth: 1.5,
          title: name, priceLineVisible: false, lastValueVisible: false });
        reset = true;
        ui.lines[name] = 0;
      }
      const rows = pts.map((p) => ({ time: p[0], value: p[1] }));
      if (reset) { s.setData(rows); ui.lines[name] = rows.length; }
      else for (const r of rows) { s.update(r); ui.lines[name]++; }
    }
  }

  function resetChart(m) {
    for (const s of Object.values(lineSeries)) chart.removeSeries(s);
    lineSeries = {}; ui.lines = {};
    data = m.candles.slice(); first = m.first;
    candles.setData(data.map(bar)); volume.setData(data.map(vol));
    setLines(m.lines, true);
    ui.candles = data.length; ui.first = first; ui.view = { symbol: m.symbol, tf: m.tf };
    q("#legend").textContent = Object.keys(m.lines).join("  ");
    drawMarkers();
    chart.timeScale().scrollToPosition(0, false);  // a chart opened anew shows its newest candles
  }

  async function loadOlder() {
    loadingOlder = true;
    try {
      const v = ui.view;
      const m = await api(`/api/bars?symbol=${encodeURIComponent(v.symbol)}&tf=${v.tf}` +
        `&before=${first}&n=2000`);
      if (!ui.view || ui.view.symbol !== v.symbol || ui.view.tf !== v.tf || !m.candles.length) return;
      const range = chart.timeScale().getVisibleLogicalRange();
      data = m.candles.concat(data); first = m.first;
      candles.setData(data.map(bar)); volume.setData(data.map(vol));
      for (const [name, pts] of Object.entries(m.lines)) {
        const s = lineSeries[name];
        if (s) s.setData(pts.map((p) => ({ time: p[0], value: p[1] })).concat(s.data()));
      }
      if (range) chart.timeScale().setVisibleLogicalRange({ from: range.from + m.candles.length,
        to: range.to + m.candles.length });
      ui.candles = data.length; ui.first = first;
    } finally { loadingOlder = false; }
  }

  function applyForming(f) {
    if (!f) return;
    const last = data.length ? data[data.length - 1] : null;
    if (last && f[0] < last[0]) return;  // an older candle: the closed one already replaced it
    if (last && f[0] === last[0]) data[data.length - 1] = f; else data.push(f);
    candles.update(bar(f)); volume.update(vol(f));
    ui.candles = data.length; ui.last = f;
    q("#price").textContent = g(f[4]);
    const price = f[4];
    requestAnimationFrame(() => {
      ui.shown.push([price, Date.now()]);
      if (ui.shown.length > 10000) ui.shown.splice(0, 5000);
    });
  }

  function appendClosed(m) {
    for (const c of m.candles) {
      const last = data.length ? data[data.length - 1] : null;
      if (last && c[0] < last[0]) continue;
      if (last && c[0] === last[0]) data[data.length - 1] = c; else data.push(c);
      candles.update(bar(c)); volume.update(vol(c));
    }
    setLines(m.lines, false);
    ui.candles = data.length;
  }

  function drawMarkers() {
    const a = ui.account, v = ui.view;
    if (!a || !v || !markersApi) return;
    const tf = v.tf;
    // One marker per candle and side: an order's partial fills read as one trade.
    const groups = new Map();
    for (const f of a.fills.filter((f) => f.symbol === v.symbol)) {
      const time = Math.floor(f.time / tf) * tf, key = time + f.side;
      const m = groups.get(key) || { time, side: f.side, size: 0, ids: [] };
      m.size += f.size; m.ids.push(String(f.fill_id));
      groups.set(key, m);
    }
    const ms = [...groups.values()].map((m) => ({
      time: m.time, position: m.side === "buy" ? "belowBar" : "aboveBar",
      color: m.side === "buy" ? "#42a5f5" : "#ffa726",
      shape: m.side === "buy" ? "arrowUp" : "arrowDown",
      text: `${m.side} ${g(+m.size.toPrecision(6))}`, id: m.ids.join(","), ids: m.ids,
    })).sort((x, y) => x.time - y.time);
    markersApi.setMarkers(ms);
    ui.markers = ms;
    for (const pl of priceLines) candles.removePriceLine(pl);
    priceLines = [];
    for (const o of a.open_orders.filter((o) => o.symbol === v.symbol)) {
      for (const [price, kind] of [[o.limit_price, "limit"], [o.stop_price, "stop"]]) {
        if (price == null) continue;
        priceLines.push(candles.createPriceLine({ price, color: o.side === "buy" ? "#42a5f5" :
          "#ffa726", lineWidth: 1, lineStyle: 2, axisLabelVisible: true,
          title: `${o.side} ${kind} ${g(o.remaining ?? o.size)}` }));
      }
    }
    ui.priceLines = priceLines.length;
  }

  function renderAccount(a, el) {
    kv(el.summary, [["equity", num(a.equity), el.ids && "acct-equity"],
      ["cash", num(a.cash), el.ids && "acct-cash"], ["started with", num(a.starting_cash)],
      ["realized", num(a.realized)], ["fees", num(a.fees)],
      ["fills", a.fills.length, el.ids && "acct-fills"]]);
    table(el.positions, ["symbol", "quantity", "avg price", "mark", "unrealized", "realized"],
      a.positions.map((p) => [esc(p.symbol), `<span data-qty="${esc(p.symbol)}">${g(p.quantity)}</span>`,
        g(p.avg_price), g(p.mark), num(p.unrealized), num(p.realized)]));
    table(el.orders, ["id", "symbol", "side", "type", "remaining", "limit", "stop"],
      a.open_orders.map((o) => [esc(o.client_id), esc(o.symbol), esc(o.side), esc(o.type ||
        o.order_type || ""), g(o.remaining ?? o.size), g(o.limit_price), g(o.stop_price)]));
    table(el.fills, ["time", "side", "size", "symbol", "price", "fee"],
      a.fills.slice(-25).reverse().map((f) => [iso(f.time), esc(f.side), g(f.size),
        esc(f.symbol), g(f.price), g(f.fee)]));
  }

  function renderHealth(h) {
    const st = Object.entries(h.status || {}).filter(([, s]) => s !== "reconnected" &&
      s !== "gap_filled");
    kv(q("#health"), [
      ["engine", h.alive ? '<span class="good">running</span>' : '<span class="bad">gone</span>'],
      ["quotes/s", num(h.quotes_per_s, 0), "feed-rate"], ["quotes", h.quotes],
      ["bars closed", h.bars],
      ["lag (newest tick)", h.lag == null ? "–" : num(h.lag * 1000, 0) + " ms"],
      ["gaps filled", h.gaps], ["reconnects", h.reconnects], ["bad quotes", h.rejected],
      ["symbols held", st.length ? esc(st.map(([s, v]) => `${s} ${v}`).join(", ")) : "none"],
    ]);
  }

  function renderStrategies(list) {
    table(q("#strategies"), ["strategy", "state", "quotes", "bars", "coalesced"],
      (list || []).map((s) => [esc(s.name), s.error ? `<span class="bad" title="${esc(s.error)}">failed</span>`
        : esc(s.state), s.quotes, s.bars, s.coalesced]));
  }

  function addEquity(points, reset) {
    if (reset) { equity = []; peak = -Infinity; }
    for (const [t, v] of points) {
      const time = Math.floor(t);
      if (equity.length && time <= equity[equity.length - 1].time) {
        equity[equity.length - 1].value = v;
      } else equity.push({ time, value: v });
    }
    eqSeries.setData(equity);
    const dd = [];
    peak = -Infinity;
    for (const p of equity) { peak = Math.max(peak, p.value);
      dd.push({ time: p.time, value: peak > 0 ? (p.value / peak - 1) * 100 : 0 }); }
    ddSeries.setData(dd);
  }

  function applyAccount(a) {
    ui.account = a;
    renderAccount(a, { summary: q("#account"), positions: q("#positions"),
      orders: q("#orders"), fills: q("#fills"), ids: true });
    drawMarkers();
  }
  ui.applyAccount = applyAccount;

  function connect() {
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}` +
      `/ws?token=${encodeURIComponent(token)}`);
    ws.onopen = () => { ui.connected = true; q("#conn").textContent = "live";
      watch(ws); };
    ws.onclose = () => { ui.connected = false; q("#conn").textContent = "disconnected";
      setTimeout(connect, 1000); };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      ui.updates++;
      if (m.reset) resetChart(m.reset);
      if (m.append) appendClosed(m.append);
      if (m.forming) applyForming(m.forming);
      if (m.health) renderHealth(m.health);
      if (m.strategies) renderStrategies(m.strategies);
      if (m.log) {
        const el = q("#log");
        el.textContent += m.log.map((l) => `${iso(l.t)} ${l.strategy} ${l.level === "INFO" ? "" :
          l.level + " "}${l.message}`).join("\n") + "\n";
        if (el.textContent.length > 200000) el.textContent = el.textContent.slice(-100000);
        el.scrollTop = el.scrollHeight;
      }
      if (m.account) applyAccount(m.account);
      if (m.equity_reset || m.equity) addEquity(m.equity || [], !!m.equity_reset);
    };
    ui.ws = ws;
  }
  function watch(ws) {
    ws.send(JSON.stringify({ type: "watch", symbol: q("#symbol").value, tf: +q("#tf").value }));
  }

  // -- accounts --------------------------------------------------------------------------------
  async function showAccount(name) {
    if (!name) return;
    const a = await api(`/api/account?name=${encodeURIComponent(name)}`);
    renderAccount(a, { summary: q("#browse-account"), positions: q("#browse-positions"),
      orders: q("#browse-orders"), fills: q("#browse-fills") });
  }

  // -- results ---------------------------------------------------------------------------------
  let resCharts = null;
  async function showResult(i) {
    if (i === "" || i == null) return;
    const r = await api(`/api/result?i=${i}`);
    q("#result-title").textContent = `${r.kind}: ${r.strategy || ""}`;
    q("#result-backtest").hidden = r.kind === "sweep";
    q("#result-sweep").hidden = r.kind !== "sweep";
    if (r.kind === "sweep") return showSweep(r);
    const bt = r.kind === "walk_forward" ? r.out_of_sample : r;
    if (!resCharts) {
      const e = LWC.createChart(q("#res-equity"), chartOpts(420));
      const d = LWC.createChart(q("#res-dd"), chartOpts(140));
      resCharts = { e, d, eq: e.addSeries(LWC.LineSeries, { color: "#6fa8dc", title: "equity" }),
        dd: d.addSeries(LWC.AreaSeries, { lineColor: DOWN, topColor: "rgba(239,83,80,0)",
          bottomColor: "rgba(239,83,80,0.4)", invertFilledArea: true, title: "drawdown %" }) };
      // One time axis: panning or zooming one moves the other.
      e.timeScale().subscribeVisibleLogicalRangeChange((rg) => rg &&
        d.timeScale().setVisibleLogicalRange(rg));
      d.timeScale().subscribeVisibleLogicalRangeChange((rg) => rg &&
        e.timeScale().setVisibleLogicalRange(rg));
    }
    const eq = (bt.equity || []).filter((p) => p.time != null);
    resCharts.eq.setData(dedupe(eq.map((p) => ({ time: p.time, value: p.equity }))));
    resCharts.dd.setData(dedupe(eq.map((p) => ({ time: p.time,
      value: -Math.abs(p.drawdown_pct ?? 0) }))));
    const marks = (bt.trades || []).filter((t) => t.entry_time != null).map((t) => ({
      time: nearest(eq, t.entry_time), position: t.side === "long" || t.size > 0 ? "belowBar" :
        "aboveBar", color: (t.pnl ?? 0) >= 0 ? UP : DOWN, shape: "circle", text: "" }))
      .sort((a, b) => a.time - b.time);
    LWC.createSeriesMarkers(resCharts.eq, marks.slice(0, 10000));
    resCharts.e.timeScale().fitContent();
    showResultPrice(bt, r.bars || {});
    const skip = new Set(["trades", "equity", "fills", "orders", "log", "rejected", "kind",
      "name", "bars", "start_time", "end_time"]);  // epoch twins of start and end
    q("#res-stats").innerHTML = Object.entries(bt).filter(([k, v]) => !skip.has(k) &&
      (typeof v !== "object" || v === null)).map(([k, v]) =>
      `<div><span>${esc(k)}</span><b>${typeof v === "number" ? g(v) : esc(v)}</b></div>`).join("");
    const trades = bt.trades || [];
    const want = ["symbol", "side", "size", "entry_time_iso", "entry_price", "exit_time_iso",
      "exit_price", "pnl", "return_pct", "bars_held", "fees"];
    const cols = trades.length ? want.filter((c) => c in trades[0]) : [];
    table(q("#res-trades"), cols, trades.slice(0, 2000).map((t) => cols.map((c) =>
      typeof t[c] === "number" ? g(t[c]) : esc(t[c]))));
  }
  let resPrice = null;
  function showResultPrice(bt, bars) {
    const sym = Object.keys(bars)[0];
    q("#res-price").hidden = !sym;
    if (!sym) return;
    if (!resPrice) {
      const c = LWC.createChart(q("#res-price"), chartOpts(420));
      const s = c.addSeries(LWC.CandlestickSeries, { upColor: UP, downColor: DOWN,
        borderVisible: false, wickUpColor: UP, wickDownColor: DOWN });
      resPrice = { c, s, m: LWC.createSeriesMarkers(s, []) };
    }
    const rows = dedupe(bars[sym].map(bar));
    resPrice.s.setData(rows);
    // Trades on the price, as the HTML report draws them: entries by side, exits by result.
    const at = (t) => nearest(rows, t);
    const marks = [];
    for (const t of (bt.trades || []).filter((t) => !t.symbol || t.symbol === sym)) {
      const long = t.side === "long";
      if (t.entry_time != null) marks.push({ time: at(t.entry_time), position: long ?
        "belowBar" : "aboveBar", color: long ? "#1565c0" : "#ff8f00", shape: long ? "arrowUp" :
        "arrowDown" });
      if (t.exit_time != null) marks.push({ time: at(t.exit_time), position: long ? "aboveBar" :
        "belowBar", color: (t.pnl ?? 0) >= 0 ? "#2e7d32" : "#c62828", shape: "square" });
    }
    resPrice.m.setMarkers(marks.sort((a, b) => a.time - b.time).slice(0, 10000));
    ui.resultMarkers = marks.length;
    resPrice.c.timeScale().fitContent();
  }
  function dedupe(pts) {
    const out = [];
    for (const p of pts) {
      if (out.length && p.time <= out[out.length - 1].time) out[out.length - 1] = p;
      else out.push(p);
    }
    return out;
  }
  function nearest(eq, t) {
    let lo = 0, hi = eq.length - 1;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (eq[mid].time <= t) lo = mid; else hi = mid - 1; }
    return eq.length ? eq[lo].time : t;
  }

  let sweep = null;
  function showSweep(r) {
    sweep = r;
    const rows = r.rows || [];
    const params = rows.length ? Object.keys(rows[0].params || {}) : [];
    const metrics = rows.length ? Object.keys(rows[0]).filter((k) => typeof rows[0][k] ===
      "number") : [];
    for (const [sel, opts, def] of [["#hm-x", params, params[0]], ["#hm-y", params,
      params[1] || params[0]], ["#hm-metric", metrics, r.metric]]) {
      q(sel).innerHTML = opts.map((o) => `<option${o === def ? " selected" : ""}>${esc(o)}</option>`).join("");
      q(sel).onchange = drawHeatmap;
    }
    const cols = [...params, ...metrics];
    const sorted = rows.slice().sort((a, b) => (b[r.metric] ?? -Infinity) - (a[r.metric] ?? -Infinity));
    table(q("#sweep-table"), cols, sorted.map((row) => cols.map((c) => {
      const v = c in (row.params || {}) ? row.params[c] : row[c];
      return typeof v === "number" ? g(v) : esc(v);
    })));
    drawHeatmap();
  }
  function drawHeatmap() {
    const cv = q("#heatmap"), ctx = cv.getContext("2d");
    ctx.fillStyle = "#0f1419"; ctx.fillRect(0, 0, cv.width, cv.height);
    if (!sweep) return;
    const x = q("#hm-x").value, y = q("#hm-y").value, m = q("#hm-metric").value;
    const rows = (sweep.rows || []).filter((r) => r.params && isFinite(r[m]));
    const xs = [...new Set(rows.map((r) => r.params[x]))].sort((a, b) => a - b);
    const ys = [...new Set(rows.map((r) => r.params[y]))].sort((a, b) => a - b);
    if (!xs.length || !ys.length) return;
    const cell = {};
    for (const r of rows) {  // several rows per cell (other parameters): the best one
      const k = r.params[x] + "|" + r.params[y];
      cell[k] = Math.max(cell[k] ?? -Infinity, r[m]);
    }
    ui.heatmapCells = Object.keys(cell).length;
    const vals = Object.values(cell), lo = Math.min(...vals), hi = Math.max(...vals);
    const L = 60, B = 30, w = (cv.width - L - 10) / xs.length, h = (cv.height - B - 10) / ys.length;
    ctx.font = "11px sans-serif"; ctx.textAlign = "center";
    xs.forEach((xv, i) => ys.forEach((yv, j) => {
      const v = cell[xv + "|" + yv];
      if (v === undefined) return;
      const f = hi > lo ? (v - lo) / (hi - lo) : 0.5;
      ctx.fillStyle = `hsl(${f * 120}, 60%, ${25 + f * 20}%)`;
      const px = L + i * w, py = 10 + (ys.length - 1 - j) * h;
      ctx.fillRect(px, py, w - 1, h - 1);
      if (w > 34 && h > 14) { ctx.fillStyle = "#fff"; ctx.fillText(g(+v.toPrecision(3)), px + w / 2, py + h / 2 + 4); }
    }));
    ctx.fillStyle = "#d8dee6";
    xs.forEach((xv, i) => ctx.fillText(g(xv), L + i * w + w / 2, cv.height - B + 14));
    ctx.textAlign = "right";
    ys.forEach((yv, j) => ctx.fillText(g(yv), L - 4, 10 + (ys.length - 1 - j) * h + h / 2 + 4));
    ctx.fillText(`${y} ↑  ${x} →  colour: ${m} (best per cell)`, cv.width - 10, cv.height - 4);
  }

  // -- start -----------------------------------------------------------------------------------
  async function start() {
    info = await api("/api/info");
    q("#account-select").innerHTML = info.accounts.map((a) => `<option>${esc(a)}</option>`).join("");
    q("#account-select").onchange = (e) => showAccount(e.target.value);
    q("#result-select").innerHTML = '<option value="">–</option>' + info.results.map((r) =>
      `<option value="${r.i}">${esc(r.name)}</option>`).join("");
    q("#result-select").onchange = (e) => showResult(e.target.value);
    if (info.accounts.length) showAccount(info.accounts[0]);
    if (!info.live) {
      q("#no-live").hidden = false;
      q("#conn").textContent = "no engine attached";
      showTab(info.results.length ? "results" : "accounts");
      if (info.results.length) { q("#result-select").value = "0"; showResult(0); }
      return;
    }
    const L = info.live;
    q("#symbol").innerHTML = L.symbols.map((s) => `<option>${esc(s)}</option>`).join("");
    const tfName = (t) => t % 86400 === 0 ? t / 86400 + "d" : t % 3600 === 0 ? t / 3600 + "h" :
      t % 60 === 0 ? t / 60 + "m" : t + "s";
    q("#tf").innerHTML = L.timeframes.map((t) => `<option value="${t}">${tfName(t)}</option>`).join("");
    q("#acct-name").textContent = L.account || "(orders logged, no account)";
    showTab("live");
    makeLiveCharts();
    q("#symbol").onchange = q("#tf").onchange = () => ui.ws && ui.ws.readyState === 1 &&
      watch(ui.ws);
    connect();
  }
  start().catch((e) => { q("#conn").textContent = "error: " + e.message; });
})();
