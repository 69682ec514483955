/**
 * The page `etcdseq ui` serves at `/`: plain HTML and CSS with one inline script (script.ts), no build step and no
 * data in the markup: everything the group holds arrives through `/events` and is written with `textContent`.
 */
import { script } from "./script.js"

export { script }

const style = String.raw`
:root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --bg: #f7f8fa; --card: #fff; --line: #e3e6eb;
  --bad: #b42318; --bad-bg: #fee4e2; --ok: #067647; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e9ef; --muted: #98a2b3; --bg: #12151b; --card: #1a1f27;
  --line: #2b313b; --bad: #fda29b; --bad-bg: #55160c; --ok: #75e0a7; } }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; padding: 10px 16px; background: var(--card);
  border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 2; }
header h1 { font-size: 15px; margin: 0; }
header .stat { color: var(--muted); }
header .stat b { color: var(--fg); font-weight: 600; }
#state { margin-left: auto; font-weight: 600; }
#state.ok { color: var(--ok); }
#state.bad { color: var(--bad); }
#banner { display: none; padding: 8px 16px; background: var(--bad-bg); color: var(--bad); font-weight: 600; }
#banner.on { display: block; }
main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(320px, 2fr); gap: 12px; padding: 12px 16px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; min-width: 0; }
section h2 { font-size: 13px; margin: 0 0 6px; }
section h2 small { color: var(--muted); font-weight: normal; }
.scroll { max-height: 60vh; overflow: auto; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; color: var(--muted); font-weight: 600; position: sticky; top: 0; background: var(--card); }
th, td { padding: 2px 8px 2px 0; white-space: nowrap; vertical-align: top; }
td.id, .row .id { font-family: ui-monospace, monospace; font-size: 12px; }
/* Member rows are a grid of divs, not a table: a row out of view is neither laid out nor painted
   (content-visibility), which a table row cannot do; at a thousand members that is most of a frame. */
#members .row { display: grid; gap: 0 8px; height: 20px; align-items: center; content-visibility: auto;
  contain-intrinsic-size: auto 20px; grid-template-columns: 72px 110px 190px 56px 64px minmax(200px, 3fr)
  minmax(100px, 1.5fr) minmax(40px, 0.5fr); }
#members.noweight .row { grid-template-columns: 72px 110px 190px 64px minmax(200px, 3fr) minmax(100px, 1.5fr)
  minmax(40px, 0.5fr); }
#members.noweight .weight { display: none; }
#members .row > span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#members .head { color: var(--muted); font-weight: 600; position: sticky; top: 0; z-index: 1; background: var(--card);
  content-visibility: visible; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, 14px); gap: 2px; }
#grid div { width: 14px; height: 14px; border-radius: 2px; position: relative; border: 2px solid transparent; }
#grid div.free { background: transparent; border-style: dashed; }
#grid div.wait { box-shadow: 0 0 0 1px var(--fg); }
#grid div.paused::after { content: ""; position: absolute; inset: 2px 3px; border-left: 2px solid var(--fg);
  border-right: 2px solid var(--fg); }
#grid div.pinned::before { content: ""; position: absolute; right: -2px; top: -2px; width: 5px; height: 5px;
  border-radius: 50%; background: var(--fg); }
.legend { display: flex; gap: 12px; flex-wrap: wrap; color: var(--muted); margin: 6px 0 0; }
.legend span { display: inline-flex; align-items: center; gap: 4px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; border: 2px solid transparent; }
ul { list-style: none; margin: 0; padding: 0; }
li { padding: 1px 0; }
#waiting li { font-family: ui-monospace, monospace; font-size: 12px; }
#timeline li time { color: var(--muted); margin-right: 8px; font-variant-numeric: tabular-nums; }
#timeline li.leave, #timeline li.etcd { color: var(--bad); }
#timeline li.join { color: var(--ok); }
#other { margin: 0; white-space: pre-wrap; font-size: 12px; }
.hidden, .legend span.hidden { display: none; }
.muted { color: var(--muted); }
@media (max-width: 900px) { main { grid-template-columns: 1fr; } }
`

/** The page: served as is, the same for every group. */
export const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>etcdseq ui</title>
<style>${style}</style>
</head>
<body data-etcd="connecting">
<header>
  <h1>etcdseq · <span id="group"></span></h1>
  <span class="stat">revision <b id="revision">-</b></span>
  <span class="stat"><b id="count">0</b> members</span>
  <span class="stat" id="shardStat"><b id="shardCount">0</b> shards</span>
  <span class="stat" id="converged">-</span>
  <span class="stat">updated <b id="updated">-</b></span>
  <span id="state">connecting…</span>
</header>
<div id="banner" role="status" aria-live="polite"></div>
<main>
  <div>
    <section>
      <h2>Members <small>in index order</small></h2>
      <div class="scroll">
        <div id="members" class="noweight" role="table">
          <div class="row head" role="row"><span>INDEX</span><span>INSTANCE</span><span>ID</span>
            <span class="weight">WEIGHT</span><span>AGE</span><span>RUNS</span><span>METADATA</span><span>MORE</span></div>
          <div id="memberRows"></div>
        </div>
      </div>
    </section>
    <section id="shards" style="margin-top:12px">
      <h2>Shards <small>coloured by the member that holds them</small></h2>
      <div id="grid"></div>
      <div class="legend">
        <span><i style="background:#5b8def"></i>running: held by its planned owner</span>
        <span><i style="background:linear-gradient(135deg,#e9a23b 50%,#5b8def 50%)"></i>moving: held by one, planned for another</span>
        <span><i style="border:2px dashed #5b8def"></i>released: waiting for its planned owner</span>
        <span><i style="box-shadow:0 0 0 1px currentColor;background:#5b8def"></i>someone waits for it</span>
        <span class="paused-legend hidden">‖ paused</span>
        <span class="pinned-legend hidden">● pinned</span>
      </div>
    </section>
  </div>
  <div>
    <section>
      <h2>Waiting for <small id="waitingCount"></small></h2>
      <div class="scroll" style="max-height:24vh"><ul id="waiting"></ul></div>
    </section>
    <section style="margin-top:12px">
      <h2>Index locks</h2>
      <div class="scroll" style="max-height:20vh">
        <table id="locks"><thead><tr><th>INDEX</th><th>HOLDER</th><th>FENCE</th><th>WAITING</th></tr></thead>
          <tbody></tbody></table>
      </div>
      <h2 style="margin-top:8px">Handover</h2>
      <div class="scroll" style="max-height:20vh">
        <table id="handover"><thead><tr><th>MEMBER</th><th>PUBLISHED</th></tr></thead><tbody></tbody></table>
      </div>
    </section>
    <section id="otherSection" class="hidden" style="margin-top:12px">
      <h2>More of the view</h2>
      <pre id="other"></pre>
    </section>
    <section style="margin-top:12px">
      <h2>Timeline <small>latest first</small></h2>
      <div class="scroll" style="max-height:36vh"><ul id="timeline"></ul></div>
    </section>
  </div>
</main>
<script>${script}</script>
</body>
</html>
`
