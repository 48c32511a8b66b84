/* sdbctl view: the page. Plain JavaScript, no framework, no build step, no network beyond this origin.
 *
 * Two backends: served (fetch /api/*, the token from location.search sent as X-Sdb-Token) and embedded
 * (the `--html FILE` output: the data in <script type="application/json" id="sdb-data">, filtered and
 * sorted here by the server's rules). Every recorded string goes into the page as text (text nodes,
 * never HTML); control and bidi characters are shown escaped, as visible \uXXXX. */
(function () {
  "use strict";

  var ROW_H = 46; // px: one session row (the list is virtual: only the visible rows exist)
  var PAGE = 200; // rows fetched at once
  var OVERSCAN = 10;
  // sdb/text.py's rule: control and format characters (bidi overrides and isolates, zero-width ones,
  // BOM, tags), surrogates, line and paragraph separators and noncharacters, each as a visible escape
  // (tab and newline kept in free text)
  var HIDDEN_ALL = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}\uFDD0-\uFDEF\uFFFE\uFFFF]/u;
  var HIDDEN = /(?![\t\n])[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}\uFDD0-\uFDEF\uFFFE\uFFFF]/u;
  var NAMED = { "\n": "\\n", "\t": "\\t", "\r": "\\r" };
  var timings = { listPaint: null, sessionRender: null, sessionRows: null };
  window.__sdbTimings = timings;

  // ---- text, always as text ------------------------------------------------------------------------

  /** A hidden character as sdb/text.py shows it: \\n, \\x1b, \\u202e, \\U000e0001. */
  function escaped(ch) {
    var code = ch.codePointAt(0);
    if (NAMED[ch]) return NAMED[ch];
    if (code < 0x20 || (code >= 0x7f && code < 0xa0)) return "\\x" + ("0" + code.toString(16)).slice(-2);
    if (code > 0xffff) return "\\U" + ("00000000" + code.toString(16)).slice(-8);
    return "\\u" + ("0000" + code.toString(16)).slice(-4);
  }

  /** `value` as a plain string with every hidden character escaped (for an option's label, a title). */
  function visible(value) {
    return Array.from(String(value)).map(function (ch) { return HIDDEN_ALL.test(ch) ? escaped(ch) : ch; }).join("");
  }

  /** A fragment showing `value` as text; hidden characters as visible escapes (newlines kept if multiline). */
  function text(value, multiline) {
    var s = typeof value === "string" ? value : value === null || value === undefined ? "" : String(value);
    var frag = document.createDocumentFragment();
    var re = multiline ? HIDDEN : HIDDEN_ALL;
    if (!re.test(s)) {
      frag.appendChild(document.createTextNode(s));
      return frag;
    }
    var plain = "";
    var chars = Array.from(s); // by code point: an emoji's two halves are one character
    for (var i = 0; i < chars.length; i++) {
      var ch = chars[i];
      if (re.test(ch)) {
        if (plain) frag.appendChild(document.createTextNode(plain));
        plain = "";
        var mark = document.createElement("span");
        mark.className = "esc";
        mark.textContent = escaped(ch);
        frag.appendChild(mark);
      } else {
        plain += ch;
      }
    }
    if (plain) frag.appendChild(document.createTextNode(plain));
    return frag;
  }

  /** An element with a class and children: strings become text (escaped as `text` does), nodes are kept. */
  function el(tag, cls) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
    return node;
  }

  function add(node, child) {
    if (child === null || child === undefined || child === false) return node;
    if (Array.isArray(child)) {
      child.forEach(function (c) { add(node, c); });
    } else if (typeof child === "string" || typeof child === "number" || typeof child === "boolean") {
      node.appendChild(text(String(child), false));
    } else {
      node.appendChild(child);
    }
    return node;
  }

  function json(value) {
    try {
      return JSON.stringify(value);
    } catch (e) {
      return String(value);
    }
  }

  function pct(x) {
    return typeof x === "number" && isFinite(x) ? (x * 100).toFixed(1) + "%" : "–";
  }

  function num(x, digits) {
    return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "–";
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function $(id) {
    return document.getElementById(id);
  }

  // ---- backends ------------------------------------------------------------------------------------

  function fetchBackend(token) {
    function get(path, params) {
      var q = new URLSearchParams();
      Object.keys(params || {}).forEach(function (k) {
        var v = params[k];
        if (v !== null && v !== undefined && v !== "" && v !== false) q.set(k, v === true ? "1" : String(v));
      });
      var qs = q.toString();
      return fetch(path + (qs ? "?" + qs : ""), { headers: { "X-Sdb-Token": token }, cache: "no-store" }).then(
        function (r) {
          return r.json().then(
            function (body) {
              if (!r.ok) throw new Error(body && body.error ? body.error : "HTTP " + r.status);
              return body;
            },
            function () {
              throw new Error(r.status === 403 ? "refused: open the URL sdbctl view printed (with its token)" : "HTTP " + r.status);
            }
          );
        }
      );
    }
    return {
      embedded: false,
      header: function () { return get("/api/header"); },
      sessions: function (q) {
        return get("/api/sessions", {
          offset: q.offset, limit: q.limit, layer: q.layer, reason: q.reason, action: q.action,
          outcome: q.outcome, text: q.text, differ_only: q.differ_only,
        });
      },
      session: function (id, rep) { return get("/api/session", { id: id, rep: rep }); },
      call: function (side, id, rep, seq) { return get("/api/call", { side: side, id: id, rep: rep, seq: seq }); },
    };
  }

  /** The `--html FILE` backend: the embedded rows, filtered and sorted by the server's rules. */
  function embeddedBackend(data) {
    var rows = (data.sessions || []).slice().sort(function (a, b) { return a.rank - b.rank; });
    var details = data.details || {};
    var calls = data.calls || {};

    function detailRows(id) {
      var out = [];
      Object.keys(details).forEach(function (key) {
        if (key.slice(0, key.lastIndexOf("#")) === id) out = out.concat(details[key].rows || []);
      });
      return out;
    }

    function differs(r) {
      return !!(r.first || (r.outcome && r.outcome.change) || Object.keys(r.counts || {}).some(function (k) { return r.counts[k] > 0; }));
    }

    function matches(r, q) {
      if (q.differ_only && !differs(r)) return false;
      if (q.layer && !((r.counts || {})[q.layer] > 0)) return false;
      var oc = r.outcome || {};
      if (q.outcome === "pass->fail" || q.outcome === "fail->pass") {
        if (oc.change !== q.outcome) return false;
      } else if (q.outcome === "pass" || q.outcome === "fail") {
        if (oc.change || oc.candidate !== (q.outcome === "pass")) return false;
      }
      var div = detailRows(r.session_id).filter(function (x) { return x.divergence; });
      function actionOf(x) {
        return [x.base && x.base.name, x.candidate && x.candidate.name];
      }
      if (q.reason && !((r.first && r.first.reason === q.reason) || div.some(function (x) { return x.divergence.reason === q.reason; }))) {
        return false;
      }
      if (q.action && !((r.first && r.first.action === q.action) || div.some(function (x) { return actionOf(x).indexOf(q.action) >= 0; }))) {
        return false;
      }
      if (q.text) {
        var t = q.text.toLowerCase();
        var hay = [r.session_id, r.first && r.first.action];
        div.forEach(function (x) {
          hay = hay.concat(actionOf(x), (x.divergence.fields || []).map(function (f) { return f.path; }));
        });
        if (!hay.some(function (h) { return typeof h === "string" && h.toLowerCase().indexOf(t) >= 0; })) return false;
      }
      return true;
    }

    return {
      embedded: true,
      header: function () { return Promise.resolve(data.header); },
      sessions: function (q) {
        var found = rows.filter(function (r) { return matches(r, q); });
        return Promise.resolve({ total: found.length, offset: q.offset, rows: found.slice(q.offset, q.offset + q.limit) });
      },
      session: function (id, rep) {
        var d = details[id + "#" + rep];
        if (d) return Promise.resolve(d);
        return Promise.reject(new Error("this session's detail is not in the file: run `sdbctl view` to see every session"));
      },
      call: function (side, id, rep, seq) {
        var c = calls[side + "/" + id + "#" + rep + "/" + seq];
        if (c) return Promise.resolve(c);
        return Promise.reject(new Error("this model call is not in the file: run `sdbctl view` to see it"));
      },
    };
  }

  // ---- state ---------------------------------------------------------------------------------------

  var api = null;
  var header = null;
  var list = { total: 0, pages: {}, pending: {}, gen: 0, sel: -1, selId: null };
  var detail = { data: null, divIdx: [], cur: -1, rows: [] };
  var filters = { layer: "", reason: "", action: "", outcome: "", text: "", differ_only: false };
  var detailAsked = 0; // the sessions asked for so far: only the last one asked is shown

  function showError(where, err) {
    var node = el("p", "error", String(err && err.message ? err.message : err));
    if (where === "detail") {
      clear($("detail"));
      $("detail").appendChild(node);
    } else {
      clear($("header"));
      $("header").appendChild(node);
    }
  }

  // ---- header --------------------------------------------------------------------------------------

  function fig(title) {
    var box = el("div", "fig", el("b", null, title));
    for (var i = 1; i < arguments.length; i++) add(box, el("div", null, arguments[i]));
    return box;
  }

  function renderHeader(h) {
    var s = h.summary || {};
    var root = $("header");
    clear(root);
    root.appendChild(el("h1", null, h.base_run, el("span", "arrow", "→"), h.candidate_run));
    var how = h.comparison === "step" ? "by step" : "by commit";
    var meta = ["compared " + how, "layers: " + (h.layers || []).join(", "), h.sessions + " sessions compared"];
    var metaLine = el("div", "meta", meta.join(" · "));
    if (h.verdict) {
      metaLine.appendChild(document.createTextNode(" · verdict: "));
      metaLine.appendChild(el("span", "verdict " + (h.verdict.passed ? "pass" : "fail"), h.verdict.passed ? "PASS" : "FAIL"));
    }
    root.appendChild(metaLine);
    var figs = el("div", "figs");
    figs.appendChild(
      fig(
        "divergence",
        pct(s.step_divergence_rate) + " of steps (" + s.steps_diverged + "/" + s.steps_compared + ")",
        pct(s.session_divergence_rate) + " of sessions (" + s.sessions_diverged + "/" + s.sessions_compared + ")"
      )
    );
    if (s.drift) {
      var d = s.drift;
      figs.appendChild(
        fig(
          "versus noise",
          pct(d.candidate) + " vs noise floor " + pct(d.noise_floor),
          "difference " + pct(d.difference) + ", 95% CI [" + pct(d.ci95[0]) + ", " + pct(d.ci95[1]) + "]",
          (d.drift_above_noise ? "above noise" : "within noise") +
            " · min detectable " + (d.min_detectable === null || d.min_detectable === undefined ? "none ≤ 100%" : pct(d.min_detectable))
        )
      );
    }
    if (s.outcomes) {
      var o = s.outcomes;
      var flips = el("div", null, el("span", o.negative_flips ? "fail" : null, "pass→fail " + o.negative_flips), " · fail→pass " + o.positive_flips);
      var box = fig(
        "outcomes",
        "passed " + o.base_pass + "/" + o.sessions + " → " + o.candidate_pass + "/" + o.sessions,
        "McNemar p = " + num(o.mcnemar_p, 3) +
          " · min detectable " + (o.min_detectable === null || o.min_detectable === undefined ? "none ≤ 100%" : pct(o.min_detectable))
      );
      box.insertBefore(flips, box.childNodes[2]);
      figs.appendChild(box);
    }
    var layers = s.by_layer || {};
    var table = el("table", null, el("tr", null, el("th", null, "layer"), el("th", null, "steps diverged"), el("th", null, "sessions"), el("th", null, "divergences")));
    Object.keys(layers).forEach(function (name) {
      var l = layers[name];
      table.appendChild(
        el("tr", null, el("td", null, name), el("td", null, l.steps_diverged + "/" + l.steps_compared),
          el("td", null, l.sessions_diverged + "/" + l.sessions_compared), el("td", null, String(l.divergences)))
      );
    });
    figs.appendChild(fig("by layer", table));
    if (h.verdict && h.verdict.checks && h.verdict.checks.length) {
      var checks = el("table", null, el("tr", null, el("th", null, "check"), el("th", null, "limit"), el("th", null, "measured"), el("th", null, "")));
      h.verdict.checks.forEach(function (c) {
        checks.appendChild(
          el("tr", null, el("td", null, c.name), el("td", null, fmt(c.limit)), el("td", null, fmt(c.measured)),
            el("td", c.passed ? "pass" : "fail", c.passed ? "pass" : "FAIL"))
        );
      });
      figs.appendChild(fig("verdict", checks));
    }
    root.appendChild(figs);
  }

  function fmt(v) {
    return typeof v === "string" ? v : json(v);
  }

  function fillSelect(id, values, label) {
    var sel = $(id);
    (values || []).forEach(function (v) {
      if (v === "") return; // "no change": covered by "only sessions that differ"
      var opt = document.createElement("option");
      opt.value = v;
      opt.textContent = visible(label ? label(v) : v);
      sel.appendChild(opt);
    });
  }

  // ---- the session list (virtual) ------------------------------------------------------------------

  function query(offset) {
    return {
      offset: offset, limit: PAGE, layer: filters.layer, reason: filters.reason, action: filters.action,
      outcome: filters.outcome, text: filters.text, differ_only: filters.differ_only,
    };
  }

  function ensurePage(p) {
    if (list.pages[p] || list.pending[p]) return list.pending[p] || Promise.resolve(list.pages[p]);
    var gen = list.gen;
    var pending = api.sessions(query(p * PAGE)).then(function (res) {
      if (gen !== list.gen) return null;
      list.pages[p] = res.rows;
      delete list.pending[p];
      if (res.total !== list.total) setTotal(res.total);
      renderList();
      return res.rows;
    }, function (err) {
      delete list.pending[p];
      showError("header", err);
    });
    list.pending[p] = pending;
    return pending;
  }

  function rowAt(i) {
    var page = list.pages[Math.floor(i / PAGE)];
    return page ? page[i % PAGE] || null : null;
  }

  function setTotal(total) {
    list.total = total;
    $("list-spacer").style.height = total * ROW_H + "px";
    $("list-count").textContent = total.toLocaleString("en") + (total === 1 ? " session" : " sessions");
  }

  function resetList() {
    list.gen++;
    list.pages = {};
    list.pending = {};
    list.sel = -1;
    $("list").scrollTop = 0;
    var gen = list.gen;
    return api.sessions(query(0)).then(function (res) {
      if (gen !== list.gen) return res; // a later filter's list is on its way: this answer is stale
      list.pages[0] = res.rows;
      setTotal(res.total);
      relocateSelection();
      renderList();
      if (timings.listPaint === null) timings.listPaint = performance.now();
      return res;
    });
  }

  function relocateSelection() {
    list.sel = -1;
    Object.keys(list.pages).forEach(function (p) {
      list.pages[p].forEach(function (r, k) {
        if (r.session_id === list.selId) list.sel = Number(p) * PAGE + k;
      });
    });
  }

  function outcomeBadge(o) {
    if (!o) return null;
    if (o.change === "pass->fail") return el("span", "badge flip-bad", "pass → fail");
    if (o.change === "fail->pass") return el("span", "badge flip-good", "fail → pass");
    if (o.candidate === true) return el("span", "badge", "pass");
    if (o.candidate === false) return el("span", "badge", "fail");
    return null;
  }

  function sessionRow(r, i) {
    var node = el("div", "srow" + (i === list.sel ? " selected" : ""));
    node.style.top = i * ROW_H + "px";
    node.setAttribute("role", "option");
    node.dataset.index = String(i);
    if (!r) {
      node.appendChild(el("span", "placeholder", "…"));
      return node;
    }
    node.dataset.session = r.session_id;
    var line1 = el("div", null, el("span", "sid", r.session_id), outcomeBadge(r.outcome));
    if (r.repeats) line1.appendChild(el("span", "badge", r.repeats.equal + "/" + r.repeats.n + " equal"));
    var counts = r.counts || {};
    Object.keys(counts).forEach(function (layer) {
      if (counts[layer] > 0) line1.appendChild(el("span", "badge layer-" + layer, layer + " " + counts[layer]));
    });
    if (!r.first && !(r.outcome && r.outcome.change)) line1.appendChild(el("span", "badge equal", "equal"));
    node.appendChild(line1);
    var f = r.first;
    node.appendChild(
      el("div", "line2", f ? "first: " + f.layer + " " + f.reason + " " + (f.action || "") + (f.step ? " @ " + f.step : "") : r.outcome && r.outcome.change ? "no divergence" : "")
    );
    return node;
  }

  function renderList() {
    var box = $("list");
    var spacer = $("list-spacer");
    var first = Math.max(0, Math.floor(box.scrollTop / ROW_H) - OVERSCAN);
    var last = Math.min(list.total, Math.ceil((box.scrollTop + box.clientHeight) / ROW_H) + OVERSCAN);
    var frag = document.createDocumentFragment();
    for (var i = first; i < last; i++) {
      var r = rowAt(i);
      if (!r) ensurePage(Math.floor(i / PAGE));
      frag.appendChild(sessionRow(r, i));
    }
    clear(spacer);
    spacer.appendChild(frag);
  }

  function select(i) {
    if (i < 0 || i >= list.total) return;
    list.sel = i;
    var box = $("list");
    var top = i * ROW_H;
    if (top < box.scrollTop) box.scrollTop = top;
    else if (top + ROW_H > box.scrollTop + box.clientHeight) box.scrollTop = top + ROW_H - box.clientHeight;
    renderList();
    Promise.resolve(rowAt(i) || ensurePage(Math.floor(i / PAGE))).then(function () {
      var r = rowAt(i);
      if (!r || list.sel !== i) return;
      list.selId = r.session_id;
      setHash(r.session_id, r.first && r.first.repeat ? r.first.repeat : 0, null); // the repeat that diverged
    });
  }

  // ---- one session ---------------------------------------------------------------------------------

  /** The arguments as a tree, each node's path written as the differ writes it (`a.b[0].c`). */
  function argsTree(value, changed, prefix) {
    if (value === null || typeof value !== "object") return el("span", "v", json(value));
    var ul = el("ul", prefix ? null : "args");
    var keys = Array.isArray(value) ? value.map(function (_, k) { return k; }) : Object.keys(value);
    if (!keys.length) return el("span", "v", Array.isArray(value) ? "[]" : "{}");
    keys.forEach(function (k) {
      var path = typeof k === "number" ? prefix + "[" + k + "]" : prefix ? prefix + "." + k : k;
      var v = value[k];
      var li = el("li", changed[path] ? "changed" : null, el("span", "k", typeof k === "number" ? "[" + k + "]" : k), ": ");
      if (changed[path]) li.title = "changed";
      li.dataset.path = path;
      li.appendChild(argsTree(v, changed, path));
      ul.appendChild(li);
    });
    return ul;
  }

  function words(list, side) {
    var span = el("div", "sub speech");
    list.forEach(function (w) {
      if (w[0] === "=") span.appendChild(text(w[1], true));
      else if (w[0] === "-" && side === "base") span.appendChild(el("span", "w-del", w[1]));
      else if (w[0] === "+" && side === "candidate") span.appendChild(el("span", "w-ins", w[1]));
      if (w[0] === "=" || (w[0] === "-" && side === "base") || (w[0] === "+" && side === "candidate")) span.appendChild(document.createTextNode(" "));
    });
    return span;
  }

  function eventCell(ev, side, div) {
    var cell = el("div", "cell ev " + side);
    var head = el("div", null, el("span", "name", ev.name));
    if (ev.status && ev.status !== "ok") head.appendChild(el("span", "st-" + ev.status, " " + ev.status));
    head.appendChild(el("span", "seq", "#" + ev.seq));
    if (ev.step) head.appendChild(el("span", "step", ev.step));
    if (ev.layer) head.appendChild(el("span", "badge layer-" + ev.layer, ev.layer));
    cell.appendChild(head);
    var changed = {};
    (div && div.fields ? div.fields : []).forEach(function (f) { changed[f.path] = true; });
    if (ev.text !== null && ev.text !== undefined) {
      if (div && div.words) cell.appendChild(words(div.words, side));
      else cell.appendChild(el("div", "sub speech", text(ev.text, true)));
    }
    if (ev.args && (typeof ev.args !== "object" || Object.keys(ev.args).length)) {
      var tree = argsTree(ev.args, changed, "");
      if (changed["(arguments)"]) tree.classList.add("changed");
      cell.appendChild(el("div", "sub", el("b", null, "args"), tree));
    }
    (ev.effects || []).forEach(function (e) {
      cell.appendChild(el("div", "sub", el("b", null, "effect"), e.name + " ", el("span", "st-" + e.status, e.status), " ", el("code", null, json(e.result))));
    });
    (ev.gates || []).forEach(function (g) {
      cell.appendChild(el("div", "sub", el("b", null, "gate"), g.name + ": ", el("code", null, json(g.decision)), g.reason ? " — " + g.reason : "", g.status && g.status !== "ok" ? " (" + g.status + ")" : ""));
    });
    (ev.states || []).forEach(function (st) {
      cell.appendChild(el("div", "sub", el("b", null, "state"), st.name + " = ", el("code", null, json(st.data))));
    });
    if (ev.llm_seq !== null && ev.llm_seq !== undefined) {
      var btn = el("button", "callbtn", "model call #" + ev.llm_seq + " ▸");
      btn.type = "button";
      btn.dataset.side = side;
      btn.dataset.seq = String(ev.llm_seq); // one listener on #detail opens it (see wireFilters)
      cell.appendChild(btn);
    }
    return cell;
  }

  function toggleCall(cell, btn, side, sess, seq) {
    var open = cell.querySelector(".call");
    if (open) {
      open.parentNode.removeChild(open);
      return;
    }
    var box = el("div", "call", el("span", "muted", "loading…"));
    cell.insertBefore(box, btn.nextSibling);
    api.call(side, sess.session_id, sess.repeat, seq).then(function (c) {
      clear(box);
      var req = c.request || {};
      box.appendChild(el("div", "muted", (c.model || "") + " · " + (c.latency_ms === null || c.latency_ms === undefined ? "" : c.latency_ms + " ms · ") +
        (c.tokens_in === null || c.tokens_in === undefined ? "" : c.tokens_in + " in / " + c.tokens_out + " out")));
      (req.messages || []).forEach(function (m) {
        var content = typeof m.content === "string" ? m.content : json(m.content);
        var msg = el("div", "msg", el("span", "role", m.role || "?"), text(content || "", true));
        if (m.tool_calls) msg.appendChild(el("pre", null, json(m.tool_calls)));
        box.appendChild(msg);
      });
      if (req.tools) box.appendChild(el("details", null, el("summary", null, "tools (" + req.tools.length + ")"), el("pre", null, JSON.stringify(req.tools, null, 1))));
      box.appendChild(el("details", null, el("summary", null, "answer"), el("pre", null, JSON.stringify(c.response, null, 1))));
      box.appendChild(el("details", null, el("summary", null, "whole request"), el("pre", null, JSON.stringify(req, null, 1))));
    }, function (err) {
      clear(box);
      box.appendChild(el("span", "error", String(err.message || err)));
    });
  }

  function gapCell(side, other) {
    var what = side === "base" ? "not in the base (extra)" : "not in the candidate (missing)";
    return el("div", "cell gap " + side, (other && other.name ? other.name + ": " : "") + what);
  }

  function renderSession(s, seq, side) {
    var t0 = performance.now();
    var root = $("detail");
    clear(root);
    var firstAt = {};
    var firsts = s.first || {};
    Object.keys(firsts).forEach(function (layer) {
      if (firsts[layer] !== null && firsts[layer] !== undefined) firstAt[firsts[layer]] = (firstAt[firsts[layer]] || []).concat(layer);
    });
    var head = el("div", "dhead", el("h2", null, "session ", el("code", null, s.session_id), outcomeBadge(s.outcome)));
    if (s.repeats > 1) {
      var reps = el("div", "reps", "repeat: ");
      for (var k = 0; k < s.repeats; k++) {
        var a = el("a", k === s.repeat ? "current" : null, String(k));
        a.href = "#" + hashFor(s.session_id, k, null);
        reps.appendChild(a);
      }
      head.appendChild(reps);
    }
    var jump = el("div", "firsts");
    Object.keys(firsts).forEach(function (layer) {
      var at = firsts[layer];
      if (at === null || at === undefined) return;
      var b = el("button", null, "first " + layer + " divergence");
      b.type = "button";
      b.addEventListener("click", function () { gotoRow(at); });
      jump.appendChild(b);
    });
    if (!jump.childNodes.length) jump.appendChild(el("span", "muted", "no divergence in this repeat"));
    head.appendChild(jump);
    head.appendChild(el("div", "cols colheads", el("div", "colhead", "base: " + (header ? header.base_run : "")), el("div", "colhead", "candidate: " + (header ? header.candidate_run : ""))));
    root.appendChild(head);
    var body = el("div", "rows");
    var frag = document.createDocumentFragment();
    detail.rows = [];
    detail.divIdx = [];
    (s.rows || []).forEach(function (row, i) {
      var div = row.divergence;
      var node = el("div", "arow" + (div ? " div" : "") + (firstAt[i] ? " first" : ""));
      node.dataset.row = String(i);
      if (div) {
        detail.divIdx.push(i);
        var why = el("div", "why");
        (firstAt[i] || []).forEach(function (layer) { why.appendChild(el("span", "firstmark", "first " + layer + " divergence")); });
        add(why, [div.layer + ": " + div.reason]);
        if (div.similarity !== null && div.similarity !== undefined) add(why, " (similarity " + num(div.similarity, 2) + ")");
        (div.fields || []).forEach(function (f) {
          add(why, [" · ", el("code", null, f.path), " ", el("code", null, json(f.old)), " → ", el("code", null, json(f.new))]);
        });
        node.appendChild(why);
      }
      node.appendChild(row.base ? eventCell(row.base, "base", div) : gapCell("base", row.candidate));
      node.appendChild(row.candidate ? eventCell(row.candidate, "candidate", div) : gapCell("candidate", row.base));
      detail.rows.push(node);
      frag.appendChild(node);
    });
    if (!(s.rows || []).length) frag.appendChild(el("p", "hint", "no actions in this session"));
    body.appendChild(frag);
    timings.sessionBuild = performance.now() - t0;
    root.appendChild(body);
    detail.data = s;
    detail.cur = -1;
    void root.offsetHeight; // layout included in the measured render
    timings.sessionRender = performance.now() - t0;
    timings.sessionRows = (s.rows || []).length;
    var target = seq === null || seq === undefined ? null : findSeq(s, seq, side);
    if (target === null) {
      var order = (header && header.layers) || [];
      var layersWithFirst = Object.keys(firsts).filter(function (l) { return firsts[l] !== null && firsts[l] !== undefined; });
      layersWithFirst.sort(function (a, b) { return rank(order, a) - rank(order, b) || firsts[a] - firsts[b]; });
      if (layersWithFirst.length) target = firsts[layersWithFirst[0]];
      if (target !== null) gotoRow(target, true);
    } else {
      gotoRow(target, true);
    }
  }

  function rank(order, layer) {
    var i = order.indexOf(layer);
    return i < 0 ? order.length : i;
  }

  function findSeq(s, seq, side) {
    var rows = s.rows || [];
    var sides = side === "base" ? ["base"] : ["candidate", "base"];
    for (var k = 0; k < sides.length; k++) {
      for (var i = 0; i < rows.length; i++) {
        var ev = rows[i][sides[k]];
        if (ev && ev.seq === seq) return i;
      }
    }
    return null;
  }

  function gotoRow(i, quiet) {
    var node = detail.rows[i];
    if (!node) return;
    if (detail.cur >= 0 && detail.rows[detail.cur]) detail.rows[detail.cur].classList.remove("current");
    detail.cur = i;
    node.classList.add("current");
    node.scrollIntoView({ block: "center" });
    if (!quiet && detail.data) {
      var row = detail.data.rows[i];
      var side = row.candidate ? "candidate" : "base";
      setHash(detail.data.session_id, detail.data.repeat, row[side].seq, side);
    }
  }

  function nextDivergence(step) {
    var idx = detail.divIdx;
    if (!idx.length) return;
    var pick = null;
    if (step > 0) {
      for (var a = 0; a < idx.length; a++) if (idx[a] > detail.cur) { pick = idx[a]; break; }
    } else {
      for (var b = idx.length - 1; b >= 0; b--) if (idx[b] < detail.cur) { pick = idx[b]; break; }
    }
    if (pick !== null) gotoRow(pick);
  }

  // ---- the URL fragment: #session=ID&rep=K&seq=N ---------------------------------------------------

  var shown = ""; // the fragment the page shows now (so a hashchange we caused is not a reload)

  function hashFor(id, rep, seq, side) {
    var q = new URLSearchParams();
    q.set("session", id);
    q.set("rep", String(rep || 0));
    if (seq !== null && seq !== undefined) q.set("seq", String(seq));
    if (side === "base") q.set("side", "base");
    return q.toString();
  }

  function setHash(id, rep, seq, side) {
    var h = hashFor(id, rep, seq, side);
    if (location.hash.slice(1) === h) return;
    var sameSession = detail.data && detail.data.session_id === id && detail.data.repeat === rep;
    shown = h;
    history.replaceState(null, "", location.pathname + location.search + "#" + h);
    if (!sameSession) openFromHash();
  }

  function openFromHash() {
    var q = new URLSearchParams(location.hash.slice(1));
    var id = q.get("session");
    if (id === null) return;
    shown = location.hash.slice(1);
    var rep = parseInt(q.get("rep") || "0", 10) || 0;
    var seqText = q.get("seq");
    var seq = seqText === null ? null : parseInt(seqText, 10);
    var side = q.get("side");
    if (detail.data && detail.data.session_id === id && detail.data.repeat === rep) {
      if (seq !== null) {
        var at = findSeq(detail.data, seq, side);
        if (at !== null) gotoRow(at, true);
      }
      return;
    }
    list.selId = id;
    relocateSelection();
    renderList();
    var asked = ++detailAsked;
    api.session(id, rep).then(function (s) {
      if (asked !== detailAsked) return; // another session was asked for since: this one is stale
      renderSession(s, seq, side);
    }, function (err) {
      if (asked === detailAsked) showError("detail", err);
    });
  }

  // ---- wiring --------------------------------------------------------------------------------------

  function wireFilters() {
    var timer = null;
    function changed() {
      filters.layer = $("f-layer").value;
      filters.reason = $("f-reason").value;
      filters.action = $("f-action").value;
      filters.outcome = $("f-outcome").value;
      filters.text = $("f-text").value.trim();
      filters.differ_only = $("f-differ").checked;
      resetList().catch(function (err) { showError("header", err); });
    }
    ["f-layer", "f-reason", "f-action", "f-outcome", "f-differ"].forEach(function (id) {
      $(id).addEventListener("change", changed);
    });
    $("f-text").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(changed, 150);
    });
    $("filters").addEventListener("submit", function (e) {
      e.preventDefault();
      clearTimeout(timer);
      changed();
    });
    $("list").addEventListener("scroll", renderList, { passive: true });
    window.addEventListener("resize", renderList);
    $("detail").addEventListener("click", function (e) {
      var btn = e.target.closest ? e.target.closest(".callbtn") : null;
      if (btn && detail.data) toggleCall(btn.parentNode, btn, btn.dataset.side, detail.data, Number(btn.dataset.seq));
    });
    $("list").addEventListener("click", function (e) {
      var row = e.target.closest ? e.target.closest(".srow") : null;
      if (row) select(Number(row.dataset.index));
    });
    window.addEventListener("hashchange", function () {
      if (location.hash.slice(1) !== shown) openFromHash();
    });
    document.addEventListener("keydown", function (e) {
      var t = e.target;
      var typing = t && ((t.tagName === "INPUT" && t.type !== "checkbox") || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
      if (typing) {
        if (e.key === "Escape") t.blur();
        return;
      }
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") {
        e.preventDefault();
        $("f-text").focus();
      } else if (e.key === "j" || e.key === "k") {
        e.preventDefault();
        if (list.sel < 0) select(0);
        else select(list.sel + (e.key === "j" ? 1 : -1));
      } else if (e.key === "n" || e.key === "p") {
        e.preventDefault();
        nextDivergence(e.key === "n" ? 1 : -1);
      }
    });
  }

  function start() {
    var embedded = $("sdb-data");
    if (embedded) {
      var data = JSON.parse(embedded.textContent);
      api = embeddedBackend(data);
      if (data.limit_note) {
        $("limit-note").hidden = false;
        $("limit-note").appendChild(text(data.limit_note, false));
      }
    } else {
      api = fetchBackend(new URLSearchParams(location.search).get("token") || "");
    }
    wireFilters();
    // the list first, then the header: the first rows paint without waiting for the header's figures
    resetList().then(function () {
      return api.header();
    }).then(function (h) {
      header = h;
      renderHeader(h);
      var f = h.facets || {};
      fillSelect("f-layer", f.layers);
      fillSelect("f-reason", f.reasons);
      fillSelect("f-action", f.actions);
      fillSelect("f-outcome", f.outcomes, function (v) { return v.replace("->", " → "); });
    }).then(function () {
      if (location.hash.length > 1) openFromHash();
      else if (list.total > 0) select(0);
    }).catch(function (err) {
      showError("header", err);
    });
  }

  // at the end of <body> (and after #sdb-data in the file) the page's elements exist: start now, not at
  // DOMContentLoaded, so the first page of the list is asked for as early as possible
  if ($("detail") && $("list-spacer")) start();
  else document.addEventListener("DOMContentLoaded", start);
})();
