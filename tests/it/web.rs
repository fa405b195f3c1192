//! The widget's files, the demo page and CORS over real HTTP (the browser's view of them is in
//! `browser.rs`).

use reqwest::header::HeaderMap;

use crate::helpers::env;

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn the_widget_and_the_demo_page_are_served_from_the_binary() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let http = &env.http;

    let page = http.get(format!("{}/", producer.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    let csp = header(&h, "content-security-policy");
    for directive in
        ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]
    {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "no external resource: {html}");
    let versioned: Vec<String> = regex::Regex::new(r#""(/static/[0-9a-f]{16}/[a-z-]+\.(?:js|css|svg))""#)
        .unwrap()
        .captures_iter(&html)
        .map(|c| c[1].to_owned())
        .collect();
    assert_eq!(versioned.len(), 4, "the page names its files by version: {versioned:?}");

    for path in &versioned {
        let res = http.get(format!("{}{path}", producer.base)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(res.headers(), "cache-control"), "public, max-age=31536000, immutable", "{path}");
        assert_eq!(header(res.headers(), "x-content-type-options"), "nosniff");
    }

    // The plain URL a shop embeds: short-lived, revalidated by its tag, readable anywhere.
    let url = format!("{}/static/price-compare.js", producer.base);
    let res = http.get(&url).send().await.unwrap();
    let h = res.headers().clone();
    assert_eq!((res.status().as_u16(), header(&h, "cache-control")), (200, "public, max-age=300"));
    assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&h, "access-control-allow-origin"), "*");
    let script = res.text().await.unwrap();
    assert!(script.contains("customElements.define(\"price-compare\""), "the web component");
    let etag = header(&h, "etag").to_owned();
    assert!(versioned.iter().any(|p| p.contains(etag.trim_matches('"'))), "its tag is its version: {etag}");
    let again = http.get(&url).header("if-none-match", format!("W/{etag}")).send().await.unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let head = http.head(&url).send().await.unwrap();
    assert_eq!((head.status().as_u16(), header(head.headers(), "etag")), (200, etag.as_str()));

    // A page from before a deploy names an older version: the current file, not cached for a year.
    let stale = http.get(format!("{}/static/0123456789abcdef/price-compare.js", producer.base)).send().await.unwrap();
    assert_eq!((stale.status().as_u16(), header(stale.headers(), "cache-control")), (200, "public, max-age=300"));
    assert_eq!(stale.text().await.unwrap(), script);

    for missing in
        ["/static/nothing.js", "/static/0123456789abcdef/nothing.js", "/static/%2e%2e/Cargo.toml", "/static/x/y/z"]
    {
        let res = http.get(format!("{}{missing}", producer.base)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{missing}");
        assert_eq!(header(res.headers(), "content-type"), "application/problem+json", "{missing}");
    }
}

#[tokio::test]
async fn demo_page_false_turns_the_page_off_but_not_the_widget() {
    let env = env().set("producer", "demo_page", "false").start().await;
    let producer = env.spawn_producer().await;
    let page = env.http.get(format!("{}/", producer.base)).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert_eq!(header(page.headers(), "content-type"), "application/problem+json");
    let widget = env.http.get(format!("{}/static/price-compare.js", producer.base)).send().await.unwrap();
    assert_eq!(widget.status(), 200);
}

#[tokio::test]
async fn the_api_is_readable_from_the_configured_origins_only() {
    let shop = "http://shop.example:3000";
    let env = env().set("producer", "cors_allow_origins", &format!("[{shop:?}]")).start().await;
    let producer = env.spawn_producer().await;
    let product = env.product("cors");
    let url = format!("{}/v1/prices/{product}", producer.base);
    let http = &env.http;

    // The widget's fallback sends Prefer: a preflight first.
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", shop)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "prefer")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(header(h, "access-control-allow-origin"), shop);
    assert!(header(h, "access-control-allow-headers").contains("prefer"), "{h:?}");
    assert!(header(h, "access-control-allow-methods").contains("GET"), "{h:?}");

    // Every API route answers its preflight, the stream's (a reconnect sends Last-Event-ID)
    // and a page's (Prefer) included.
    for (path, asks) in [("/events", "last-event-id"), ("", "if-none-match"), ("?ids=a,b", "prefer")] {
        let target =
            if path.starts_with('?') { format!("{}/v1/prices{path}", producer.base) } else { format!("{url}{path}") };
        let preflight = http
            .request(reqwest::Method::OPTIONS, &target)
            .header("origin", shop)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", asks)
            .send()
            .await
            .unwrap();
        assert!(preflight.status().is_success(), "{target}: {}", preflight.status());
        assert_eq!(header(preflight.headers(), "access-control-allow-origin"), shop, "{target}");
        assert!(header(preflight.headers(), "access-control-allow-headers").contains(asks), "{target}");
    }

    let res = http.get(&url).header("origin", shop).send().await.unwrap();
    assert_eq!(res.status(), 202);
    let h = res.headers();
    assert_eq!(header(h, "access-control-allow-origin"), shop);
    let exposed = header(h, "access-control-expose-headers");
    for name in ["x-cache", "retry-after", "etag"] {
        assert!(exposed.contains(name), "{name} readable: {exposed}");
    }
    let vary: Vec<String> = h.get_all("vary").iter().map(|v| v.to_str().unwrap().to_ascii_lowercase()).collect();
    assert!(vary.iter().any(|v| v.contains("origin")) && vary.iter().any(|v| v.contains("prefer")), "{vary:?}");

    // The event stream too; another origin gets no grant.
    let events = http.get(format!("{url}/events")).header("origin", shop).send().await.unwrap();
    assert_eq!(header(events.headers(), "access-control-allow-origin"), shop);
    drop(events);
    let other = http.get(&url).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(header(other.headers(), "access-control-allow-origin"), "");
    // Operations are not part of the grant.
    let ready = http.get(format!("{}/readyz", producer.base)).header("origin", shop).send().await.unwrap();
    assert_eq!(header(ready.headers(), "access-control-allow-origin"), "");
}

#[tokio::test]
async fn by_default_no_origin_may_read_the_api() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let url = format!("{}/v1/prices/{}", producer.base, env.product("no-cors"));
    let res = env.http.get(&url).header("origin", "http://shop.example").send().await.unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(header(res.headers(), "access-control-allow-origin"), "");
}
