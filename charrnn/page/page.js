// The page's script, in its <head> (charrnn.page.views.HEAD). Three parts:
//  1. Each plot drawn once. gr.Plot (Gradio 6) draws every new figure twice: its plotly component first redraws
//     the plot that is about to be replaced, then Gradio re-creates the component, which draws into a new
//     element. A plot drawn before is redrawn only after the current task, and not at all if it has left the
//     page by then; a new element is drawn at once (so nothing blinks). One draw per figure: in headless Chromium
//     on 2 cores, 300 characters went from 1.7-2.0 s to 1.4 s from click to all figures (python bench/page.py).
//  2. Figures and texts reach the browser compact (charrnn/figures/run.py): this expands them where they are
//     drawn, and sends a click on a heatmap row to the page:
//      - probability figure: a step control under it that restyles the bars from layout.meta.charrnn.bars;
//      - gate heatmaps: turns the uint16 codes of z back into values (layout.meta.charrnn.heatmap), and on a
//        click on a row (or on a bar of the "Why?" attribution) writes its unit's name, "L3 reset 99", into the
//        hidden textbox #heatmap-unit;
//      - the unit map (layout.meta.charrnn.unitmap): a click on a unit writes its name into #unit-to-profile;
//      - coloured texts: turns <div class="charrnn-text" data-codes=...> into one titled, coloured span per
//        character.
//  3. A click on a character of the Write tab's text selects it, for the branch panel (Textbox.select).
// Small handlers the page's events run in the browser are window.charrnnPage's too (copyLink, ...).
(() => {
  const patch = (plotly) => {
    if (!plotly || plotly.charrnnDrawOnce) return;
    const react = plotly.react;
    const counts = {drawn: 0, skipped: 0};  // read by the browser test
    const draw = (plot, args) => {
      const shown = plot.isConnected;
      counts[shown ? "drawn" : "skipped"] += 1;
      if (!shown) return Promise.resolve(plot);
      const page = window.charrnnPage;  // below: compact figures expanded, heatmap clicks
      if (page) page.expand(args[0], args[1]);
      const done = react.call(plotly, plot, ...args);
      return page ? Promise.resolve(done).then((result) => { page.drawn(plot); return result; }) : done;
    };
    plotly.react = (plot, ...args) => plot._fullLayout
      ? new Promise((done) => setTimeout(() => done(draw(plot, args)), 0))
      : draw(plot, args);
    plotly.charrnnDrawOnce = counts;
  };
  let current = window.Plotly;
  patch(current);
  Object.defineProperty(window, "Plotly", {configurable: true, get: () => current,
                                           set: (plotly) => { patch(plotly); current = plotly; }});
})();

(() => {
  const ARRAYS = {u1: Uint8Array, u2: Uint16Array, u4: Uint32Array, i1: Int8Array, i2: Int16Array,
                  i4: Int32Array, f4: Float32Array, f8: Float64Array};
  const QUANTUM = 65535;

  const bytes = (base64) => {
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  };
  // plotly's typed-array spec ({dtype, bdata, shape}) -> a typed array (row-major)
  const typed = (spec) => new ARRAYS[spec.dtype](bytes(spec.bdata).buffer);
  // as Python's html.escape
  const escape = (s) => s.replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                                                         "'": "&#x27;"}[c]));

  // as charrnn.figures.run.context: the title of step t
  const context = (shown, promptLen, t, width = 24) => {
    const before = shown.slice(Math.max(0, t - width + 1), t + 1).join("");
    const after = t + 1 < shown.length ? shown[t + 1] : "(end)";
    const where = t + 1 < promptLen ? "prompt" : "generated";
    return `step ${t} (${where}): …${escape(before)} → <b>${escape(after)}</b>`;
  };

  // The probability figure's step control: a range input under the plot (one native control: a plotly slider
  // with a step per character took a quarter of a second to draw) that restyles the bars as
  // charrnn.figures.run.bar_data gives them, from layout.meta.charrnn.bars. Arrow keys move one step.
  const stepper = (plot, meta) => {
    const bars = meta.bars, n = bars.top_n;
    const chars = typed(bars.chars), raw = typed(bars.raw), filtered = typed(bars.filtered);
    const tokens = typed(meta.text.tokens), vocab = meta.text.vocab;
    const shown = Array.from(tokens, (i) => vocab[i]);
    const value = (code) => Math.round(code / QUANTUM * 1e4) / 1e4;
    const at = (t) => {
      const taken = t + 1 < tokens.length ? tokens[t + 1] : -1;
      const x = [], y = [[], []], color = [[], []];
      for (let j = t * n; j < (t + 1) * n; j++) {
        x.push(vocab[chars[j]]);
        y[0].push(value(raw[j]));
        y[1].push(value(filtered[j]));
        color[0].push(chars[j] === taken ? 2 : filtered[j] === 0 ? 1 : 0);
        color[1].push(chars[j] === taken ? 2 : 0);
      }
      return {data: {x: [x, x], y, "marker.color": color}, title: context(shown, meta.text.prompt_len, t)};
    };
    plot.charrnnBars = {steps: tokens.length, at};  // read by the browser test
    let input = plot.nextElementSibling;
    if (!input || !input.classList.contains("charrnn-step")) {
      input = document.createElement("input");
      input.type = "range";
      input.className = "charrnn-step";
      input.setAttribute("aria-label", "Step");
      input.style.cssText = "width: calc(100% - 24px); margin: 0 12px 8px; accent-color: #f58518";
      plot.after(input);
    }
    input.min = 0;
    input.max = tokens.length - 1;
    input.step = 1;
    input.value = bars.active;
    let pending = null;  // one restyle per frame however fast the input moves
    input.oninput = () => {
      if (pending === null) requestAnimationFrame(() => {
        const {data, title} = at(pending);
        pending = null;
        window.Plotly.update(plot, data, {"title.text": title}, [0, 1]);
      });
      pending = +input.value;
    };
  };

  const expandHeatmap = (data, heatmap) => {
    const spec = data[0].z;
    if (!spec || spec.bdata === undefined) return;
    const codes = typed(spec), [rows, columns] = `${spec.shape}`.split(",").map(Number);
    const step = (heatmap.high - heatmap.low) / heatmap.quantum, z = [];
    for (let i = 0; i < rows; i++) {
      const row = new Float32Array(columns);
      for (let j = 0; j < columns; j++) row[j] = heatmap.low + codes[i * columns + j] * step;
      z.push(row);
    }
    data[0].z = z;
  };

  // as charrnn.analysis.explain.hover_label, from the unit map's compact meta (charrnn.figures.units.unit_map_figure)
  const NO_R = -32768;
  const expandUnitMap = (data, unitmap) => {
    const label = typed(unitmap.label), r = typed(unitmap.r), n = label.length;
    const hidden = n / unitmap.rows.length;
    const signed = (code) => (code >= 0 ? "+" : "") + (code / 1e4).toFixed(2);
    data[0].text = unitmap.rows.map((row, y) => Array.from({length: hidden}, (_, u) => {
      const i = y * hidden + u;
      if (label[i] < 0 || r[i] === NO_R) {
        return `${row} ${u}: no explanation (constant over a half of the reference text)`;
      }
      return `${row} ${u}: ${unitmap.labels[label[i]]}, r ${signed(r[i])} held out (fit ${signed(r[n + i])}, chance `
        + `${(r[2 * n + i] / 1e4).toFixed(2)})`;
    }));
  };

  const expand = (data, layout) => {
    const meta = layout && layout.meta && layout.meta.charrnn;
    if (meta && meta.heatmap && !meta.expanded) expandHeatmap(data, meta.heatmap);
    if (meta && meta.unitmap && !meta.expanded) expandUnitMap(data, meta.unitmap);
    if (meta) meta.expanded = true;
  };

  const drawn = (plot) => {
    const meta = plot.layout && plot.layout.meta && plot.layout.meta.charrnn;
    if (meta && meta.bars) stepper(plot, meta);
    // A gate heatmap's row names its unit, "L3 reset 99 (τ 12)", and so does a bar of the "Why?" attribution, for
    // the Write tab's #heatmap-unit; a cell of the Units tab's unit map names its unit in its hover text, "L1 hidden
    // 3: line position, ...", for #unit-to-profile.
    const clicks = meta && (meta.heatmap || meta.unit_bars ? {box: "#heatmap-unit", name: (point) => point.y}
      : meta.unitmap ? {box: "#unit-to-profile", name: (point) => point.text} : null);
    if (!clicks || plot.charrnnClicks) return;
    plot.charrnnClicks = true;
    plot.on("plotly_click", (event) => {
      const point = event.points && event.points[0];
      // the unit's name as charrnn.decoding.unit.Unit writes it
      const found = /L\d+ [a-z]+ \d+/.exec(point ? String(clicks.name(point)) : "");
      const box = document.querySelector(`${clicks.box} textarea, ${clicks.box} input`);
      if (!found || !box) return;
      box.value = found[0];
      box.dispatchEvent(new Event("input", {bubbles: true}));
    });
  };

  // as the spans of charrnn.figures.run.text_html, from a coded_text_html
  const colourText = (box) => {
    const codes = new Uint16Array(bytes(box.dataset.codes).buffer);
    const text = Array.from(box.textContent), symbols = JSON.parse(box.dataset.symbols || "{}");
    if (codes.length !== text.length) return;
    const d = box.dataset, promptLen = +d.prompt, parts = [];
    for (let t = 0; t < text.length; t++) {
      const c = text[t], shown = symbols[c] || c, code = codes[t];
      let color, title;
      if (d.kind === "surprisal") {
        const s = code / +d.scale;
        color = code === QUANTUM ? "transparent" : `rgba(228,87,86,${Math.min(1, s / +d.saturate).toFixed(2)})`;
        title = code === QUANTUM ? `step ${t} '${shown}': first character, no prediction`
          : `step ${t} '${shown}': p = ${Math.exp(-s).toFixed(3)}, surprisal ${s.toFixed(2)} nats`;
      } else {
        const low = +d.low, high = +d.high, v = low + code / QUANTUM * (high - low);
        const x = (v - low) / (high - low) * 2 - 1;
        color = x >= 0 ? `rgba(228,87,86,${x.toFixed(2)})` : `rgba(76,120,168,${(-x).toFixed(2)})`;
        title = `step ${t} '${shown}': ${d.name} = ${v.toFixed(3)}`;
      }
      const style = `background:${color}` + (t < promptLen ? ";border-bottom:1px dotted #888" : "");
      parts.push(`<span style="${style}" title="${escape(title)}">${escape(shown)}${c === "\n" ? "<br>" : ""}</span>`);
    }
    box.innerHTML = parts.join("");
  };
  // Gradio may morph new HTML into the old: a box that holds its text as sent (a text node) is coloured.
  // Plotly builds its figures' SVG in this same document: those mutations are passed over at once.
  const colourBox = (box) => {
    if (box.firstChild !== null && box.firstChild.nodeType === Node.TEXT_NODE) colourText(box);
  };
  const visit = (node) => {
    if (node.nodeType === Node.TEXT_NODE) node = node.parentNode;
    if (!node || node.nodeType !== Node.ELEMENT_NODE || node instanceof SVGElement) return;
    if (node.classList.contains("charrnn-text") && node.dataset.codes) colourBox(node);
    for (const box of node.getElementsByClassName("charrnn-text")) if (box.dataset.codes) colourBox(box);
  };
  new MutationObserver((records) => {
    for (const record of records) {
      if (record.target instanceof SVGElement) continue;
      if (record.type === "childList") record.addedNodes.forEach(visit);
      const target = record.target;
      if (target.nodeType === Node.TEXT_NODE
          || (target.nodeType === Node.ELEMENT_NODE && target.classList.contains("charrnn-text"))) visit(target);
    }
  }).observe(document.documentElement, {childList: true, subtree: true, characterData: true, attributes: true,
                                         attributeFilter: ["data-codes"]});

  // The handlers of the page's events that run in the browser alone (js= in charrnn/page/*.py).
  const WRITE_PLOTS = ["probabilities", "heatmap-1", "heatmap-2", "saturation"];
  const MOUNT_WAIT_MS = 20000;
  const handlers = {
    drawFigures: () => { document.querySelector("#draw-figures").click(); },
    // presses the hidden button `selector` once every plot of the Write tab has drawn its first figure (or after
    // MOUNT_WAIT_MS): a figure sent to a plot still being mounted is lost
    whenFiguresDrawn: (selector) => {
      const started = Date.now();
      const check = () => {
        const drawn = WRITE_PLOTS.every((id) => {
          const plot = document.querySelector(`#${id} .js-plotly-plot`);
          return plot && plot._fullLayout;
        });
        if (drawn || Date.now() - started > MOUNT_WAIT_MS) document.querySelector(selector).click();
        else setTimeout(check, 100);
      };
      check();
    },
    // the link's address is the page's own (wherever it is served), with the query built in Python
    copyLink: (query) => {
      const url = location.origin + location.pathname + query;
      if (navigator.clipboard) navigator.clipboard.writeText(url).catch(() => {});
      return url;
    },
    newSeed: () => Math.floor(Math.random() * 2147483647),
    firstGeneratedStep: (prompt) => Math.max(0, [...prompt].length - 1),  // the step that chooses it
  };

  window.charrnnPage = {expand, drawn, typed, ...handlers};
})();

// The Write tab's text box is not interactive, so Gradio renders a disabled textarea: no click reaches it and nothing
// in it can be selected, so Textbox.select never fires. Made read-only instead (the same to a person), a click puts
// the caret at a character; selecting that one character fires the textarea's select event, which Gradio sends to
// the server as Textbox.select with its [start, end].
(() => {
  const box = () => document.querySelector('#generated-text textarea');
  // Checked twice a second rather than watched: a MutationObserver over the page sees every node plotly draws, and
  // made the Write tab's figures slower to appear (python bench/page.py).
  setInterval(() => { const b = box(); if (b && b.disabled) { b.disabled = false; b.readOnly = true; } }, 500);
  document.addEventListener('click', (e) => {
    const b = box();
    if (!b || e.target !== b || b.selectionStart !== b.selectionEnd) return;
    const at = b.selectionStart;
    if (at < b.value.length) b.setSelectionRange(at, at + 1);
  });
})();
