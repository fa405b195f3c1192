// The demo page: start the widget from the form or ?product=, and show this producer's own
// figures from its /demo/metrics (a few of its metrics) every 2 s.
(() => {
  "use strict";
  const form = document.querySelector("form.ask");
  const input = document.getElementById("product");
  const slot = document.getElementById("widget");

  // A new element each time: the same id again is a new look (the second one a cache hit).
  function show(product) {
    input.value = product;
    const widget = document.createElement("price-compare");
    widget.setAttribute("product", product);
    slot.replaceChildren(widget);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.reportValidity()) return;
    const product = input.value.trim();
    history.pushState(null, "", `?product=${encodeURIComponent(product)}`);
    show(product);
  });
  window.addEventListener("popstate", () => {
    const product = new URLSearchParams(location.search).get("product");
    if (product) show(product);
  });
  const first = new URLSearchParams(location.search).get("product");
  if (first) show(first);

  const origin = location.origin;
  document.querySelector("[data-embed]").textContent =
    `<script src="${origin}/static/price-compare.js" defer></script>\n<price-compare product="${first || "sku-123"}"></price-compare>`;

  // Prometheus text: "name{labels} value" lines; what the panel needs, summed by name.
  function parse(text) {
    const samples = [];
    for (const line of text.split("\n")) {
      const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
      samples.push({ name: m[1], labels, value: Number(m[3]) });
    }
    return samples;
  }
  const sum = (samples, name, keep = () => true) =>
    samples.filter((s) => s.name === name && keep(s.labels)).reduce((n, s) => n + s.value, 0);

  const cells = Object.fromEntries([...document.querySelectorAll("[data-metric]")].map((e) => [e.dataset.metric, e]));
  let last = null;
  let ratio = null;
  async function tick() {
    let samples;
    try {
      const res = await fetch("/demo/metrics", { cache: "no-store" });
      if (!res.ok) throw new Error(res.status);
      samples = parse(await res.text());
    } catch {
      for (const key of ["hit_ratio", "requests_per_second", "open_streams"]) cells[key].textContent = "—";
      return;
    }
    const now = performance.now();
    const lookups = (tier) => sum(samples, "pricefront_cache_lookups_total", (l) => l.tier === tier);
    // This panel's own scrapes are not traffic.
    const requests = sum(samples, "pricefront_http_requests_total", (l) => l.route !== "/demo/metrics");
    const hits = lookups("l1") + lookups("l2");
    const all = hits + lookups("miss");
    const current = { at: now, requests, hits, all };
    if (last) {
      const seconds = (now - last.at) / 1000;
      cells.requests_per_second.textContent = Math.max(0, (requests - last.requests) / seconds).toFixed(1);
      if (all > last.all) ratio = (hits - last.hits) / (all - last.all);
    } else if (all > 0) {
      ratio = hits / all;
    }
    cells.hit_ratio.textContent = ratio === null ? "—" : `${(ratio * 100).toFixed(1)} %`;
    cells.open_streams.textContent = String(sum(samples, "pricefront_open_streams"));
    last = current;
  }
  tick();
  setInterval(tick, 2000);
})();
