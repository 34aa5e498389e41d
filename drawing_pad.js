// The browser half of drawing_pad.DrawingPad (an anywidget ES module: no build step, no CDN).
// It records each pen stroke as canvas coordinates and sends the list to Python when a stroke
// ends; Python draws the strokes into an image, prepares it the MNIST way and runs the readers,
// and sends back `reading`, which this module shows: the 28x28 image the models saw, each
// verdict as text (a digit, "not sure: 7 or 1" or "not a digit") and the ten calibrated
// probabilities as bars. Under the prepared image, `saliency`: where the best model looked for the
// digit it read (integrated gradients, 784 values in [0, 1]), as a heat map over that image.
//
// Teach mode, below the pad: after a reading the person says which digit it was ("it was: 0 ... 9");
// Python adapts both readers to all their examples and sends back `teach_state`, shown here as
// a strip of thumbnails, each with what the trained and the adapted readers read in it
// ("2 → 7"). The examples can be saved to a file, loaded again, or forgotten (reset). Each click
// is sent as `command`, numbered, and the page is "busy" until Python says that number is done.

const STYLE = `
.pad-root { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; padding: 4px;
  font: 13px/1.4 sans-serif; color: #222; background: #fff; }
.pad-column { display: flex; flex-direction: column; gap: 6px; }
.pad-canvas { border: 1px solid #888; background: #fff; cursor: crosshair; touch-action: none; }
.pad-clear { align-self: flex-start; padding: 3px 14px; }
.pad-preview { width: 112px; height: 112px; image-rendering: pixelated; border: 1px solid #888; background: #000; }
.pad-caption { color: #666; font-size: 12px; }
.pad-saliency-box { display: flex; flex-direction: column; gap: 6px; width: 112px; }
.pad-saliency-box[hidden] { display: none; }
.pad-saliency { width: 112px; height: 112px; image-rendering: pixelated; border: 1px solid #888; background: #000; }
.pad-results { width: 290px; }
.pad-line { font-size: 14px; }
.pad-best-digit, .pad-ensemble-digit { font-size: 22px; font-weight: bold; }
.pad-message { color: #b00; min-height: 1.4em; }
.pad-bars { display: flex; gap: 6px; align-items: flex-end; height: 120px; border-bottom: 1px solid #888; }
.pad-bar-pair { display: flex; gap: 1px; align-items: flex-end; height: 100%; }
.pad-bar { width: 9px; }
.pad-bar-best { background: #4C72B0; }
.pad-bar-ensemble { background: #DD8452; }
.pad-bar-labels { display: flex; gap: 6px; }
.pad-bar-labels span { width: 19px; text-align: center; }
.pad-legend { display: flex; flex-direction: column; }
.pad-swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.pad-adapted-note { color: #2a7d2a; min-height: 1.4em; }
.pad-teach { flex-basis: 100%; display: flex; flex-direction: column; gap: 6px; border-top: 1px solid #ddd;
  padding-top: 8px; }
.pad-teach-row { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; }
.pad-teach-digit { width: 28px; padding: 2px 0; }
.pad-examples { display: flex; flex-wrap: wrap; gap: 8px; min-height: 20px; }
.pad-example { display: flex; flex-direction: column; align-items: center; width: 112px; font-size: 11px;
  border: 1px solid #ddd; padding: 3px; }
.pad-example canvas { width: 42px; height: 42px; image-rendering: pixelated; background: #000; }
.pad-example-digit { font-weight: bold; }
.pad-file-name { width: 220px; }
.pad-teach-message { min-height: 1.4em; color: #555; }
.pad-teach-message.pad-error { color: #b00; }
`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function paintField(target, values) {
  // A prepared 28x28 field (784 values in [0, 1], row by row) as light ink on black; none: all black.
  target.width = 28;
  target.height = 28;
  const context = target.getContext("2d");
  const pixels = context.createImageData(28, 28);
  for (let index = 0; index < 28 * 28; index++) {
    const value = Math.round(255 * ((values || [])[index] || 0));
    pixels.data.set([value, value, value, 255], 4 * index);
  }
  context.putImageData(pixels, 0, 0);
}

function paintSaliency(target, prepared, heat) {
  // The prepared digit, dimmed to gray, under a heat map from dark red to yellow: the more evidence
  // the best model found in a pixel (either way), the hotter and the more opaque it is.
  target.width = 28;
  target.height = 28;
  const context = target.getContext("2d");
  const pixels = context.createImageData(28, 28);
  for (let index = 0; index < 28 * 28; index++) {
    const gray = 110 * ((prepared || [])[index] || 0);
    const value = (heat || [])[index] || 0;
    const hot = [Math.min(1, 2 * value), Math.max(0, 2 * value - 1), 0].map((channel) => 255 * channel);
    const mixed = hot.map((channel) => Math.round((1 - value) * gray + value * channel));
    pixels.data.set([...mixed, 255], 4 * index);
  }
  context.putImageData(pixels, 0, 0);
}

function render({ model, el }) {
  const size = model.get("size");
  const root = element("div", "pad-root");
  root.appendChild(element("style", null, STYLE));

  // Left: the pad itself.
  const drawing = element("div", "pad-column");
  const canvas = element("canvas", "pad-canvas");
  canvas.width = size;
  canvas.height = size;
  const clear = element("button", "pad-clear", "Clear");
  drawing.append(element("div", "pad-caption", "Draw one digit"), canvas, clear);

  // Middle: what the models see.
  const seen = element("div", "pad-column");
  const preview = element("canvas", "pad-preview");
  // Under it, where the best model looked for the digit it read (hidden until Python sends the map).
  const saliencyBox = element("div", "pad-saliency-box");
  const saliencyMap = element("canvas", "pad-saliency");
  const saliencyCaption = element("div", "pad-caption pad-saliency-caption");
  saliencyBox.append(saliencyMap, saliencyCaption);
  saliencyBox.hidden = true;
  seen.append(element("div", "pad-caption", "prepared 28x28"), preview, saliencyBox);

  // Right: the predictions.
  const results = element("div", "pad-column pad-results");
  const bestLine = element("div", "pad-line pad-best");
  const ensembleLine = element("div", "pad-line pad-ensemble");
  const message = element("div", "pad-message");
  const bars = element("div", "pad-bars");
  const labels = element("div", "pad-bar-labels");
  const pairs = [];
  for (let digit = 0; digit < 10; digit++) {
    const pair = element("div", "pad-bar-pair");
    const best = element("div", "pad-bar pad-bar-best");
    const ensemble = element("div", "pad-bar pad-bar-ensemble");
    pair.append(best, ensemble);
    bars.appendChild(pair);
    labels.appendChild(element("span", null, String(digit)));
    pairs.push([best, ensemble]);
  }
  const legend = element("div", "pad-legend pad-caption");
  const adaptedNote = element("div", "pad-adapted-note");
  results.append(bestLine, ensembleLine, adaptedNote, message, bars, labels, legend);

  // Below: teach mode, the person's examples and their file.
  const teach = element("div", "pad-teach");
  const digitRow = element("div", "pad-teach-row");
  digitRow.appendChild(element("span", "pad-caption", "it was:"));
  const digitButtons = [];
  for (let digit = 0; digit < 10; digit++) {
    const button = element("button", `pad-teach-digit pad-teach-${digit}`, String(digit));
    button.title = `Teach the readers that this drawing is a ${digit}`;
    button.addEventListener("click", () => send({ action: "teach", digit }));
    digitButtons.push(button);
    digitRow.appendChild(button);
  }
  const examples = element("div", "pad-examples");
  const fileRow = element("div", "pad-teach-row");
  const fileName = element("input", "pad-file-name");
  fileName.type = "text";
  fileName.value = "my_digits.json";
  fileName.placeholder = "file name, e.g. my_digits.json";
  fileName.title = "A file name; a relative one is in the notebook's folder";
  // Typing a name must not trigger JupyterLab's keyboard shortcuts (a "d, d" would delete the cell).
  fileName.setAttribute("data-lm-suppress-shortcuts", "true");
  const save = element("button", "pad-save", "Save");
  const load = element("button", "pad-load", "Load");
  const reset = element("button", "pad-reset", "Reset");
  save.addEventListener("click", () => send({ action: "save", path: fileName.value }));
  load.addEventListener("click", () => send({ action: "load", path: fileName.value }));
  reset.addEventListener("click", () => send({ action: "reset" }));
  fileRow.append(element("span", "pad-caption", "your examples:"), fileName, save, load, reset);
  const teachMessage = element("div", "pad-teach-message");
  teach.append(digitRow, examples, fileRow, teachMessage);

  root.append(drawing, seen, results, teach);
  el.appendChild(root);

  const context = canvas.getContext("2d");
  let strokes = [];
  let current = null;

  function paintStrokes() {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, size, size);
    context.strokeStyle = "#000";
    context.fillStyle = "#000";
    context.lineWidth = model.get("pen_width");
    context.lineCap = "round";
    context.lineJoin = "round";
    for (const stroke of current ? [...strokes, current] : strokes) {
      if (stroke.length === 1) {
        // A tap: Python draws it as a round dot of the pen's width, so show the same.
        context.beginPath();
        context.arc(stroke[0][0], stroke[0][1], model.get("pen_width") / 2, 0, 2 * Math.PI);
        context.fill();
        continue;
      }
      context.beginPath();
      context.moveTo(stroke[0][0], stroke[0][1]);
      for (const [x, y] of stroke.slice(1)) context.lineTo(x, y);
      context.stroke();
    }
  }

  function point(event) {
    // The canvas may be shown scaled (narrow notebook column); record coordinates in canvas pixels.
    const box = canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) * size) / box.width;
    const y = ((event.clientY - box.top) * size) / box.height;
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    current = [point(event)];
    paintStrokes();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current) return;
    current.push(point(event));
    paintStrokes();
  });
  function endStroke() {
    if (!current) return;
    strokes.push(current);
    current = null;
    // Only finished strokes go to Python: one reading per stroke, not one per mouse move.
    model.set("strokes", strokes.map((stroke) => stroke.map((xy) => [...xy])));
    model.save_changes();
    root.dataset.state = "reading";
    enableButtons();
    showSaliency();  // the map of the drawing before is hidden until this one's arrives
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  clear.addEventListener("click", () => {
    strokes = [];
    current = null;
    paintStrokes();
    model.set("strokes", []);
    model.save_changes();
    root.dataset.state = "reading";
    enableButtons();
    showSaliency();  // the map of the drawing before is hidden until this one's arrives
  });

  // Each command is numbered; until Python reports that number done, the page is busy.
  let pending = null;
  function send(command) {
    const id = Math.max(pending || 0, (model.get("command") || {}).id || 0) + 1;
    pending = id;
    model.set("command", { ...command, id });
    model.save_changes();
    root.dataset.teach = "busy";
    enableButtons();
  }

  function enableButtons() {
    // A digit can be taught once something is drawn; nothing is sent while a command runs.
    for (const button of digitButtons) button.disabled = pending !== null || strokes.length === 0;
    for (const button of [save, load, reset]) button.disabled = pending !== null;
  }


  function showTeachState() {
    const state = model.get("teach_state") || {};
    if (pending !== null && state.done === pending) pending = null;
    examples.replaceChildren();
    if (!(state.examples || []).length) {
      examples.appendChild(element("span", "pad-caption", "No examples yet: draw a digit, then say which it was."));
    }
    for (const example of state.examples || []) {
      // What the trained reader read in the example, then what the adapted one reads: "2 → 7".
      const card = element("div", "pad-example");
      card.title = `taught as ${example.digit}`;
      const thumbnail = element("canvas");
      paintField(thumbnail, example.pixels);
      card.append(thumbnail, element("span", "pad-example-digit", `it was ${example.digit}`));
      for (const [key, name] of [["best", "best"], ["ensemble", "ens."]]) {
        const entry = example[key];
        if (!entry) continue;
        card.appendChild(element("span", `pad-example-${key}`, `${name} ${entry.before} → ${entry.after}`));
      }
      examples.appendChild(card);
    }
    adaptedNote.textContent = state.note || "";
    teachMessage.textContent = state.message || "";
    teachMessage.classList.toggle("pad-error", Boolean(state.error));
    root.dataset.examples = String(state.count || 0);
    root.dataset.teach = pending === null ? "ready" : "busy";
    enableButtons();
  }

  function showReading() {
    const reading = model.get("reading") || {};
    paintField(preview, reading.prepared);
    message.textContent = reading.message || "";
    bestLine.replaceChildren();
    ensembleLine.replaceChildren();
    for (const [line, entry, className] of [
      [bestLine, reading.best, "pad-best-digit"],
      [ensembleLine, reading.ensemble, "pad-ensemble-digit"],
    ]) {
      if (!entry) continue;
      // A digit shows its calibrated probability; "not sure" names two digits; "not a digit" names none.
      const answer = entry.verdict === "digit" ? String(entry.digit)
        : entry.verdict === "not sure" ? `not sure: ${entry.candidates[0]} or ${entry.candidates[1]}` : "not a digit";
      const detail = entry.verdict === "digit" ? ` (${(100 * entry.probabilities[entry.digit]).toFixed(1)}%)` : "";
      line.append(`${entry.label}: `, element("span", className, answer), detail);
    }
    pairs.forEach(([best, ensemble], digit) => {
      best.style.height = reading.best ? `${100 * reading.best.probabilities[digit]}%` : "0";
      ensemble.style.height = reading.ensemble ? `${100 * reading.ensemble.probabilities[digit]}%` : "0";
    });
    legend.replaceChildren();
    if (reading.best) {
      for (const [color, entry] of [["#4C72B0", reading.best], ["#DD8452", reading.ensemble]]) {
        const item = element("span");
        const swatch = element("span", "pad-swatch");
        swatch.style.background = color;
        item.append(swatch, entry.label);
        legend.appendChild(item);
      }
    }
    // A reading of fewer strokes than drawn is on its way to being replaced.
    const upToDate = (reading.strokes || 0) === strokes.length;
    root.dataset.state = !upToDate ? "reading" : reading.best ? "read" : reading.message ? "message" : "empty";
    showSaliency();
  }

  function showSaliency() {
    // Shown only with the reading of the same drawing, and only where a digit was read (or why there is no map).
    const reading = model.get("reading") || {};
    const looked = model.get("saliency") || {};
    const current = reading.best !== undefined && looked.strokes === strokes.length
      && reading.strokes === strokes.length;
    const shown = current && Boolean(looked.heatmap);
    saliencyBox.hidden = !(shown || (current && looked.message));
    saliencyMap.hidden = !shown;
    root.dataset.saliency = shown ? "shown" : "none";
    if (shown) {
      paintSaliency(saliencyMap, reading.prepared, looked.heatmap);
      saliencyMap.title = "integrated gradients: the pixels that weighed most in the reading, either way";
    }
    saliencyCaption.textContent = !current ? "" : looked.message
      || `where ${looked.model} looked for its ${looked.digit} (${(looked.seconds || 0).toFixed(2)} s)`;
  }

  // Redraw what Python knows (a re-rendered output keeps its strokes).
  strokes = (model.get("strokes") || []).map((stroke) => stroke.map((xy) => [...xy]));
  paintStrokes();
  showReading();
  showTeachState();
  model.on("change:reading", showReading);
  model.on("change:saliency", showSaliency);
  model.on("change:teach_state", showTeachState);
  return () => {
    model.off("change:reading", showReading);
    model.off("change:saliency", showSaliency);
    model.off("change:teach_state", showTeachState);
  };
}

export default { render };
