/*
 * <price-compare product="ID" base-url="https://prices.example"> — pricefront's comparison
 * widget. No dependencies; served by the producer at /static/price-compare.js.
 *
 * It opens GET {base-url}/v1/prices/{product}/events (Server-Sent Events) and renders each
 * source's quote or failure as it arrives, then the final comparison. When the stream cannot
 * be opened (refused, blocked, no EventSource), it asks GET {base-url}/v1/prices/{product}
 * with `Prefer: wait` instead, and again after each Retry-After until its time runs out.
 *
 * Attributes:
 *   product   the product id (required); changing it starts a new comparison
 *   base-url  where pricefront answers; default: the origin this script was loaded from
 *   wait      seconds one fallback request may wait (Prefer: wait=N); default 10
 *   timeout   seconds before the widget gives up; default 60
 *   locale    how prices are written (BCP 47); default: the page's lang, else the browser's
 *
 * Rendering contract (stable; tests and shops may select on it), all in the light DOM:
 *   the element itself: data-state = loading | complete | partial | failed | not_found,
 *                       data-cache = hit | miss (once known), data-transport = stream | fetch
 *   each quote:         an element with data-provider, data-price (as quoted), data-currency
 *                       and, when converted, data-base-price; the best offer also data-best;
 *                       when the source names the offer's page (an http or https url), its
 *                       source's name links to it (an <a> with data-offer-url)
 *   each failure:       an element with data-failed-provider and data-reason
 * Styles are scoped under `price-compare` and read the custom properties --pc-accent,
 * --pc-best-bg, --pc-muted, --pc-radius, so a shop can restyle it.
 */
(() => {
  "use strict";
  if (customElements.get("price-compare")) return;

  // Resolved now: document.currentScript is only set while this script first runs.
  const loadedFrom = document.currentScript && document.currentScript.src
    ? new URL(document.currentScript.src, location.href).origin
    : location.origin;

  const STYLE = `
price-compare { display: block; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1b1f24; --pc-accent: #0b6b3a; --pc-best-bg: #e7f5ec; --pc-muted: #59636e; --pc-radius: 10px; }
price-compare .pc { border: 1px solid #d0d7de; border-radius: var(--pc-radius); padding: 16px 18px; background: #fff; }
price-compare .pc-head { display: flex; justify-content: space-between; align-items: baseline; gap: 12px; flex-wrap: wrap; }
price-compare .pc-title { font-size: 1.05em; font-weight: 600; margin: 0; }
price-compare .pc-id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-weight: 500; }
price-compare .pc-status { margin: 0; color: var(--pc-muted); font-size: .92em; }
price-compare table { width: 100%; border-collapse: collapse; margin-top: 10px; }
price-compare caption { text-align: left; color: var(--pc-muted); font-size: .85em; padding-bottom: 4px; }
price-compare th { text-align: left; font-weight: 600; font-size: .85em; color: var(--pc-muted);
  border-bottom: 1px solid #d0d7de; padding: 6px 8px; }
price-compare td { padding: 7px 8px; border-bottom: 1px solid #eaeef2; vertical-align: baseline; }
price-compare .pc-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
price-compare tr[data-best] td { background: var(--pc-best-bg); font-weight: 600; }
price-compare tr[data-best] td:first-child { box-shadow: inset 4px 0 0 var(--pc-accent); }
price-compare td a { color: var(--pc-accent); text-decoration: underline; text-underline-offset: 2px; }
price-compare .pc-badge { display: inline-block; margin-left: 8px; padding: 0 7px; border-radius: 999px;
  background: var(--pc-accent); color: #fff; font-size: .75em; font-weight: 600; vertical-align: 1px; }
price-compare .pc-new td { animation: pc-arrive .6s ease-out; }
@keyframes pc-arrive { from { background: #fff8c5; } }
price-compare .pc-failures { margin: 12px 0 0; padding: 0; list-style: none; color: var(--pc-muted); font-size: .9em; }
price-compare .pc-failures li { padding: 3px 0 3px 8px; border-left: 3px solid #d0d7de; margin-top: 4px; }
price-compare .pc-failures .pc-provider { text-decoration: line-through; }
price-compare .pc-foot { margin: 12px 0 0; color: var(--pc-muted); font-size: .85em; }
price-compare .pc-cache { font-weight: 600; color: #1b1f24; }
price-compare .pc-error { color: #a40e26; margin: 10px 0 0; }
price-compare .pc-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
@media (prefers-reduced-motion: reduce) { price-compare .pc-new td { animation: none; } }
`;

  // Under a strict Content-Security-Policy a <style> element is refused; a constructed sheet
  // is not (CSP governs style elements and attributes, not the CSSOM).
  function adoptStyle() {
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(STYLE);
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    } catch {
      const style = document.createElement("style");
      style.textContent = STYLE;
      document.head.append(style);
    }
  }

  const REASONS = {
    timeout: "did not answer in time",
    http_status: "answered with an error",
    invalid_response: "sent an answer we could not read",
    connect: "could not be reached",
    circuit_open: "paused after repeated failures",
    not_found: "does not sell this product",
    rate_limited: "is busy; asked again shortly",
    auth_failed: "could not be signed in to",
  };

  // The offer's page, if the quote names one we may link to (the server keeps only these).
  const offerUrl = (url) => {
    try {
      const parsed = new URL(url);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch {
      return null;
    }
  };

  const STATES = ["complete", "partial", "failed", "not_found"];

  const reason = (code) => (Object.hasOwn(REASONS, code) ? REASONS[code] : String(code));

  // An event's JSON, or null (a malformed event is skipped, not fatal).
  function parse(text) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // Sorted as the comparison is: by base_price where there is one, the others after by price.
  function order(a, b) {
    const ka = a.base_price ?? null, kb = b.base_price ?? null;
    if ((ka === null) !== (kb === null)) return ka === null ? 1 : -1;
    const d = ka !== null ? Number(ka) - Number(kb) : Number(a.price) - Number(b.price);
    return d || (a.provider < b.provider ? -1 : a.provider > b.provider ? 1 : 0);
  }

  class PriceCompare extends HTMLElement {
    static observedAttributes = ["product", "base-url"];

    #run = null; // the current comparison: { key, es, timers, aborts, done }
    #quotes = new Map(); // provider -> quote
    #failures = new Map(); // provider -> failure
    #progressSeen = false;
    #result = null;
    #started = 0;
    #baseCurrency = null;
    #view = null;

    connectedCallback() {
      this.#schedule();
    }

    disconnectedCallback() {
      // Taken out mid-comparison: let go, and start again if put back. Finished: keep it.
      if (this.#run && !this.#run.done) {
        this.#release();
        this.#run = null;
      }
    }

    attributeChangedCallback() {
      this.#schedule();
    }

    // Attributes and connection arrive in any order: start once, after they have settled.
    #schedule() {
      queueMicrotask(() => {
        if (!this.isConnected) return;
        const key = `${this.#base()}|${this.getAttribute("product") ?? ""}`;
        if (this.#run && this.#run.key === key) return;
        this.#start(key);
      });
    }

    #base() {
      return (this.getAttribute("base-url") || loadedFrom).replace(/\/+$/, "");
    }

    #seconds(name, fallback) {
      const n = Number(this.getAttribute(name));
      return Number.isFinite(n) && n > 0 ? n : fallback;
    }

    #url(suffix = "") {
      const id = encodeURIComponent(this.getAttribute("product") ?? "");
      return `${this.#base()}/v1/prices/${id}${suffix}`;
    }

    // Ends the current comparison's stream, timers and requests; it stays the current one (so
    // the same attributes set again do not start it over).
    #release() {
      const run = this.#run;
      if (!run) return;
      run.done = true;
      run.es?.close();
      run.es = null;
      run.timers.forEach(clearTimeout);
      run.aborts.forEach((a) => a.abort());
    }

    #start(key) {
      this.#release();
      this.#quotes.clear();
      this.#failures.clear();
      this.#progressSeen = false;
      this.#result = null;
      this.#baseCurrency = null;
      this.#started = performance.now();
      this.removeAttribute("data-cache");
      this.removeAttribute("data-transport");
      this.#build();
      const run = (this.#run = { key, es: null, timers: [], aborts: [], done: false, waited: false });
      const product = this.getAttribute("product");
      if (!product) return this.#fail("No product given.");
      run.timers.push(setTimeout(() => this.#giveUp(run), this.#seconds("timeout", 60) * 1000));
      if (typeof EventSource === "undefined") return this.#fetch(run);
      this.#stream(run);
    }

    #stream(run) {
      this.setAttribute("data-transport", "stream");
      let es;
      try {
        es = run.es = new EventSource(this.#url("/events"));
      } catch {
        return this.#fetch(run); // a base-url EventSource refuses
      }
      let opened = false;
      es.addEventListener("open", () => (opened = true));
      es.addEventListener("quote", (e) => {
        const quote = parse(e.data);
        if (this.#current(run) && quote && quote.provider) this.#progress(quote, null);
      });
      es.addEventListener("failure", (e) => {
        const failure = parse(e.data);
        if (this.#current(run) && failure && failure.provider) this.#progress(null, failure);
      });
      es.addEventListener("result", (e) => {
        es.close();
        const comparison = parse(e.data);
        if (!this.#current(run)) return;
        if (!comparison) return this.#fail("The price service sent an answer we could not read.");
        // A cached product's stream is its result alone.
        this.#finish(comparison, this.#progressSeen ? "miss" : "hit");
      });
      es.addEventListener("error", () => {
        if (!this.#current(run) || this.#result) return;
        // Never opened (an error status, CORS, a proxy), or closed for good: ask plainly.
        // Open once and now reconnecting (the stream ended without a result): let it.
        if (!opened || es.readyState === EventSource.CLOSED) {
          es.close();
          run.es = null;
          this.#fetch(run);
        }
      });
    }

    async #fetch(run) {
      this.setAttribute("data-transport", "fetch");
      const wait = Math.round(this.#seconds("wait", 10));
      while (this.#current(run) && !this.#result) {
        const abort = new AbortController();
        run.aborts.push(abort);
        let res, body;
        try {
          res = await fetch(this.#url(), { headers: { Prefer: `wait=${wait}` }, signal: abort.signal });
          body = await res.json().catch(() => null);
        } catch (e) {
          if (this.#current(run)) this.#fail("The price service could not be reached.");
          return;
        }
        if (!this.#current(run)) return;
        // A result that came after a 202 of ours was computed for us, whatever it says.
        const cache = res.headers.get("x-cache") === "HIT" && !run.waited ? "hit" : "miss";
        if (res.status === 202) run.waited = true;
        if (res.status === 200 && body && body.quotes) return this.#finish(body, cache);
        if (res.status === 404 && body && body.type === "/problems/product-not-found") {
          return this.#finish({ status: "not_found", quotes: [], failures: [], best: null }, cache);
        }
        if (![202, 429, 503].includes(res.status)) {
          return this.#fail((body && body.detail) || `The price service answered ${res.status}.`);
        }
        const retry = Math.max(1, Number(res.headers.get("retry-after")) || 1);
        if (res.status !== 202) this.#say(`${(body && body.detail) || "Busy"}; trying again in ${retry} s…`);
        await new Promise((resolve) => run.timers.push(setTimeout(resolve, retry * 1000)));
      }
    }

    #current(run) {
      return this.#run === run && !run.done;
    }

    #giveUp(run) {
      if (this.#current(run) && !this.#result) this.#fail("No answer in time; please try again later.");
    }

    #progress(quote, failure) {
      if (this.#result) return;
      this.#progressSeen = true;
      if (quote) {
        this.#quotes.set(quote.provider, quote);
        if (quote.fx_rate !== undefined && Number(quote.fx_rate) === 1) this.#baseCurrency = quote.currency;
      }
      if (failure) this.#failures.set(failure.provider, failure);
      this.#render(quote ? quote.provider : null);
      const n = this.#quotes.size;
      this.#say(quote
        ? `${quote.provider}: ${this.#money(quote.price, quote.currency)} (${n} ${n === 1 ? "offer" : "offers"} so far)`
        : `${failure.provider} ${reason(failure.reason)}`);
    }

    #finish(comparison, cache) {
      this.#result = comparison;
      this.#release();
      this.#quotes = new Map((comparison.quotes || []).map((q) => [q.provider, q]));
      this.#failures = new Map((comparison.failures || []).map((f) => [f.provider, f]));
      if (comparison.base_currency) this.#baseCurrency = comparison.base_currency;
      this.setAttribute("data-cache", cache);
      this.#render(null);
      const state = STATES.includes(comparison.status) ? comparison.status : "failed";
      this.setAttribute("data-state", state);
      const best = comparison.best;
      this.#say(state === "not_found"
        ? "No source sells this product."
        : best
          ? `Best offer: ${best.provider} at ${this.#money(best.price, best.currency)}.`
          : "No source could give a price.");
      this.#footer(comparison, cache);
    }

    #fail(message) {
      this.#release();
      this.#view.error.textContent = message;
      this.#view.error.hidden = false;
      this.#say(message);
      this.setAttribute("data-state", "failed");
    }

    #say(text) {
      this.#view.status.textContent = text;
    }

    // The `locale` attribute, else the page's lang, if the browser knows it as a locale.
    #locale() {
      for (const tag of [this.getAttribute("locale"), document.documentElement.lang]) {
        if (!tag) continue;
        try {
          return Intl.getCanonicalLocales(tag)[0];
        } catch {
          // "en_US" and the like: try the next, else the browser's own.
        }
      }
      return undefined;
    }

    #money(amount, currency) {
      try {
        return new Intl.NumberFormat(this.#locale(), { style: "currency", currency }).format(Number(amount));
      } catch {
        return `${amount} ${currency}`;
      }
    }

    #build() {
      // One live region for the element's life: a region made anew with its text in place is
      // not announced.
      const status = this.#view?.status ?? el("p", { class: "pc-status", role: "status", "aria-live": "polite" });
      status.textContent = "Comparing prices…";
      const title = el("p", { class: "pc-title" }, "Prices for ", el("span", { class: "pc-id" }, this.getAttribute("product") ?? ""));
      const converted = el("th", { scope: "col", class: "pc-num" }, "Compared in");
      const rows = el("tbody");
      const table = el("table", {},
        el("caption", {}, "Offers, cheapest first"),
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "Source"),
          el("th", { scope: "col", class: "pc-num" }, "Price"),
          converted,
          el("th", { scope: "col", class: "pc-num" }, "Answered in"))),
        rows);
      const failures = el("ul", { class: "pc-failures", "aria-label": "Sources without a price" });
      const error = el("p", { class: "pc-error", role: "alert", hidden: true });
      const foot = el("p", { class: "pc-foot" });
      const root = el("section", { class: "pc", "aria-label": "Price comparison" },
        el("div", { class: "pc-head" }, title, status), table, failures, error, foot);
      this.#view = { status, rows, table, converted, failures, error, foot };
      this.setAttribute("data-state", "loading");
      this.replaceChildren(root);
    }

    #render(arrived) {
      const v = this.#view;
      const quotes = [...this.#quotes.values()].sort(order);
      const best = this.#result
        ? this.#result.best?.provider ?? null
        : quotes.find((q) => q.base_price !== undefined)?.provider ?? null;
      v.converted.textContent = this.#baseCurrency ? `In ${this.#baseCurrency}` : "Compared in";
      v.table.hidden = quotes.length === 0;
      v.rows.replaceChildren(...quotes.map((q) => {
        const isBest = q.provider === best;
        const converted = q.base_price === undefined
          ? el("span", { title: `No exchange rate for ${q.currency}` },
            el("span", { "aria-hidden": "true" }, "—"), el("span", { class: "pc-sr" }, `not compared: no exchange rate for ${q.currency}`))
          : this.#baseCurrency ? this.#money(q.base_price, this.#baseCurrency) : q.base_price;
        return el("tr", {
            "data-provider": q.provider,
            "data-price": q.price,
            "data-currency": q.currency,
            "data-base-price": q.base_price,
            "data-best": isBest,
            class: q.provider === arrived ? "pc-new" : null,
          },
          el("td", {},
            q.url && offerUrl(q.url)
              ? el("a", { href: offerUrl(q.url), "data-offer-url": offerUrl(q.url), rel: "nofollow noopener noreferrer", target: "_blank" }, q.provider)
              : q.provider,
            isBest ? el("span", { class: "pc-badge" }, "Best price") : null),
          el("td", { class: "pc-num" }, this.#money(q.price, q.currency)),
          el("td", { class: "pc-num" }, converted),
          el("td", { class: "pc-num" }, `${q.latency_ms} ms`));
      }));
      const failures = [...this.#failures.values()].sort((a, b) => (a.provider < b.provider ? -1 : 1));
      v.failures.replaceChildren(...failures.map((f) =>
        el("li", { "data-failed-provider": f.provider, "data-reason": f.reason, title: f.detail || null },
          el("span", { class: "pc-provider" }, f.provider), " ", reason(f.reason))));
    }

    #footer(comparison, cache) {
      const parts = [];
      if (cache === "hit") {
        parts.push(el("span", { class: "pc-cache" }, "From cache"));
        const age = comparison.computed_at ? Math.max(0, (Date.now() - Date.parse(comparison.computed_at)) / 1000) : null;
        if (age !== null) parts.push(`, compared ${age < 60 ? `${Math.round(age)} s` : `${Math.round(age / 60)} min`} ago`);
      } else {
        const n = this.#quotes.size + this.#failures.size;
        parts.push(`Compared ${n} ${n === 1 ? "source" : "sources"}`);
      }
      parts.push(` · answer in ${Math.round(performance.now() - this.#started)} ms`);
      if (comparison.expires_at) {
        const until = new Date(comparison.expires_at);
        if (!Number.isNaN(until.getTime())) parts.push(` · prices held until ${until.toLocaleTimeString(this.#locale())}`);
      }
      if (comparison.fx_missing && comparison.fx_missing.length) {
        parts.push(` · not compared (no exchange rate): ${comparison.fx_missing.join(", ")}`);
      }
      this.#view.foot.replaceChildren(...parts);
    }
  }

  adoptStyle();
  customElements.define("price-compare", PriceCompare);
})();
