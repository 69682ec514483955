/**
 * The page's script, as text (page.ts inlines it; server.ts allows exactly it by its hash). Plain browser JavaScript,
 * no build step.
 *
 * Sections: the connection (`EventSource` on `/events`, the banner); colours; keyed tables (members, locks, handover:
 * each row updated cell by cell, moved only when its place changed); the shard grid (a cell changed only when its
 * holder, plan, waiters or marks did); waiting lines; the timeline; the measurements the browser test reads
 * (`window.etcdseqUi.stats`).
 *
 * Two rules hold throughout: data is only ever written with `textContent`, attributes or `style` properties, never
 * as markup; and an update touches only the rows and cells whose text changed, so a change at a thousand members
 * and a thousand shards costs a few ms. Fields the view may gain (a member's `weight`, a shard's `paused` or
 * `pinned`, new top-level fields) are shown when present and do not break the page when absent.
 */
export const script = String.raw`
(function () {
  "use strict";
  var byId = function (id) { return document.getElementById(id); };
  var stats = { applies: [], frames: [], views: 0 };
  window.etcdseqUi = { stats: stats };
  var current = { view: null, seen: {}, at: 0, boot: null, seq: 0, status: null, open: false };

  // --- Time ---
  var pad = function (n) { return n < 10 ? "0" + n : String(n); };
  var clock = function (ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  };
  var age = function (ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  };

  // --- Colours: one per member id, kept while the page lives, so a member keeps its colour when indexes shift ---
  var colours = new Map();
  var colour = function (id) {
    if (id === undefined || id === null) return "";
    var c = colours.get(id);
    if (c === undefined) {
      var n = colours.size;
      c = "hsl(" + Math.round((n * 137.508) % 360) + " " + (70 - (n % 3) * 10) + "% " + (48 + (n % 4) * 6) + "%)";
      colours.set(id, c);
    }
    return c;
  };

  // --- Keyed tables ---
  // rows: [{ key, cells: [text...], classes: [class per cell], colour }]: a row's cells are written only when their
  // text changed, and rows are moved only where the order changed.
  var keyedTable = function (tbody, classes, rowTag, cellTag) {
    var rows = new Map();
    return function (list) {
      var keep = new Set();
      for (var i = 0; i < list.length; i++) keep.add(list[i].key);
      rows.forEach(function (row, key) { if (!keep.has(key)) { row.tr.remove(); rows.delete(key); } });
      var at = tbody.firstChild;
      for (var j = 0; j < list.length; j++) {
        var item = list[j];
        var row = rows.get(item.key);
        if (row === undefined) {
          var tr = document.createElement(rowTag || "tr");
          if (rowTag) tr.className = "row";
          var tds = [];
          for (var c = 0; c < classes.length; c++) {
            var td = document.createElement(cellTag || "td");
            if (classes[c]) td.className = classes[c];
            tr.appendChild(td);
            tds.push(td);
          }
          row = { tr: tr, tds: tds, texts: [], titles: [], colour: null, swatch: null };
          rows.set(item.key, row);
        }
        for (var k = 0; k < item.cells.length; k++) {
          if (row.texts[k] !== item.cells[k]) { row.tds[k].textContent = item.cells[k]; row.texts[k] = item.cells[k]; }
          var title = item.titles === undefined ? undefined : item.titles[k];
          if (title !== undefined && row.titles[k] !== title) { row.tds[k].title = title; row.titles[k] = title; }
        }
        if (item.colour !== undefined && row.colour !== item.colour) {
          if (row.swatch === null) {
            row.swatch = document.createElement("span");
            row.swatch.className = "swatch";
          }
          row.swatch.style.background = item.colour;
          row.colour = item.colour;
        }
        // textContent replaced the cell's children: the swatch goes back in front.
        if (row.swatch !== null && row.tds[0].firstChild !== row.swatch) row.tds[0].insertBefore(row.swatch, row.tds[0].firstChild);
        if (row.tr !== at) tbody.insertBefore(row.tr, at); else at = at.nextSibling;
      }
    };
  };

  var memberTable = keyedTable(byId("memberRows"), ["", "", "id", "weight", "", "runs", "meta", "more"], "div", "span");
  var lockTable = keyedTable(byId("locks").tBodies[0], ["", "id", "", "id"]);
  var handoverTable = keyedTable(byId("handover").tBodies[0], ["id", ""]);

  var knownMember = { id: 1, instance: 1, metadata: 1, index: 1, joinRevision: 1, weight: 1 };
  var knownOwner = { shard: 1, planned: 1, holder: 1, fence: 1, waiting: 1, paused: 1, pinned: 1 };
  var knownView = { group: 1, revision: 1, members: 1, locks: 1, handover: 1, shards: 1, waiting: 1, drains: 1 };
  var extras = function (object, known) {
    var parts = [];
    for (var key in object) {
      if (Object.prototype.hasOwnProperty.call(object, key) && !known[key] && object[key] !== undefined) {
        parts.push(key + "=" + (typeof object[key] === "string" ? object[key] : JSON.stringify(object[key])));
      }
    }
    return parts.join(" ");
  };
  var ranges = function (shards) {
    var out = [];
    for (var i = 0; i < shards.length && out.length < 6; i++) {
      var start = shards[i];
      while (i + 1 < shards.length && shards[i + 1] === shards[i] + 1) i++;
      out.push(start === shards[i] ? String(start) : start + "–" + shards[i]);
    }
    return out.join(", ") + (i < shards.length ? ", …" : "");
  };

  // --- Members: what each runs, from the shards and locks ---
  var renderMembers = function (view, seen, now) {
    var held = {}, incoming = {}, waits = {}, locks = {};
    var owners = view.shards ? view.shards.owners : [];
    for (var i = 0; i < owners.length; i++) {
      var o = owners[i];
      if (o.holder !== undefined) (held[o.holder] = held[o.holder] || []).push(o.shard);
      if (o.holder !== o.planned) incoming[o.planned] = (incoming[o.planned] || 0) + 1;
      for (var w = 0; w < o.waiting.length; w++) waits[o.waiting[w]] = (waits[o.waiting[w]] || 0) + 1;
    }
    for (var l = 0; l < view.locks.length; l++) locks[view.locks[l].holder] = view.locks[l].index;
    var draining = {};
    var drains = view.drains || [];
    for (var d = 0; d < drains.length; d++) draining[drains[d]] = true;
    var count = view.members.length;
    var weighted = false;
    var rows = view.members.map(function (m) {
      if (m.weight !== undefined) weighted = true;
      var runs = [];
      if (draining[m.id]) runs.push("draining");
      if (locks[m.id] !== undefined) runs.push("lock " + locks[m.id]);
      if (held[m.id]) runs.push(held[m.id].length + " shard" + (held[m.id].length === 1 ? "" : "s") + " (" + ranges(held[m.id]) + ")");
      if (incoming[m.id]) runs.push(incoming[m.id] + " coming");
      if (waits[m.id]) runs.push("waits for " + waits[m.id]);
      var first = seen[m.id];
      var doing = runs.length === 0 ? "-" : runs.join(" · ");
      var more = extras(m, knownMember);
      return {
        key: m.id,
        colour: colour(m.id),
        cells: [
          m.index + " / " + count,
          m.instance === undefined ? "-" : m.instance,
          m.id,
          m.weight === undefined ? "" : String(m.weight),
          first === undefined ? "-" : age(now - first),
          doing,
          m.metadata,
          more
        ],
        // Cells are one line each: the whole text is in the tooltip.
        titles: [undefined, m.instance === undefined ? "" : m.instance, m.id, undefined, "joined at revision " +
          m.joinRevision, doing, m.metadata, more]
      };
    });
    byId("members").classList.toggle("noweight", !weighted);
    memberTable(rows);
  };

  // --- The shard grid ---
  var cells = [];
  var cellSigs = [];
  var renderShards = function (view) {
    var grid = byId("grid");
    var owners = view.shards ? view.shards.owners : [];
    byId("shardStat").classList.toggle("hidden", !view.shards);
    byId("shardCount").textContent = String(owners.length);
    while (cells.length > owners.length) { cells.pop().remove(); cellSigs.pop(); }
    while (cells.length < owners.length) {
      var div = document.createElement("div");
      div.dataset.shard = String(cells.length);
      grid.appendChild(div);
      cells.push(div);
      cellSigs.push("");
    }
    var paused = false, pinned = false;
    // The operator's controls (etcdseq shards pause|pin), as the view lists them.
    var controls = view.controls || { pins: [], paused: [] };
    var pausedShards = {}, pinnedTo = {};
    controls.paused.forEach(function (s) { pausedShards[s] = true; });
    controls.pins.forEach(function (p) { pinnedTo[p.shard] = p.to; });
    for (var i = 0; i < owners.length; i++) {
      var o = owners[i];
      if (pausedShards[o.shard] || pinnedTo[o.shard] !== undefined) {
        o = Object.assign({}, o, { paused: o.paused || pausedShards[o.shard] === true, pinned: o.pinned !== undefined ? o.pinned : pinnedTo[o.shard] });
      }
      if (o.paused) paused = true;
      if (o.pinned) pinned = true;
      var more = extras(o, knownOwner);
      var sig = o.holder + "|" + o.planned + "|" + o.waiting.join(",") + "|" + o.fence + "|" + !!o.paused + "|" +
        (o.pinned === undefined ? "" : String(o.pinned)) + "|" + more;
      if (sig === cellSigs[i]) continue;
      cellSigs[i] = sig;
      var cell = cells[i];
      var state = o.holder === undefined ? "free" : o.holder === o.planned ? "run" : "move";
      cell.className = state + (o.waiting.length > 0 ? " wait" : "") + (o.paused ? " paused" : "") + (o.pinned ? " pinned" : "");
      cell.dataset.holder = o.holder === undefined ? "" : o.holder;
      cell.dataset.planned = o.planned === undefined ? "" : o.planned;
      cell.dataset.state = state;
      if (state === "run") { cell.style.background = colour(o.holder); cell.style.borderColor = "transparent"; }
      else if (state === "move") {
        cell.style.background = "linear-gradient(135deg, " + colour(o.holder) + " 50%, " + colour(o.planned) + " 50%)";
        cell.style.borderColor = "transparent";
      } else { cell.style.background = "transparent"; cell.style.borderColor = colour(o.planned); }
      cell.title = "shard " + o.shard + ": " + (o.holder === undefined ? "released" : "held by " + o.holder) +
        (o.holder === o.planned ? "" : ", planned for " + o.planned) +
        (o.fence === undefined ? "" : ", fence " + o.fence) +
        (o.waiting.length > 0 ? ", waiting: " + o.waiting.join(", ") : "") +
        (o.paused ? ", paused" : "") + (o.pinned ? ", pinned" + (typeof o.pinned === "string" ? " to " + o.pinned : "") : "") +
        (more === "" ? "" : ", " + more);
    }
    document.querySelector(".paused-legend").classList.toggle("hidden", !paused);
    document.querySelector(".pinned-legend").classList.toggle("hidden", !pinned);
  };

  // --- Waiting lines ---
  var waitingItems = [];
  var maxWaiting = 500;
  var renderWaiting = function (view) {
    var ul = byId("waiting");
    var lines = view.waiting.slice(0, maxWaiting);
    if (view.waiting.length > maxWaiting) lines.push("… and " + (view.waiting.length - maxWaiting) + " more");
    if (lines.length === 0) lines.push("nothing: the group has converged");
    while (waitingItems.length > lines.length) waitingItems.pop().remove();
    for (var i = 0; i < lines.length; i++) {
      if (waitingItems[i] === undefined) { waitingItems[i] = document.createElement("li"); ul.appendChild(waitingItems[i]); }
      if (waitingItems[i].textContent !== lines[i]) waitingItems[i].textContent = lines[i];
    }
    byId("waitingCount").textContent = view.waiting.length === 0 ? "" : "(" + view.waiting.length + ")";
    var converged = byId("converged");
    converged.textContent = view.waiting.length === 0 ? "converged" : view.waiting.length + " waiting";
  };

  // --- One view ---
  var otherText = "";
  var apply = function () {
    var data = pending;
    pending = null;
    scheduled = false;
    if (data === null) return;
    var started = performance.now();
    var view = data.view;
    current.view = view;
    current.seen = data.seen;
    current.at = data.at;
    byId("group").textContent = view.group;
    document.title = "etcdseq ui · " + view.group;
    byId("revision").textContent = String(view.revision);
    byId("count").textContent = String(view.members.length);
    byId("updated").textContent = clock(data.at);
    renderMembers(view, data.seen, Date.now());
    renderShards(view);
    renderWaiting(view);
    lockTable(view.locks.map(function (l) {
      return { key: String(l.index), cells: [String(l.index), l.holder, String(l.fence), l.waiting.join(", ") || "-"] };
    }));
    handoverTable(view.handover.map(function (h) { return { key: h.id, cells: [h.id, String(h.revision)] }; }));
    var other = {};
    var any = false;
    for (var key in view) if (!knownView[key]) { other[key] = view[key]; any = true; }
    var text = any ? JSON.stringify(other, null, 2) : "";
    if (text !== otherText) { byId("other").textContent = text; otherText = text; }
    byId("otherSection").classList.toggle("hidden", !any);
    stats.views++;
    stats.applies.push({ members: view.members.length, shards: view.shards ? view.shards.shards : 0, ms: performance.now() - started });
    if (stats.applies.length > 200) stats.applies.shift();
  };
  // Views that come faster than frames are drawn as the latest only.
  var pending = null;
  var scheduled = false;
  var schedule = function () {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(apply);
    // A tab in the background gets no frames: it still keeps up, at a slower pace.
    setTimeout(apply, 250);
  };

  // --- The timeline ---
  var renderTimeline = function (entries) {
    var ul = byId("timeline");
    for (var i = 0; i < entries.length; i++) {
      var e = entries[i];
      if (e.seq <= current.seq) continue;
      current.seq = e.seq;
      var li = document.createElement("li");
      li.className = e.kind;
      var time = document.createElement("time");
      time.textContent = clock(e.at);
      li.appendChild(time);
      li.appendChild(document.createTextNode(e.text));
      ul.insertBefore(li, ul.firstChild);
    }
    while (ul.childNodes.length > 200) ul.lastChild.remove();
  };

  // --- The connection, and what the banner says ---
  var banner = function () {
    var el = byId("banner");
    var state = byId("state");
    var text = "";
    var etcd = current.status === null ? "connecting" : current.status.etcd;
    if (!current.open) {
      text = "lost the connection to etcdseq ui, reconnecting…";
      etcd = "connecting";
    } else if (etcd === "unavailable") {
      text = "etcd unavailable, reconnecting… (since " + clock(current.status.since) + ")" +
        (current.status.reason ? ": " + current.status.reason : "");
    }
    el.textContent = text;
    el.classList.toggle("on", text !== "");
    document.body.dataset.etcd = etcd;
    state.textContent = !current.open ? "reconnecting…" : etcd === "connected" ? "etcd connected" : "etcd unavailable";
    state.className = current.open && etcd === "connected" ? "ok" : "bad";
  };

  var source = null;
  var connect = function () {
    source = new EventSource("events");
    source.onopen = function () { current.open = true; banner(); };
    source.onerror = function () {
      current.open = false;
      banner();
      // The browser retries by itself unless the answer was not an event stream: then this page does.
      if (source.readyState === EventSource.CLOSED) { source.close(); setTimeout(connect, 2000); }
    };
    source.addEventListener("hello", function (event) {
      var hello = JSON.parse(event.data);
      if (current.boot !== null && current.boot !== hello.boot) {
        current.seq = 0;
        byId("timeline").textContent = "";
      }
      current.boot = hello.boot;
    });
    source.addEventListener("view", function (event) { pending = JSON.parse(event.data); schedule(); });
    source.addEventListener("status", function (event) { current.status = JSON.parse(event.data); banner(); });
    source.addEventListener("timeline", function (event) { renderTimeline(JSON.parse(event.data)); });
  };
  connect();

  // Ages move on by themselves.
  setInterval(function () { if (current.view !== null) renderMembers(current.view, current.seen, Date.now()); }, 1000);

  // --- Measurements: with ?measure, every frame's time since the one before (the browser test reads them) ---
  if (/[?&]measure\b/.test(location.search)) {
    var last = performance.now();
    var frame = function (now) {
      stats.frames.push(now - last);
      if (stats.frames.length > 2000) stats.frames.shift();
      last = now;
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }
})();
`
