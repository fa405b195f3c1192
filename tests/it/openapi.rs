//! `/openapi.json` describes what the API really answers: real responses validate against it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{env, spawn_producer};

/// What is wrong with `body` per the schema the document gives for `path`, `status`, `content_type`.
fn errors(doc: &Value, path: &str, status: u16, content_type: &str, body: &Value) -> Vec<String> {
    let response = &doc["paths"][path]["get"]["responses"][status.to_string()];
    let mut schema = response["content"][content_type]["schema"].clone();
    assert!(schema.is_object(), "no {content_type} schema for {path} {status}");
    schema["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator.iter_errors(body).map(|e| e.to_string()).collect()
}

fn validate(doc: &Value, path: &str, status: u16, content_type: &str, body: &Value) {
    let errors = errors(doc, path, status, content_type, body);
    assert!(errors.is_empty(), "{path} {status}: {errors:?}\n{body}");
}

/// What is wrong with `value` as the component schema `name`.
fn schema_errors(doc: &Value, name: &str, value: &Value) -> Vec<String> {
    let schema = json!({"$ref": format!("#/components/schemas/{name}"), "components": doc["components"].clone()});
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator.iter_errors(value).map(|e| e.to_string()).collect()
}

/// Reads a whole event stream and checks each event's data against the schema the document
/// names for it; returns the event names.
async fn validate_events(doc: &Value, http: &reqwest::Client, url: &str) -> Vec<String> {
    let path = "/v1/prices/{product_id}/events";
    let mut stream = crate::sse::SseStream::open(http, url, &[]).await;
    assert_eq!(stream.status, 200);
    assert!(doc["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    for header in documented_headers(doc, path, 200) {
        assert!(stream.headers.contains_key(header.as_str()), "the event stream lacks documented header {header}");
    }
    let events = stream.rest().await;
    for event in &events {
        let schema = match event.event.as_str() {
            "quote" => "Quote",
            "failure" => "Failure",
            "result" => "Comparison",
            other => panic!("undocumented event {other}"),
        };
        let errors = schema_errors(doc, schema, &event.json());
        assert!(errors.is_empty(), "{} event: {errors:?}\n{}", event.event, event.data);
    }
    events.into_iter().map(|e| e.event).collect()
}

fn documented_headers(doc: &Value, path: &str, status: u16) -> Vec<String> {
    doc["paths"][path]["get"]["responses"][status.to_string()]["headers"]
        .as_object()
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default()
}

async fn call(http: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let res = http.get(url).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_validate_against_the_openapi_document() {
    let env = env().start().await;
    let producer = env.spawn_producer().await;
    let consumer = env.spawn_consumer();
    let doc: Value =
        env.http.get(format!("{}/openapi.json", producer.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let prices = "/v1/prices/{product_id}";
    for path in [prices, "/v1/prices", "/v1/prices/{product_id}/events", "/healthz", "/readyz", "/openapi.json"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} is documented");
    }
    for status in ["304", "404", "429"] {
        assert!(doc["paths"][prices]["get"]["responses"][status].is_object(), "{status} is documented");
    }
    assert!(doc["paths"][prices]["head"].is_object(), "HEAD is documented");
    let documented = documented_headers(&doc, prices, 304);
    for header in ["etag", "cache-control", "age", "vary"] {
        assert!(documented.iter().any(|h| h == header), "304 documents {header}: {documented:?}");
    }
    let enum_of = |schema: &str| doc["components"]["schemas"][schema]["enum"].clone();
    assert!(enum_of("Status").as_array().unwrap().contains(&json!("not_found")), "{}", enum_of("Status"));
    assert!(enum_of("FailureReason").as_array().unwrap().contains(&json!("not_found")));

    let product = env.product("doc");
    let url = format!("{}/v1/prices/{product}", producer.base);
    let (status, headers, body) = call(&env.http, &url).await;
    assert_eq!(status, 202);
    validate(&doc, prices, 202, "application/json", &body);
    // `Preference-Applied` only answers a `Prefer: wait`: checked on such a request below.
    let always = |status| documented_headers(&doc, prices, status).into_iter().filter(|h| h != "preference-applied");
    for header in always(202) {
        assert!(headers.contains_key(header.as_str()), "202 lacks documented header {header}");
    }
    let res = env.http.get(&url).header("prefer", "wait=1").send().await.unwrap();
    // 200 if the result came within the second, else 202: both document what they carry.
    let waited = res.status().as_u16();
    assert!([200, 202].contains(&waited), "{waited}");
    for header in documented_headers(&doc, prices, waited) {
        assert!(
            res.headers().contains_key(header.as_str()),
            "{waited} to Prefer: wait lacks documented header {header}"
        );
    }

    let pending = body;
    env.wait_result(&product, Duration::from_secs(30)).await;
    let (status, headers, body) = call(&env.http, &url).await;
    assert_eq!(status, 200);
    validate(&doc, prices, 200, "application/json", &body);
    // The check has teeth: the wrong body, or a float price, does not validate.
    assert!(!errors(&doc, prices, 200, "application/json", &pending).is_empty());
    let mut float_price = body.clone();
    float_price["quotes"][0]["price"] = json!(12.5);
    assert!(!errors(&doc, prices, 200, "application/json", &float_price).is_empty());
    for header in always(200) {
        assert!(headers.contains_key(header.as_str()), "200 lacks documented header {header}");
    }

    // A catalogue page: a cached entry, a pending one; then every entry final; a bad page.
    let page = "/v1/prices";
    let page_url = format!("{}{page}?ids={product},{}", producer.base, env.product("doc-page"));
    let (status, headers, page_body) = call(&env.http, &page_url).await;
    assert_eq!(status, 200);
    validate(&doc, page, 200, "application/json", &page_body);
    for header in documented_headers(&doc, page, 200).into_iter().filter(|h| h != "preference-applied") {
        assert!(headers.contains_key(header.as_str()), "a pending page lacks documented header {header}");
    }
    let res = env.http.get(&page_url).header("prefer", "wait=10").send().await.unwrap();
    assert!(res.headers().contains_key("preference-applied"));
    let final_page: Value = res.json().await.unwrap();
    validate(&doc, page, 200, "application/json", &final_page);
    let mut float_entry = final_page.clone();
    float_entry["results"][&product]["quotes"][0]["price"] = json!(12.5);
    assert!(!errors(&doc, page, 200, "application/json", &float_entry).is_empty(), "the page check has teeth");
    let (status, _, body) = call(&env.http, &format!("{}{page}?ids=ok,-bad", producer.base)).await;
    assert_eq!(status, 400);
    validate(&doc, page, 400, "application/problem+json", &body);

    // The event stream: each event's data is what the document says (quotes, then the result).
    let watched = format!("{}/v1/prices/{}/events", producer.base, env.product("doc-events"));
    assert_eq!(validate_events(&doc, &env.http, &watched).await, ["quote", "quote", "quote", "result"]);
    assert!(!schema_errors(&doc, "Quote", &pending).is_empty(), "the event check has teeth");

    // A failed comparison (null best, failures only) validates too.
    for p in ["alpha", "beta", "gamma"] {
        env.set_faults(p, json!({"error_rate": 1.0})).await;
    }
    let watched = format!("{}/v1/prices/{}/events", producer.base, env.product("doc-events-failed"));
    assert_eq!(validate_events(&doc, &env.http, &watched).await, ["failure", "failure", "failure", "result"]);
    let failed = env.product("doc-failed");
    let failed_url = format!("{}/v1/prices/{failed}", producer.base);
    call(&env.http, &failed_url).await;
    env.wait_result(&failed, Duration::from_secs(30)).await;
    let (status, _, body) = call(&env.http, &failed_url).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("failed")));
    validate(&doc, prices, 200, "application/json", &body);

    let (status, _, body) = call(&env.http, &format!("{}/v1/prices/..%2Fetc", producer.base)).await;
    assert_eq!(status, 400);
    validate(&doc, prices, 400, "application/problem+json", &body);
    let res = env.http.post(&url).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let (headers, body) = (res.headers().clone(), res.json().await.unwrap());
    validate(&doc, prices, 405, "application/problem+json", &body);
    let documented = documented_headers(&doc, prices, 405);
    for header in ["allow", "cache-control", "x-request-id"] {
        assert!(documented.iter().any(|h| h == header), "405 documents {header}: {documented:?}");
    }
    for header in documented {
        assert!(headers.contains_key(header.as_str()), "405 lacks documented header {header}");
    }
    // Every route: its own 404 and 405 (any unknown path, any other method), and X-Request-Id
    // on every answer, sent and received.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("404") && responses.contains_key("405"), "{method} {path}");
            for (status, response) in responses {
                assert!(response["headers"]["x-request-id"].is_object(), "{method} {path} {status}");
            }
            let parameters = operation["parameters"].as_array().unwrap();
            assert!(parameters.iter().any(|p| p["name"] == "x-request-id" && p["in"] == "header"), "{method} {path}");
        }
    }
    let res = env.http.get(format!("{}/no/such/route", producer.base)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let headers = res.headers().clone();
    validate(&doc, "/healthz", 404, "application/problem+json", &res.json().await.unwrap());
    for header in documented_headers(&doc, "/healthz", 404) {
        assert!(headers.contains_key(header.as_str()), "an unknown path's 404 lacks documented header {header}");
    }

    let (status, _, body) = call(&env.http, &format!("{}/healthz", producer.base)).await;
    validate(&doc, "/healthz", status, "application/json", &body);
    let (status, _, body) = call(&env.http, &format!("{}/readyz", producer.base)).await;
    validate(&doc, "/readyz", status, "application/json", &body);

    // 503 from a producer whose broker is gone.
    let mut settings = env.settings.clone();
    settings.kafka.brokers = format!("127.0.0.1:{}", crate::helpers::free_port());
    settings.kafka.publish_timeout = Duration::from_millis(300);
    let broken = spawn_producer(&settings).await;
    let (status, headers, body) =
        call(&env.http, &format!("{}/v1/prices/{}", broken.base, env.product("doc-503"))).await;
    assert_eq!(status, 503);
    validate(&doc, prices, 503, "application/problem+json", &body);
    for header in documented_headers(&doc, prices, 503) {
        assert!(headers.contains_key(header.as_str()), "503 lacks documented header {header}");
    }
    let body =
        crate::helpers::wait_for("the broken producer to say it is not ready", Duration::from_secs(20), || async {
            match call(&env.http, &format!("{}/readyz", broken.base)).await {
                (503, _, body) => Ok(body),
                (status, _, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
    validate(&doc, "/readyz", 503, "application/json", &body);

    broken.stop().await;
    consumer.stop().await;
    producer.stop().await;
}
