//! The OpenAPI 3.1 document, generated from the handlers' annotations and the types they
//! return, served at `GET /openapi.json`. What every route shares is added in one place
//! ([`Shared`]): `X-Request-Id` both ways, and the problem+json answers any route gives (404
//! for an unknown path, 405 with `Allow`, `Cache-Control: no-store` on every error).

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::{Content, Header, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::catalogue::{EntryStatus, Page, PageEntry, Reason, StatusOnly, Unavailable};
use super::events::{EventKind, StreamEvent};
use super::health::{Health, Readiness};
use super::prices::Pending;
use super::problem::Problem;
use crate::domain::{Comparison, Failure, FailureReason, Quote, Status};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pricefront",
        description = "Cache-fronted price comparison: 200 from cache, else 202 while the comparison is computed in the background."
    ),
    paths(
        super::prices::get_price,
        super::catalogue::get_prices,
        super::events::price_events,
        super::health::healthz,
        super::health::readyz,
        openapi_json
    ),
    components(schemas(
        Comparison,
        Quote,
        Failure,
        FailureReason,
        Status,
        Pending,
        Problem,
        Health,
        Readiness,
        Page,
        PageEntry,
        StatusOnly,
        EntryStatus,
        Unavailable,
        Reason,
        StreamEvent,
        EventKind
    )),
    modifiers(&Shared)
)]
pub struct ApiDoc;

/// Adds to every operation what the router gives every route.
struct Shared;

const PROBLEM: &str = "application/problem+json";

impl Modify for Shared {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let text = || RefOr::T(Object::with_type(Type::String).into());
        let header = |description: &str| {
            let mut header = Header::new(text());
            header.description = Some(description.to_owned());
            header
        };
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(PROBLEM, Content::new(Some(Ref::from_schema_name("Problem"))))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.head].into_iter().flatten();
            for operation in operations.collect::<Vec<&mut Operation>>() {
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                parameters.push(RefOr::T(
                    ParameterBuilder::new()
                        .name("x-request-id")
                        .parameter_in(ParameterIn::Header)
                        .required(Required::False)
                        .description(Some(
                            "Names this request in the logs (and, on a miss, the consumer's): kept when 1 to 128 \
                             characters of `A-Za-z0-9-_.:/+=@`, else replaced by one made here",
                        ))
                        .schema(Some(text()))
                        .build(),
                ));
                let responses = &mut operation.responses.responses;
                responses
                    .entry("404".into())
                    .or_insert_with(|| problem("No such route (any path not in this document answers so)").into());
                responses
                    .entry("405".into())
                    .or_insert_with(|| problem("Only GET and HEAD (the `Allow` header says so)").into());
                for (status, response) in responses.iter_mut() {
                    let RefOr::T(response) = response else { continue };
                    response.headers.insert(
                        "x-request-id".into(),
                        RefOr::T(header("The request's id: the one it sent if valid, else one made here")),
                    );
                    if response.content.contains_key(PROBLEM) {
                        response.headers.entry("cache-control".into()).or_insert_with(|| RefOr::T(header("no-store")));
                    }
                    if status == "405" {
                        response.headers.insert("allow".into(), RefOr::T(header("GET,HEAD")));
                    }
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses(
    (status = 200, description = "OpenAPI 3.1 document", body = Object, content_type = "application/json"),
))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
