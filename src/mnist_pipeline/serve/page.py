"""The draw-a-digit page of :mod:`mnist_pipeline.serve`: HTML, script and style, all served by the server itself.

The script draws white ink on a black canvas (MNIST's look), sends the canvas as a PNG to
``/predict?center=true`` when a stroke ends, and shows the prediction with one bar per class.
Class names are set with ``textContent``, never parsed as HTML.
"""

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mnist-pipeline: draw a digit</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<main>
<h1>Draw a digit</h1>
<p>Draw with the mouse or a finger; the model answers when you lift it.</p>
<canvas id="pad" width="280" height="280" aria-label="drawing pad"></canvas>
<p><button id="clear" type="button">Clear</button></p>
<p id="answer" aria-live="polite">&nbsp;</p>
<div id="bars"></div>
</main>
</body>
</html>
"""

STYLE = """body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
main { max-width: 320px; }
#pad { background: #000; border: 1px solid #888; touch-action: none; cursor: crosshair; width: 280px; height: 280px; }
#answer { font-size: 1.6rem; min-height: 2rem; }
.row { display: flex; align-items: center; gap: 0.5rem; margin: 2px 0; }
.label { width: 3rem; text-align: right; overflow: hidden; }
.track { flex: 1; background: #eee; height: 1rem; }
.fill { background: #3b6fb6; height: 100%; width: 0; }
.value { width: 3.5rem; font-variant-numeric: tabular-nums; }
"""

SCRIPT = """"use strict";
const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const answer = document.getElementById("answer");
const bars = document.getElementById("bars");
let drawing = false;

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  answer.textContent = "\\u00a0";
  bars.replaceChildren();
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = point(event);
  ctx.beginPath();
  ctx.moveTo(x, y);
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = point(event);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 20;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineTo(x, y);
  ctx.stroke();
});
pad.addEventListener("pointerup", () => { drawing = false; ask(); });
pad.addEventListener("pointercancel", () => { drawing = false; });
document.getElementById("clear").addEventListener("click", clearPad);

function show(record) {
  answer.textContent = "Prediction: " + record.prediction;
  bars.replaceChildren();
  for (const [name, probability] of Object.entries(record.probabilities)) {
    const row = document.createElement("div");
    row.className = "row";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * probability).toFixed(1) + "%";
    fill.style.display = "block";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = probability.toFixed(3);
    row.append(label, track, value);
    bars.appendChild(row);
  }
}

function ask() {
  pad.toBlob(async (blob) => {
    try {
      const response = await fetch("/predict?center=true", { method: "POST", body: blob });
      const body = await response.json();
      if (!response.ok) { answer.textContent = "Error: " + body.error; return; }
      show(body.predictions[0]);
    } catch (err) {
      answer.textContent = "Error: " + err;
    }
  }, "image/png");
}

clearPad();
"""
