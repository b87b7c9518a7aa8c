// The hits-per-second chart: uPlot (served at /vendor/uplot/) drawing one-second buckets,
// with the seconds in which no connection was open shaded. Redrawn at most once a second.

const fmtInt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const fmtCompact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/**
 * Creates the chart inside `el`. Returns an object with `setData({xs, ys, gaps})`.
 * If uPlot cannot be loaded the page keeps working and shows a note instead of the chart.
 */
export async function createChart(el, { readout } = {}) {
  let uPlot;
  try {
    uPlot = (await import("uplot")).default;
  } catch (e) {
    el.innerHTML = "";
    const p = document.createElement("p");
    p.className = "chart-fallback";
    p.textContent = "The chart library (uPlot, expected at /vendor/uplot/) could not be loaded; the rest of the dashboard works without it.";
    el.append(p);
    return { setData() {}, redraw() {} };
  }

  let plot = null;
  let data = [[], []];
  let gaps = [];
  const defaultReadout = readout ? readout.textContent : "";

  function shadeGaps(u) {
    const xs = u.data[0];
    if (!xs.length) return;
    const { ctx } = u;
    const { top, height } = u.bbox;
    ctx.save();
    ctx.fillStyle = cssVar("--chart-gap");
    let i = 0;
    while (i < xs.length) {
      if (!gaps[i]) { i++; continue; }
      const start = i;
      while (i < xs.length && gaps[i]) i++;
      const x0 = u.valToPos(xs[start] - 0.5, "x", true);
      const x1 = u.valToPos(xs[i - 1] + 0.5, "x", true);
      ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
    }
    ctx.restore();
  }

  function build() {
    const rect = el.getBoundingClientRect();
    const muted = cssVar("--muted");
    const grid = cssVar("--chart-grid");
    const font = `11px ${cssVar("--font") || "system-ui, sans-serif"}`;
    const axis = {
      stroke: muted,
      font,
      grid: { stroke: grid, width: 1 },
      ticks: { show: false },
    };
    const opts = {
      width: Math.max(200, Math.floor(rect.width)),
      height: Math.max(120, Math.floor(rect.height)),
      padding: [10, 28, 0, 0],
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 7, fill: cssVar("--chart-line") } },
      scales: {
        x: { time: true },
        y: { range: (u, min, max) => [0, Math.max(4, Math.ceil((max || 0) * 1.15))] },
      },
      axes: [
        {
          ...axis,
          space: 80,
          values: (u, splits) => splits.map((v) => timeFmt.format(v * 1000)),
        },
        { ...axis, size: 46, values: (u, vals) => vals.map((v) => fmtCompact.format(v)) },
      ],
      series: [
        {},
        {
          label: "hits/s",
          stroke: cssVar("--chart-line"),
          fill: cssVar("--chart-fill"),
          width: 1.5,
          points: { show: false },
          spanGaps: false,
        },
      ],
      hooks: {
        drawClear: [shadeGaps],
        setCursor: [
          (u) => {
            if (!readout) return;
            const i = u.cursor.idx;
            if (i == null || u.data[0][i] == null) { readout.textContent = defaultReadout; return; }
            const t = timeFmt.format(u.data[0][i] * 1000);
            const v = u.data[1][i];
            readout.textContent = v == null ? `${t} · no data` : `${t} · ${fmtInt.format(v)} hits/s${gaps[i] ? " · no connection open" : ""}`;
          },
        ],
      },
    };
    if (plot) plot.destroy();
    el.innerHTML = "";
    plot = new uPlot(opts, data, el);
  }

  build();
  new ResizeObserver(() => {
    if (!plot) return;
    const rect = el.getBoundingClientRect();
    const w = Math.max(200, Math.floor(rect.width));
    const h = Math.max(120, Math.floor(rect.height));
    if (w !== plot.width || h !== plot.height) plot.setSize({ width: w, height: h });
  }).observe(el);
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", build);

  return {
    setData(d) {
      data = [d.xs, d.ys];
      gaps = d.gaps;
      plot.setData(data);
      let peak = 0;
      let latest = null;
      for (const v of d.ys) {
        if (v == null) continue;
        latest = v;
        if (v > peak) peak = v;
      }
      el.setAttribute(
        "aria-label",
        latest == null
          ? "Hits per second over the last five minutes: no data yet"
          : `Hits per second over the last five minutes: latest ${fmtInt.format(latest)}, peak ${fmtInt.format(peak)}`,
      );
    },
  };
}
