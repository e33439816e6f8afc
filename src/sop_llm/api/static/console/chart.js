// Charts drawn on <canvas>, as the dashboard draws them: no library. Each chart leaves its number of data points
// in the canvas's data-points attribute.
export const COLORS = ["#58a6ff", "#d29922", "#f85149", "#3fb950", "#a371f7"];
const GRID = "#263140";
const MUTED = "#8a96a3";

function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth * ratio);
  const height = Math.max(1, canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  ctx.font = 11 * ratio + "px system-ui";
  return { ctx, width, height, ratio };
}

function scaleLabel(value) {
  return value >= 10000 ? (value / 1000).toFixed(0) + "k" : value.toFixed(value < 10 ? 1 : 0);
}

// Lines over the same x positions. `series`: arrays of numbers, `slots`: how many points fill the width (a live
// chart keeps room for its whole window; points are right-aligned), `labels`: optional x labels (first and last).
export function drawLines(canvas, series, { colors = COLORS, slots, labels } = {}) {
  const { ctx, width, ratio } = prepare(canvas);
  const bottom = labels ? 14 * ratio : 0;
  const height = canvas.height - bottom;
  const count = Math.max(0, ...series.map((points) => points.length));
  const room = Math.max(2, slots || count);
  const top = Math.max(1, ...series.flat()) * 1.15;
  ctx.strokeStyle = GRID;
  ctx.lineWidth = 1;
  ctx.fillStyle = MUTED;
  for (let i = 0; i <= 4; i++) {
    const y = height - (i / 4) * (height - 4);
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(width, y);
    ctx.stroke();
    ctx.fillText(scaleLabel((top * i) / 4), 2, Math.max(y - 2, 11 * ratio));
  }
  const step = slots ? width / (room - 1) : count > 1 ? (width - 8 * ratio) / (count - 1) : 0;
  const xOf = (index, length) => (slots ? width - (length - 1 - index) * step : count > 1 ? 4 * ratio + index * step : width / 2);
  series.forEach((points, i) => {
    ctx.strokeStyle = colors[i % colors.length];
    ctx.fillStyle = colors[i % colors.length];
    ctx.lineWidth = 2 * ratio;
    ctx.beginPath();
    points.forEach((value, index) => {
      const x = xOf(index, points.length);
      const y = height - (value / top) * (height - 4);
      if (index === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.stroke();
    if (!slots) {
      points.forEach((value, index) => {
        ctx.beginPath();
        ctx.arc(xOf(index, points.length), height - (value / top) * (height - 4), 3 * ratio, 0, 2 * Math.PI);
        ctx.fill();
      });
    }
  });
  if (labels && labels.length) {
    ctx.fillStyle = MUTED;
    ctx.fillText(labels[0], 2, canvas.height - 2);
    if (labels.length > 1) {
      const last = labels[labels.length - 1];
      ctx.fillText(last, width - ctx.measureText(last).width - 2, canvas.height - 2);
    }
  }
  canvas.dataset.points = String(count);
}

// Horizontal bars, one per label, longest first.
export function drawBars(canvas, entries, color = COLORS[0]) {
  const sorted = [...entries].sort((a, b) => b[1] - a[1]).slice(0, 8);
  const { ctx, width, height, ratio } = prepare(canvas);
  const top = Math.max(1, ...sorted.map((entry) => entry[1]));
  const row = Math.min(height / Math.max(sorted.length, 1), 30 * ratio);
  sorted.forEach(([label, value], i) => {
    const y = i * row;
    const length = Math.max(2, (value / top) * width * 0.55);
    ctx.fillStyle = color;
    ctx.fillRect(0, y + row * 0.15, length, row * 0.7);
    ctx.fillStyle = "#d8dee6";
    ctx.fillText(label + "  " + value.toLocaleString("en-US"), length + 6 * ratio, y + row / 2 + 4 * ratio);
  });
  canvas.dataset.points = String(sorted.length);
}
