//! Validated domain types. No I/O here and nothing of ours below it.

mod comparison;
mod fx;
mod money;
mod product_id;

pub use comparison::{Comparison, Failure, FailureReason, MAX_DETAIL, Quote, Status, TtlPolicy};
pub use fx::{InvalidRates, Rates};
pub use money::{Currency, InvalidCurrency};
pub use product_id::{InvalidProductId, MAX_LEN as PRODUCT_ID_MAX_LEN, ProductId};
